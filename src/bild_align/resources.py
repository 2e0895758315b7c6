"""Files shipped with bild-align beside the code: the recipes and the demo pair.

    shipped("recipes/demo-align.yaml")   # a Path, or None where it is not installed

In a checkout (and an editable install) they are the repository's own `recipes/` and `data/`;
`pip install .` copies them to PREFIX/share/bild-align (setup.cfg's data_files), where PREFIX
is the environment the package was installed into.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]


def _roots() -> Iterator[Path]:
    if (CHECKOUT / "setup.cfg").is_file():
        yield CHECKOUT
    package = Path(__file__).resolve()
    prefixes = [Path(sys.prefix), Path(sysconfig.get_path("data"))]
    if len(package.parents) > 4:  # PREFIX/lib/pythonX.Y/site-packages/bild_align/resources.py
        prefixes.append(package.parents[4])
    for prefix in prefixes:
        yield prefix / "share" / "bild-align"


def shipped(relative: str) -> Path | None:
    """The shipped file or folder at `relative` (e.g. "data/demo"), or None."""
    for root in _roots():
        candidate = root / relative
        if candidate.exists():
            return candidate
    return None


# The demo pair (BILD_DEMO_DIR overrides it) and the recipes, where `make demo-models` and the
# demo stage find them.
DEMO_DIR = Path(
    os.environ.get("BILD_DEMO_DIR") or shipped("data/demo") or CHECKOUT / "data" / "demo"
)
RECIPES_DIR = shipped("recipes") or CHECKOUT / "recipes"
# the decoder-only demo pair (`bild-align demo --pair causal`, `make demo-models-causal`)
DEMO_CAUSAL_DIR = Path(
    os.environ.get("BILD_DEMO_CAUSAL_DIR")
    or shipped("data/demo-causal")
    or CHECKOUT / "data" / "demo-causal"
)
# the custom_generate repository folder (`bild_align.CUSTOM_GENERATE`, `export-generate`)
GENERATE_REPO = Path(__file__).resolve().with_name("generate_repo")
