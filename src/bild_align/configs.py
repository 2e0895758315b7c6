"""Every command's settings in one import (each dataclass lives in pipeline/COMMAND/config.py,
beside its command): one home for every default and its help.

    from bild_align.configs import EvalConfig, check
    config = EvalConfig(small="S", large="L", task="iwslt2017-de-en", rollback_threshold=(4.0,))
    check(config)                                      # UserError naming the first problem
    run_eval(config)                                   # bild_align.pipeline.eval.command

Every config has `problems()` (what lies outside its range, in words); `check` raises the
first. The CLI generates each subcommand's options from these fields (`bild_align.options`),
and `build()` (bild_align.recipes) checks values typed on the command line or read from a
recipe against them. Light on purpose: nothing here imports torch.
"""

from bild_align.pipeline.base_config import (
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
from bild_align.pipeline.bench.config import BenchConfig
from bild_align.pipeline.calibrate.config import CalibrateConfig
from bild_align.pipeline.chat.config import CHAT_LIMITS, ChatConfig, ChatSettings
from bild_align.pipeline.demo.config import DemoConfig
from bild_align.pipeline.drafter.config import DrafterConfig
from bild_align.pipeline.eval.config import EvalConfig
from bild_align.pipeline.publish.config import ExportGenerateConfig, PushConfig
from bild_align.pipeline.train.config import RecipeEval, TrainRecipe, TrainRun
from bild_align.pipeline.tune.config import TuneConfig

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
    "TrainRun",
    "TuneConfig",
    "check",
]
