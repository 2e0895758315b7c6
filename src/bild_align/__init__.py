"""bild-align: Big Little Decoder inference, and alignment of the small model to the large one.

from bild_align import bild_generate, load_policy
out = bild_generate(small, large, input_ids, fallback_threshold=0.6, rollback_threshold=2.0)
out = bild_generate(small, large, input_ids, policy=load_policy(small_dir))  # `tune --save`d
out = large.generate(**inputs, assistant_model=small, custom_generate=generate_bild)  # hf_generate
use_drafter(drafter, large)   # a `bild-align drafter` folder: one encoder pass, its kept tokens

The public names load on first use (PEP 562), so that `import bild_align.cli` and every
`bild-align ... --help` start without importing torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "BiLDPolicy": "bild_align.core.policies",
    "CUSTOM_GENERATE": "bild_align.models.hf_generate",
    "generate_bild": "bild_align.models.hf_generate",
    "load_policy": "bild_align.models.saved_policy",
    "load_fallback_head": "bild_align.models.fallback_heads",
    "BiLDOutput": "bild_align.core.stats",
    "BiLDStats": "bild_align.core.stats",
    "autoregressive_generate": "bild_align.core.decoding",
    "bild_generate": "bild_align.core.decoding",
    "speculative_generate": "bild_align.core.decoding",
    "use_drafter": "bild_align.models.loading",
}
__all__ = [
    "BiLDOutput",
    "BiLDPolicy",
    "load_fallback_head",
    "load_policy",
    "BiLDStats",
    "CUSTOM_GENERATE",
    "autoregressive_generate",
    "generate_bild",
    "bild_generate",
    "speculative_generate",
    "use_drafter",
    "__version__",
]

if TYPE_CHECKING:
    from bild_align.core.decoding import (
        autoregressive_generate,
        bild_generate,
        speculative_generate,
    )
    from bild_align.core.policies import BiLDPolicy
    from bild_align.core.stats import BiLDOutput, BiLDStats
    from bild_align.models.fallback_heads import load_fallback_head
    from bild_align.models.hf_generate import CUSTOM_GENERATE, generate_bild
    from bild_align.models.loading import use_drafter
    from bild_align.models.saved_policy import load_policy


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'bild_align' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
