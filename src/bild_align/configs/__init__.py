"""The stages' settings: one dataclass per command, one home for every default and its help.

    from bild_align.configs import EvalConfig, check
    config = EvalConfig(small="S", large="L", task="iwslt2017-de-en", rb=(4.0,))
    check(config)                                      # UserError naming the first problem
    run_eval(config)                                   # bild_align.stages.evaluate

Every config has `problems()` (what lies outside its range, in words); `check` raises the
first. The CLI generates each subcommand's options from these fields (`bild_align.options`),
and `build()` (bild_align.recipes) checks values typed on the command line or read from a
recipe against them. Light on purpose: nothing here imports torch.
"""

from bild_align.configs.bench import BenchConfig
from bild_align.configs.calibrate import CalibrateConfig
from bild_align.configs.chat import CHAT_LIMITS, ChatConfig, ChatSettings
from bild_align.configs.common import (
    BASELINES,
    CHAT_OUTPUTS,
    DEMO_PAIRS,
    DIVERGENCES,
    DTYPES,
    MIN_DEMO_ROWS,
    OBJECTIVES,
    Config,
    check,
)
from bild_align.configs.demo import DemoConfig
from bild_align.configs.drafter import DrafterConfig
from bild_align.configs.evaluate import EvalConfig, TuneConfig
from bild_align.configs.publish import ExportGenerateConfig, PushConfig
from bild_align.configs.train import RecipeEval, TrainRecipe

__all__ = [
    "BASELINES",
    "CHAT_LIMITS",
    "CHAT_OUTPUTS",
    "DEMO_PAIRS",
    "DIVERGENCES",
    "DTYPES",
    "MIN_DEMO_ROWS",
    "OBJECTIVES",
    "BenchConfig",
    "CalibrateConfig",
    "ChatConfig",
    "ChatSettings",
    "Config",
    "DemoConfig",
    "DrafterConfig",
    "EvalConfig",
    "ExportGenerateConfig",
    "PushConfig",
    "RecipeEval",
    "TrainRecipe",
    "TuneConfig",
    "check",
]
