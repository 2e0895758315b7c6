"""The `bild-align` command.

    bild-align --help
    bild-align bench --preset t5 --examples 8

Each subcommand parses its options, then calls one stage module; heavy imports (torch,
transformers) happen inside the subcommand so that `--help` is instant. A user mistake prints
one line on stderr and exits with code 2; success exits 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit code 2."""


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


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
        choices=["t5", "mt5", "tiny"],
        help="model shapes: t5 (6 vs 24 layers, 32k vocab), mt5 (8 vs 24 "
        "layers, 250k vocab, gated), tiny (smoke test) (default: t5)",
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
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device, e.g. cpu or cuda:0 (default: cuda if available)",
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="model dtype (default: float32)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for models and inputs")
    parser.add_argument(
        "--output",
        default="results/bench_decoder.json",
        help="where to write the JSON results (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> None:
    import torch

    from bild_align.benchmark import BenchConfig, format_table, run_benchmark

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: no CUDA device is available here")
    if not args.eps or any(eps < 0 for eps in args.eps):
        raise UserError("--eps needs one or more numbers >= 0")
    if args.dtype == "float16" and args.device == "cpu":
        raise UserError("--dtype float16 is GPU-only in practice; use bfloat16 on CPU")
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
    )
    results = run_benchmark(config)
    print(format_table(results))
    print(f"\nresults written to {args.output}")


def build_parser() -> argparse.ArgumentParser:
    from bild_align import __version__

    parser = argparse.ArgumentParser(
        prog="bild-align",
        description="Big Little Decoder (BiLD) inference, and alignment of the small model to "
        "the large one.",
    )
    parser.add_argument("--version", action="version", version=f"bild-align {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
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
