"""bild-align: Big Little Decoder inference, and alignment of the small model to the large one.

from bild_align import bild_generate
out = bild_generate(small, large, input_ids, fallback_threshold=0.6, rollback_threshold=2.0)
"""

from bild_align.decoding import (
    BiLDOutput,
    BiLDStats,
    autoregressive_generate,
    bild_generate,
    speculative_generate,
)

__version__ = "0.1.0"
__all__ = [
    "BiLDOutput",
    "BiLDStats",
    "autoregressive_generate",
    "bild_generate",
    "speculative_generate",
    "__version__",
]
