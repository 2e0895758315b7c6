"""Big Little Decoder (BiLD) as a transformers `custom_generate` method.

The decoder lives in the bild-align package (custom_generate/requirements.txt); this file only
hands transformers its entry point. See README.md for the arguments.
"""

from bild_align.models.hf_generate import generate_bild as generate

__all__ = ["generate"]
