"""The `bild-align` command.

    bild-align --help
    bild-align calibrate --large L --task T --output DIR     # stage one (calibrate.py)
    bild-align train --recipe recipes/iwslt.yaml              # stage two (train.py)
    bild-align eval --small S --large L --task T --rb 2 --fb 0.6   # stage three (evaluate.py)
    bild-align chat | demo | bench                            # chat.py, demo.py, benchmark.py

Each subcommand parses its options, then calls one stage module; heavy imports (torch,
transformers) happen inside the subcommand so that `--help` is instant. A user mistake prints
one line on stderr and exits with code 2; success exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Sequence

from bild_align.errors import UserError


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(_finite_float(part) for part in text.split(",") if part.strip())
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated finite numbers, got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_device_options(parser: argparse.ArgumentParser, device_note: str = "") -> None:
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="model dtype (default: float32)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help=f"torch device, e.g. cpu or cuda:0 (default: cuda if available{device_note})",
    )


def _add_length_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        help="output length limit (default: the task's target length)",
    )
    parser.add_argument(
        "--max-source-length",
        type=_positive_int,
        help="inputs are truncated to this many tokens (default: the task's)",
    )


def _add_bench(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time the decoder against large-only, small-only and assisted generation",
        description=(
            "Decoder micro-benchmark on pairs built in code (no downloads): the large model is "
            "the small one plus near-identity layers, so its depth ratio mimics the real pairs "
            "and the agreement is set by --eps and measured. Times large-only and small-only "
            "greedy generate, transformers' assisted generation, BiLD in exact mode (rb=0) and "
            "BiLD at rb=2, fb=0.6, interleaved on the same inputs; tuned methods run at their "
            "fastest setting. Prints a table and writes a JSON file with the configuration."
        ),
    )
    parser.add_argument(
        "--preset",
        default="t5",
        choices=["t5", "mt5", "llama", "tiny"],
        help="model shapes: t5 (6 vs 24 layers, 32k vocab), mt5 (8 vs 24 "
        "layers, 250k vocab, gated), llama (decoder-only, 4 vs 16 layers, 32k vocab), tiny "
        "(smoke test) (default: t5)",
    )
    parser.add_argument(
        "--sampling",
        action="store_true",
        help="add sampling rows (large model, speculative sampling and BiLD, temperature 1)",
    )
    parser.add_argument(
        "--eps",
        type=_float_list,
        default=(0.0, 0.01, 0.02),
        help="comma-separated scales of the large model's extra layers, one "
        "agreement level each; 0 = full agreement (default: 0,0.01,0.02)",
    )
    parser.add_argument(
        "--examples", type=_positive_int, default=8, help="random inputs per level (default: 8)"
    )
    parser.add_argument(
        "--max-new-tokens",
        type=_positive_int,
        default=48,
        help="tokens generated per input (default: 48)",
    )
    parser.add_argument(
        "--tune-examples",
        type=_positive_int,
        default=2,
        help="inputs used to pick each tuned method's fastest setting (default: 2)",
    )
    _add_device_options(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed for models and inputs")
    parser.add_argument(
        "--output",
        default="results/bench_decoder.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> None:
    from bild_align.stages.benchmark import BenchConfig, format_table, run_benchmark

    if not args.eps or any(eps < 0 for eps in args.eps):
        raise UserError("--eps needs one or more numbers >= 0")
    config = BenchConfig(
        preset=args.preset,
        eps=args.eps,
        examples=args.examples,
        max_new_tokens=args.max_new_tokens,
        tune_examples=min(args.tune_examples, args.examples),
        device=args.device,
        dtype=args.dtype,
        seed=args.seed,
        output=args.output,
        sampling=args.sampling,
    )
    results = run_benchmark(config)
    print(format_table(results))
    print(f"\nresults written to {args.output}")


def _add_task_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--task",
        required=required,
        help="a registered benchmark (iwslt2017-de-en, wmt14-de-en, xsum, cnn_dailymail, "
        "gettext-de-en: built offline from this machine's gettext catalogs) or a local "
        ".jsonl/.csv/.parquet file" + ("" if required else " (default: gettext-de-en)"),
    )
    parser.add_argument("--source-column", help="source column of a local file (default: source)")
    parser.add_argument(
        "--target-column", help="reference column of a local file (default: target, if present)"
    )
    parser.add_argument(
        "--prefix",
        help="text put before every source (default: the task's, "
        "e.g. 'summarize: ' for summarization)",
    )
    parser.add_argument(
        "--max-samples", type=_positive_int, help="use only the first N rows of the split"
    )


def _add_calibrate(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="decode a benchmark's inputs with the large model into a calibration dataset",
        description=(
            "Greedy-decode every input of a benchmark split with the large model and save "
            "(source, large-model output, reference) as a dataset with a dataset card: "
            "OUTPUT/data/*.parquet and OUTPUT/README.md (datasets.load_dataset(OUTPUT) reads "
            "it). Inputs are batched by length; each output equals unbatched greedy decoding. "
            "Interrupted runs resume: run the same command again. Under `accelerate launch` "
            "the inputs are split across processes."
        ),
    )
    parser.add_argument(
        "--large",
        help="the large model: a Hub id or a local save_pretrained directory (default: the "
        "built-in demo pair's large model)",
    )
    _add_task_options(parser, required=False)
    parser.add_argument("--split", default="train", help="benchmark split (default: train)")
    parser.add_argument("--output", required=True, help="output directory")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=32, help="inputs decoded together (default: 32)"
    )
    _add_length_options(parser)
    _add_device_options(parser, "; under accelerate launch, each process's own")
    parser.add_argument(
        "--shard-rows",
        type=_positive_int,
        default=256,
        help="finished rows per on-disk shard; at most this many are redone "
        "after a crash (default: 256)",
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO_ID",
        help="also upload the dataset to this Hub dataset repository (token "
        "from HF_TOKEN or `hf auth login`)",
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="with --push-to-hub: create the repository as private",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="delete what OUTPUT holds and start afresh"
    )
    parser.set_defaults(handler=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> None:
    from bild_align.defaults import demo_defaults
    from bild_align.stages.calibrate import CalibrateConfig, run_calibration

    chosen = demo_defaults(large=args.large, task=args.task)
    config = CalibrateConfig(
        large=chosen["large"],
        task=chosen["task"],
        output=args.output,
        split=args.split,
        max_samples=args.max_samples,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        max_source_length=args.max_source_length,
        dtype=args.dtype,
        device=args.device,
        shard_rows=args.shard_rows,
        source_column=args.source_column,
        target_column=args.target_column,
        prefix=args.prefix,
        push_to_hub=args.push_to_hub,
        private=args.private,
        overwrite=args.overwrite,
    )
    output = run_calibration(config)
    print(f"calibration dataset: {output}")


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_eval(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure a small/large pair with BiLD beside the baselines; sweep thresholds",
        description=(
            "Run the large model alone, the chosen baselines (small alone, transformers' "
            "assisted generation) and BiLD on the same examples, one input at a time, after a "
            "warm-up, interleaved per example, timing generation only. Prints quality (the "
            "task's metric with its signature), latency, speedup over the large model and "
            "BiLD's statistics, and writes them with the full configuration to --output. "
            "With --sweep, every (rb, fb) pair of the lists is run and a CSV, the Pareto front "
            "and a PNG plot are written beside --output."
        ),
    )
    parser.add_argument(
        "--recipe",
        help="a training recipe: supplies --small (its output_dir), --large, --task, --split "
        "and the thresholds; options given here win",
    )
    parser.add_argument(
        "--small", help="small model: Hub id or local directory (default: the demo pair's)"
    )
    parser.add_argument(
        "--large", help="large model: Hub id or local directory (default: the demo pair's)"
    )
    _add_task_options(parser, required=False)
    parser.add_argument("--split", help="split (default: validation, or the recipe's eval_split)")
    parser.add_argument(
        "--rb",
        type=_float_list,
        help="rollback threshold(s), >= 0; 0 is the exact mode (default: 2, or the recipe's "
        "rb / sweep_rb)",
    )
    parser.add_argument(
        "--fb",
        type=_float_list,
        help="fallback threshold(s), in [0, 1] for sweeps (default: 0.6, or the recipe's "
        "fb / sweep_fb)",
    )
    parser.add_argument(
        "--sweep", action="store_true", help="evaluate every (rb, fb) pair of the lists"
    )
    parser.add_argument(
        "--max-drop",
        type=_finite_float,
        default=1.0,
        help="with --sweep: report the fastest setting whose quality is at most this many "
        "points below the large model's (default: 1.0)",
    )
    parser.add_argument(
        "--max-small-steps",
        type=_positive_int,
        default=10,
        help="most consecutive small-model tokens (default: 10)",
    )
    parser.add_argument(
        "--baselines",
        type=_name_list,
        default=("large", "small", "assisted"),
        help="comma-separated: large (always run), small, assisted (default: all three)",
    )
    parser.add_argument(
        "--reference-compat",
        action="store_true",
        help="reproduce the original BiLD implementation's decisions",
    )
    _add_length_options(parser)
    _add_device_options(parser)
    parser.add_argument(
        "--output",
        default="results/eval.json",
        help="results JSON; a sweep adds .csv and .png beside it (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_eval)


def _eval_models_and_task(args: argparse.Namespace) -> dict:
    """small, large, task, split, rb and fb: the command line, else the recipe, else defaults."""
    chosen = {
        "small": args.small,
        "large": args.large,
        "task": args.task,
        "split": args.split,
        "rb": args.rb,
        "fb": args.fb,
    }
    if args.recipe:
        from bild_align.recipes import load_recipe

        recipe = load_recipe(args.recipe)
        from_recipe = {
            "small": recipe.output_dir,
            "large": recipe.large_model,
            "task": recipe.task,
            "split": recipe.eval_split,
            "rb": tuple(recipe.sweep_rb if args.sweep else recipe.rb),
            "fb": tuple(recipe.sweep_fb if args.sweep else recipe.fb),
        }
        chosen = {
            key: from_recipe[key] if value is None else value for key, value in chosen.items()
        }
    defaults = {"split": "validation", "rb": (2.0,), "fb": (0.6,)}
    chosen = {key: defaults.get(key) if value is None else value for key, value in chosen.items()}
    from bild_align.defaults import demo_defaults

    models = demo_defaults(small=chosen["small"], large=chosen["large"], task=chosen["task"])
    return {**chosen, **models}


def _run_eval(args: argparse.Namespace) -> None:
    from bild_align.stages.evaluate import EvalConfig, format_results, run_eval

    config = EvalConfig(
        **_eval_models_and_task(args),
        max_samples=args.max_samples,
        sweep=args.sweep,
        max_small_steps=args.max_small_steps,
        max_new_tokens=args.max_new_tokens,
        max_source_length=args.max_source_length,
        baselines=args.baselines,
        reference_compat=args.reference_compat,
        max_drop=args.max_drop,
        dtype=args.dtype,
        device=args.device,
        output=args.output,
        source_column=args.source_column,
        target_column=args.target_column,
        prefix=args.prefix,
    )
    results = run_eval(config)
    print(format_results(results))
    print(f"results written to {args.output}")


def _add_train(subparsers) -> None:
    from bild_align.recipes import TrainRecipe, add_recipe_arguments

    parser = subparsers.add_parser(
        "train",
        help="align the small model: fine-tune it on a calibration dataset (Adafactor)",
        description=(
            "Fine-tune the small model on the large model's outputs (a `bild-align calibrate` "
            "dataset) with transformers' Seq2SeqTrainer and Adafactor at a constant learning "
            "rate. Settings come from the YAML recipe; every recipe key can be overridden on "
            "the command line (--learning-rate 1e-4, --max-steps 100, ...). Checkpoints "
            "(safetensors) keep the best and the last; --resume continues from the last. "
            "Under `accelerate launch` it trains on several processes."
        ),
    )
    parser.add_argument("--recipe", help="YAML recipe, e.g. recipes/iwslt.yaml")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in output_dir"
    )
    add_recipe_arguments(
        parser.add_argument_group("recipe keys (override the recipe)"), TrainRecipe
    )
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from bild_align.recipes import load_recipe, overrides_from_args
    from bild_align.stages.train import run_training

    recipe = load_recipe(args.recipe, overrides_from_args(args))
    run_training(recipe, resume=args.resume)


def _add_chat(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="interactive console: BiLD beside large, small and speculative decoding",
        description=(
            "Type an input and see BiLD's output beside the large model's, the small model's "
            "and speculative decoding's, each with tokens/s, time and decoder statistics; "
            "tokens kept from the small model are green. Commands (/help) change thresholds, "
            "gamma, sampling, length and which outputs are shown. Reads standard input, so it "
            "can be scripted: `printf 'Hallo Welt\\n' | bild-align chat`."
        ),
    )
    parser.add_argument("--small", help="small model (default: the demo pair's)")
    parser.add_argument("--large", help="large model (default: the demo pair's)")
    parser.add_argument(
        "--prefix",
        default="",
        help="text put before every input, e.g. 'summarize: ' (default: none)",
    )
    parser.add_argument(
        "--rb", type=_finite_float, default=2.0, help="rollback threshold, >= 0 (default: 2)"
    )
    parser.add_argument(
        "--fb", type=_finite_float, default=0.6, help="fallback threshold, >= 0 (default: 0.6)"
    )
    parser.add_argument(
        "--gamma",
        type=_positive_int,
        default=4,
        help="speculative decoding's draft length (default: 4)",
    )
    parser.add_argument(
        "--max-new-tokens", type=_positive_int, default=64, help="output length limit (default: 64)"
    )
    parser.add_argument(
        "--show",
        type=_name_list,
        default=("bild", "large"),
        help="outputs to show: bild,large,small,speculative (default: bild,large)",
    )
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy")
    parser.add_argument(
        "--temperature", type=_finite_float, default=1.0, help="sampling temperature, > 0"
    )
    parser.add_argument("--top-k", type=int, default=0, help="top-k filter (0: off)")
    parser.add_argument(
        "--top-p", type=_finite_float, default=1.0, help="nucleus filter, in (0, 1] (1: off)"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument(
        "--color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the small model's tokens (default: auto, on a terminal)",
    )
    _add_device_options(parser)
    parser.set_defaults(handler=_run_chat)


def _run_chat(args: argparse.Namespace) -> None:
    from bild_align.defaults import demo_defaults
    from bild_align.models import check_loaded_pair, load_seq2seq_or_causal
    from bild_align.stages.chat import METHODS, Console, Settings

    unknown = [name for name in args.show if name not in METHODS]
    if unknown:
        raise UserError(f"--show: unknown output {', '.join(unknown)}; use {', '.join(METHODS)}")
    settings = Settings(
        rb=args.rb,
        fb=args.fb,
        gamma=args.gamma,
        max=args.max_new_tokens,
        show=args.show,
        sample=args.sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    settings.validate()  # before minutes of model loading
    chosen = demo_defaults(small=args.small, large=args.large)
    large, tokenizer, _ = load_seq2seq_or_causal(
        chosen["large"], dtype=args.dtype, device=args.device
    )
    small, small_tokenizer, _ = load_seq2seq_or_causal(
        chosen["small"], dtype=args.dtype, device=large.device
    )
    settings.vocab_size = check_loaded_pair(small, small_tokenizer, large, tokenizer)
    interactive = sys.stdin.isatty()
    colour = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    console = Console(
        small, large, tokenizer, sys.stdout, colour=colour, prefix=args.prefix, settings=settings
    )
    with contextlib.suppress(EOFError):  # Ctrl-D at the prompt ends the session
        console.run(_prompted_lines() if interactive else sys.stdin, interactive=interactive)


def _prompted_lines():
    while True:
        yield input("> ")


def _add_demo(subparsers) -> None:
    from bild_align.stages.demo import DemoConfig  # light: the heavy imports are inside run_demo

    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline, offline, on the shipped demo pair and gettext-de-en",
        description=(
            "calibrate (the demo's large model over gettext-de-en's train split), train (align "
            "the demo's small model on it), eval (large alone, small alone, assisted "
            "generation, BiLD with the unaligned and the aligned small model, and a threshold "
            "sweep with its Pareto plot), then one summary table. Steps already done are "
            "reused when run again."
        ),
    )
    chosen = DemoConfig()
    parser.add_argument(
        "--output-dir",
        default=chosen.output_dir,
        help="where everything goes (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration-rows",
        type=_positive_int,
        help="calibrate only the first N train rows (default: all)",
    )
    parser.add_argument(
        "--eval-samples",
        type=_positive_int,
        default=chosen.eval_samples,
        help="test sentences evaluated (default: %(default)s)",
    )
    for name, meaning, swept in (
        ("rb", "rollback", chosen.sweep_rb),
        ("fb", "fallback", chosen.sweep_fb),
    ):
        parser.add_argument(
            f"--{name}",
            type=_finite_float,
            default=getattr(chosen, name),
            help=f"{meaning} threshold of the BiLD rows (default: %(default)g; the sweep adds "
            f"{name} in {', '.join(f'{value:g}' for value in swept)})",
        )
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from bild_align.stages.demo import DemoConfig, run_demo

    if args.rb < 0 or not 0 <= args.fb <= 1:
        raise UserError("--rb must be >= 0 and --fb within [0, 1]")
    run_demo(
        DemoConfig(
            output_dir=args.output_dir,
            calibration_rows=args.calibration_rows,
            eval_samples=args.eval_samples,
            rb=args.rb,
            fb=args.fb,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    from bild_align import __version__

    parser = argparse.ArgumentParser(
        prog="bild-align",
        description="Big Little Decoder (BiLD) inference, and alignment of the small model to "
        "the large one.",
    )
    parser.add_argument("--version", action="version", version=f"bild-align {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_calibrate(subparsers)
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_chat(subparsers)
    _add_demo(subparsers)
    _add_bench(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], None] = args.handler
    try:
        handler(args)
    except UserError as error:
        print(f"bild-align: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bild-align: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
