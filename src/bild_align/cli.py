"""The `bild-align` command.

    bild-align --help
    bild-align calibrate --large L --task T --output DIR     # stage one (calibrate.py)
    bild-align train --recipe recipes/iwslt.yaml              # stage two (train.py)
    bild-align eval --small S --large L --task T --rb 2 --fb 0.6   # stage three (evaluate.py)
    bild-align tune --small S --large L --task T --max-drop 1 --save   # tune.py
    bild-align chat | demo | bench                            # chat.py, demo.py, benchmark.py
    bild-align export-generate DIR | push DIR --repo R        # publish.py

Only parsing lives here: `COMMANDS` lists the subcommands, each with its handler; a
subcommand's options are generated from its config dataclass
(bild_align.configs; defaults and help live on the fields), the values typed are checked into a
config (defaults < recipe < command line), and one stage module runs it. Heavy imports (torch,
transformers) happen inside the handlers so that `--help` is instant. A user mistake prints
one line on stderr and exits with code 2; success exits 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import sys
from argparse import ArgumentParser, ArgumentTypeError, Namespace
from collections.abc import Callable, Sequence

from bild_align.configs import (
    BenchConfig,
    CalibrateConfig,
    ChatConfig,
    ChatSettings,
    DemoConfig,
    DrafterConfig,
    EvalConfig,
    ExportGenerateConfig,
    PushConfig,
    TrainRecipe,
    TrainRun,
    TuneConfig,
)
from bild_align.defaults import fill_defaults
from bild_align.errors import UserError
from bild_align.options import add_options, given_options
from bild_align.recipes import (
    COMMAND_LINE,
    build,
    eval_settings,
    load_recipe,
)
from bild_align.reporting import reporting

# errors of the machine, not of the program (a folder without write permission, a full disk):
# one line, not a traceback, wherever in a run they arise
_ENVIRONMENT_ERRORS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.ENAMETOOLONG, errno.EDQUOT}
)


class _OneLineParser(ArgumentParser):
    """A mistake on the command line is a user mistake like any other (one line, exit 2),
    naming the option, not a page of usage."""

    def error(self, message: str):
        command = self.prog.removeprefix("bild-align").strip()
        where = f"bild-align {command} --help" if command else "bild-align --help"
        raise UserError(f"{message} ({where} lists the options)")


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, description, handler, the config whose fields
    become its options, and a function adding the options that are not config fields."""

    name: str
    help: str
    about: str
    run: Callable[[Namespace], None]
    config: type | None = None
    arguments: Callable[[ArgumentParser], None] | None = None


def _run_calibrate(args: Namespace) -> None:
    from bild_align.pipeline.calibrate.command import run_calibration

    values = fill_defaults(given_options(args), "large", "task")
    output = run_calibration(build(CalibrateConfig, values, COMMAND_LINE))
    print(f"calibration dataset: {output}")


def _run_train(args: Namespace) -> None:
    from bild_align.pipeline.train.command import run_fallback_head, run_training

    given = given_options(args)
    run_keys = {f.name for f in dataclasses.fields(TrainRun)}
    run = build(TrainRun, {key: given.pop(key) for key in run_keys & set(given)}, COMMAND_LINE)
    recipe = load_recipe(args.recipe, given)
    if run.fallback_head_only:
        run_fallback_head(recipe)
        return
    run_training(recipe, resume=run.resume, push_to_hub=run.push_to_hub, private=run.private)


def _run_eval(args: Namespace) -> int | None:
    from bild_align.pipeline.eval.command import run_eval
    from bild_align.pipeline.eval.report import format_results

    given = given_options(args)
    values = eval_settings(args.recipe, sweep=given.get("sweep", False)) if args.recipe else {}
    values = fill_defaults({**values, **given}, "small", "large", "task")
    thresholds = {"rollback_threshold", "fallback_threshold", "max_small_steps", "fallback_rule"}
    thresholds |= {"sweep", "reference_compat"}
    values.setdefault("saved_policy", not thresholds & set(values))
    config = build(EvalConfig, values, COMMAND_LINE)
    results = run_eval(config)
    print(format_results(results))
    print(f"results written to {config.output}")
    if results.get("failed_methods"):
        names = ", ".join(failed["method"] for failed in results["failed_methods"])
        print(
            f"bild-align: error: {names} failed (see above); the rest is written", file=sys.stderr
        )
        return 1
    return None


def _run_drafter(args: Namespace) -> None:
    from bild_align.pipeline.drafter.command import run_drafter

    values = given_options(args)
    result = run_drafter(build(DrafterConfig, values, COMMAND_LINE))
    print(
        f"drafter written to {result['output']}: decoder layers {result['layers']} "
        f"({result['decoder_layers']}), {result['parameters']:,} parameters "
        f"(the large model: {result['large_parameters']:,}), sharing its {result['shares']}"
        + (
            ""
            if result["kept_tokens"] is None
            else f"; its output layer scores {result['kept_tokens']:,} tokens"
        )
    )


def _run_tune(args: Namespace) -> None:
    from bild_align.pipeline.tune.command import run_tune
    from bild_align.pipeline.tune.report import format_summary

    values = fill_defaults(given_options(args), "small", "large", "task")
    config = build(TuneConfig, values, COMMAND_LINE)
    results = run_tune(config)
    print(format_summary(results))
    print(f"results written to {config.output}")


def _run_chat(args: Namespace) -> None:
    from bild_align.pipeline.chat.command import run_chat

    given = given_options(args)
    setting_names = {f.name for f in dataclasses.fields(ChatSettings)}
    settings = build(
        ChatSettings, {k: v for k, v in given.items() if k in setting_names}, COMMAND_LINE
    )
    values = {k: v for k, v in given.items() if k not in setting_names}
    config = build(ChatConfig, fill_defaults(values, "small", "large"), COMMAND_LINE)
    run_chat(config, settings, given=set(given) & setting_names)


def _run_demo(args: Namespace) -> None:
    from bild_align.pipeline.demo.command import run_demo

    run_demo(build(DemoConfig, given_options(args), COMMAND_LINE))


def _run_bench(args: Namespace) -> None:
    from bild_align.pipeline.bench.command import run_benchmark
    from bild_align.pipeline.bench.report import format_table

    config = build(BenchConfig, given_options(args), COMMAND_LINE)
    results = run_benchmark(config)
    print(format_table(results))
    print(f"\nresults written to {config.output}")


def _run_export_generate(args: Namespace) -> None:
    from bild_align.pipeline.publish.command import run_export_generate

    values = {**given_options(args), "output": args.output}
    output = run_export_generate(build(ExportGenerateConfig, values, COMMAND_LINE))
    print(f"custom_generate folder: {output}")


def _run_push(args: Namespace) -> None:
    from bild_align.pipeline.publish.command import run_push

    values = {**given_options(args), "model_dir": args.model_dir}
    print(f"pushed to {run_push(build(PushConfig, values, COMMAND_LINE))}")


def _train_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--recipe", help="YAML recipe, e.g. recipes/iwslt.yaml")
    add_options(parser, TrainRun)
    add_options(
        parser.add_argument_group("recipe keys (override the recipe)"),
        TrainRecipe,
        over_recipe=True,
    )


def _eval_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "--recipe",
        help="an eval recipe (YAML with any of the keys below, e.g. small, large, task, "
        "rollback_threshold, fallback_threshold, sweep), or a training recipe, which supplies "
        "--small (its output_dir), --large, --task, and from its eval: section --split and "
        "the thresholds (rollback_threshold / fallback_threshold, or the sweep_ grids with "
        "--sweep); options given here win",
    )


def _chat_arguments(parser: ArgumentParser) -> None:
    add_options(parser, ChatConfig)
    add_options(
        parser.add_argument_group("settings (the console's /commands change them)"), ChatSettings
    )


def _export_generate_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("output", metavar="DIR", help="the folder to write (new or empty)")


def _push_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the aligned model's folder")


COMMANDS = [
    Command(
        "calibrate",
        "decode a benchmark's inputs with the large model into a calibration dataset",
        "Greedy-decode every input of a benchmark split with the large model and save "
        "(source, large-model output, reference) as a dataset with a dataset card: "
        "OUTPUT/data/*.parquet and OUTPUT/README.md (datasets.load_dataset(OUTPUT) reads "
        "it). Inputs are batched by length; each output equals unbatched greedy decoding. "
        "Interrupted runs resume: run the same command again. Under `accelerate launch` "
        "the inputs are split across processes.",
        _run_calibrate,
        CalibrateConfig,
    ),
    Command(
        "train",
        "align the small model: fine-tune it on a calibration dataset (Adafactor)",
        "Fine-tune the small model on the large model's outputs (a `bild-align calibrate` "
        "dataset) with transformers' Seq2SeqTrainer and Adafactor at a constant learning "
        "rate. Settings come from the YAML recipe; every recipe key can be overridden on "
        "the command line (--learning-rate 1e-4, --max-steps 100, ...). Checkpoints "
        "(safetensors) keep the best and the last; --resume continues from the last. "
        "Under `accelerate launch` it trains on several processes.",
        _run_train,
        arguments=_train_arguments,
    ),
    Command(
        "eval",
        "measure a small/large pair with BiLD beside the baselines; sweep thresholds",
        "Run the large model alone, the chosen baselines (small alone, transformers' "
        "assisted generation) and BiLD on the same examples, one input at a time, after a "
        "warm-up, interleaved per example, timing generation only. Prints quality (the "
        "task's metric with its signature), latency, speedup over the large model and "
        "BiLD's statistics, and writes them with the full configuration to --output. "
        "With --sweep, every (rb, fb) pair of the lists is run and a CSV, the Pareto front "
        "and a PNG plot are written beside --output.",
        _run_eval,
        EvalConfig,
        arguments=_eval_arguments,
    ),
    Command(
        "tune",
        "find the fastest BiLD setting within a quality budget (rb, fb, steps, fallback rule)",
        "Decode a held-out split (default: validation) with the large model, the small model "
        "and BiLD over a coarse grid of fallback rules and thresholds, refine around the "
        "fastest settings within the budget, model each setting's batch-1 time from its "
        "exact decision counts and costs timed on this machine, and judge its quality "
        "against the large model on the same examples by paired bootstrap. Writes the "
        "Pareto front, the chosen setting and a plot; --save stores the choice beside the "
        "small model for eval and chat. Exits 2 (after writing the front) when no setting "
        "meets the budget.",
        _run_tune,
        TuneConfig,
    ),
    Command(
        "chat",
        "interactive console: BiLD beside large, small and speculative decoding",
        "Type an input and see BiLD's output beside the large model's, the small model's "
        "and speculative decoding's, each with tokens/s, time and decoder statistics; "
        "tokens kept from the small model are green. Commands (/help) change thresholds, "
        "gamma, sampling, length and which outputs are shown. Reads standard input, so it "
        "can be scripted: `printf 'Hallo Welt\\n' | bild-align chat`.",
        _run_chat,
        arguments=_chat_arguments,
    ),
    Command(
        "demo",
        "the whole pipeline, offline, on the shipped demo pair and gettext-de-en",
        "calibrate (the demo's large model over gettext-de-en's train split), train (align "
        "the demo's small model on it), eval (large alone, small alone, assisted "
        "generation, BiLD with the unaligned and the aligned small model, and a threshold "
        "sweep with its Pareto plot), then one summary table. Steps already done are "
        "reused when run again.",
        _run_demo,
        DemoConfig,
    ),
    Command(
        "drafter",
        "make a small model from the large one: its encoder (or embeddings) and a few layers",
        "Write a drafter of the large model into --output: an ordinary model folder that the "
        "Auto classes load. Encoder-decoder models (T5/mT5, BART family): the large model's "
        "encoder, embeddings and output layer, and --layers of its decoder layers; decoder-only "
        "models (Llama family): --layers of its layers with its embeddings, final norm and "
        "output layer. Align it with `bild-align train --small-model DIR` (the shared encoder "
        "stays frozen); paired with its large model, every decoder runs the encoder once per "
        "input.",
        _run_drafter,
        DrafterConfig,
    ),
    Command(
        "bench",
        "time the decoder against large-only, small-only and assisted generation",
        "Decoder micro-benchmark on pairs built in code (no downloads): the large model is "
        "the small one plus near-identity layers, so its depth ratio mimics the real pairs "
        "and the agreement is set by --eps and measured. Times large-only and small-only "
        "greedy generate, transformers' assisted generation, BiLD in exact mode (rb=0) and "
        "BiLD at the default thresholds, interleaved on the same inputs; tuned methods run at "
        "their fastest setting. Prints a table and writes a JSON file with the configuration.",
        _run_bench,
        BenchConfig,
    ),
    Command(
        "export-generate",
        "write BiLD as a transformers custom_generate folder (uploadable as a Hub repository)",
        "Write DIR/custom_generate/generate.py, its requirements.txt and a README card: "
        "`large.generate(**inputs, assistant_model=small, custom_generate=DIR, "
        "trust_remote_code=True, rollback_threshold=2, fallback_threshold=0.6)` then runs "
        "BiLD. With --push-to-hub REPO the folder is uploaded, and custom_generate=REPO "
        "works wherever bild-align is installed.",
        _run_export_generate,
        ExportGenerateConfig,
        arguments=_export_generate_arguments,
    ),
    Command(
        "push",
        "upload an aligned model with its model card to the Hugging Face Hub",
        "Render MODEL_DIR/README.md from what train (and tune --save) recorded in the folder "
        "(base model and revision, large model, calibration data, recipe, steps and time, "
        "held-out alignment measures, the tuned BiLD setting with its measured quality and "
        "speedup) and upload it with the model, tokenizer, generation config, fallback head "
        "and tuned policy; checkpoints stay local.",
        _run_push,
        PushConfig,
        arguments=_push_arguments,
    ),
]


def build_parser() -> ArgumentParser:
    from bild_align import __version__

    parser = _OneLineParser(
        prog="bild-align",
        description="Big Little Decoder (BiLD) inference, and alignment of the small model to "
        "the large one.",
    )
    from bild_align.versions import installed_versions

    libraries = ", ".join(f"{name} {version}" for name, version in installed_versions().items())
    parser.add_argument(
        "--version", action="version", version=f"bild-align {__version__} ({libraries})"
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.about)
        sub.set_defaults(handler=command.run)
        if command.arguments is not None:
            command.arguments(sub)
        if command.config is not None:
            add_options(sub, command.config)
        sub.add_argument(
            "--threads",
            type=_thread_count,
            default=None,
            help="CPU threads for torch's arithmetic (default: torch's, usually one per core). "
            "On a busy machine, or with small models where a second thread gains nothing, 1 "
            "can be many times faster; results record the count used",
        )
    return parser


def _thread_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ArgumentTypeError(f"{text!r}: give a whole number of threads, 1 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UserError as error:
        print(f"bild-align: error: {error}", file=sys.stderr)
        return 2
    handler: Callable[[Namespace], int | None] = args.handler
    if args.threads is not None:  # (torch is imported only when asked: --help stays quick)
        import torch

        torch.set_num_threads(args.threads)
    with _notes_on_stderr(), reporting():  # the commands' reports shown, as their output
        return _run(handler, args)


@contextlib.contextmanager
def _notes_on_stderr():
    """The library's notes (logged at INFO under `bild_align`) on stderr for this command."""
    import logging

    logger = logging.getLogger("bild_align")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _run(handler: Callable[[Namespace], int | None], args: Namespace) -> int:
    """The handler's exit code (None: 0), or 2 for a user mistake, 130 for Ctrl-C."""
    try:
        code = handler(args)
    except UserError as error:
        print(f"bild-align: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bild-align: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRORS:
            raise
        where = f": {error.filename}" if error.filename else ""
        print(f"bild-align: error: {error.strerror}{where}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
