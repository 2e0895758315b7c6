"""The installed versions of what bild-align leans on, read from the package metadata (no
import of torch): `bild-align --version` prints them, and `make install` shows what it
installed.

    installed_versions()   # {"torch": "2.13.0+cpu", "transformers": "5.25.0", ...}
"""

from __future__ import annotations

from importlib import metadata

KEY_DISTRIBUTIONS = (
    "torch", "transformers", "tokenizers", "huggingface_hub", "datasets", "accelerate",
    "safetensors", "sentencepiece", "sacrebleu", "numpy",
)  # fmt: skip


def installed_versions() -> dict[str, str]:
    """Each key distribution's installed version, or "missing"."""
    versions = {}
    for name in KEY_DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions
