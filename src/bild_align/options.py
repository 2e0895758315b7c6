"""Command-line options generated from config dataclasses: each default and its help live once,
on the dataclass field.

    @dataclass
    class EvalConfig:
        rollback_threshold: tuple[float, ...] = option(
            (2.0,), "rollback threshold(s)", parse=number_list, aliases=("--rb",)
        )

    add_options(parser, EvalConfig)            # --rollback-threshold (--rb): type, help, default
    given = given_options(parser.parse_args()) # what the user typed: {"rollback_threshold": (3.0,)}
    config = build(EvalConfig, {**from_recipe, **given}, "the command line")

Options default to argparse.SUPPRESS, so that `given_options` tells typed values from defaults
and a recipe can sit between the dataclass defaults and the command line. This module imports
nothing heavy: `bild-align --help` builds every parser from it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

PREFIX = "option__"  # namespace attributes of generated options, apart from hand-made ones


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    parse: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    default_text: str | None = None,
    command_line: bool = True,
    metavar: str | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A config field with what its command-line option needs.

    parse: turns the typed text into the value (default: from the default's type);
    flag: the option's name when not the field's (`max` -> `--max-new-tokens`);
    default_text: the default in words, for fields whose default is None ("the task's");
    command_line: False for fields set only from code or a recipe;
    metavar: the value's name in --help when the parser's does not say it (`REPO`);
    aliases: the option's short names, e.g. ("--rb",) beside --rollback-threshold.
    """
    metadata = {
        "help": help,
        "parse": parse,
        "choices": choices,
        "flag": flag,
        "default_text": default_text,
        "command_line": command_line,
        "metavar": metavar,
        "aliases": aliases,
    }
    if isinstance(default, list | dict | set) or dataclasses.is_dataclass(default):
        frozen = default
        return dataclasses.field(default_factory=lambda: copy.deepcopy(frozen), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _comma_list(parse_one: Callable[[str], Any], what: str) -> Callable[[str], tuple]:
    """A parser of comma-separated values, each read by `parse_one`."""

    def parse(text: str) -> tuple:
        try:
            return tuple(parse_one(part) for part in text.split(",") if part.strip())
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what}, got {text!r}"
            ) from None

    return parse


number_list = _comma_list(finite_float, "finite numbers")
positive_int_list = _comma_list(positive_int, "positive integers")


def name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


def switch(text: str) -> bool:
    """A switch's value where a recipe may have set it either way: true/false, yes/no, on/off,
    1/0."""
    word = text.strip().lower()
    if word in _TRUE_WORDS + _FALSE_WORDS:
        return word in _TRUE_WORDS
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def yaml_value(text: str) -> Any:
    """A YAML value typed on the command line, e.g. a mapping: '{d_model: 64, num_layers: 2}'."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"expected a YAML value, got {text!r}") from None


def flag_of(f: dataclasses.Field) -> str:
    return "--" + (f.metadata.get("flag") or f.name).replace("_", "-")


def flags_of(f: dataclasses.Field) -> tuple[str, ...]:
    """The option's name and its short names."""
    return (flag_of(f), *f.metadata.get("aliases", ()))


def _default_words(f: dataclasses.Field) -> str:
    if f.metadata.get("default_text"):
        return f.metadata["default_text"]
    default = f.default
    if f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    if default is dataclasses.MISSING or default is None or isinstance(default, bool):
        return ""
    if isinstance(default, tuple | list):
        return ",".join(f"{item:g}" if isinstance(item, float) else str(item) for item in default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def help_of(f: dataclasses.Field) -> str:
    words = _default_words(f)
    text = f.metadata.get("help") or f.name
    return f"{text} (default: {words})" if words else text


def _guess_parse(f: dataclasses.Field) -> Callable[[str], Any] | None:
    default = f.default
    if isinstance(default, bool):
        return switch
    if isinstance(default, float):
        return finite_float
    if isinstance(default, int):  # bool is handled above
        return int
    return None


_METAVARS = {
    int: "N",
    positive_int: "N",
    nonnegative_int: "N",
    finite_float: "X",
    number_list: "X[,X...]",
    positive_int_list: "N[,N...]",
    name_list: "NAME[,NAME...]",
    switch: "true|false",
    yaml_value: "YAML",
}


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    config_class: type,
    skip: tuple[str, ...] = (),
    over_recipe: bool = False,
) -> None:
    """One option per field of `config_class` (those not skipped or marked command_line=False).
    `over_recipe`: the options override a recipe file, so none is required and a switch takes
    a value (`--bf16 false` turns off what the recipe turned on)."""
    for f in dataclasses.fields(config_class):
        if f.name in skip or not f.metadata.get("command_line", True):
            continue
        common: dict[str, Any] = dict(
            dest=PREFIX + f.name, default=argparse.SUPPRESS, help=help_of(f)
        )
        required = f.default is dataclasses.MISSING and not f.metadata.get("default_text")
        if required and not over_recipe:
            common["required"] = True
        if f.default is False and not over_recipe:
            parser.add_argument(*flags_of(f), action="store_true", **common)
            continue
        parse = f.metadata.get("parse") or _guess_parse(f)
        extra: dict[str, Any] = (
            {"choices": f.metadata["choices"]} if f.metadata.get("choices") else {}
        )
        if parse is not None:
            extra["type"] = parse
        if not f.metadata.get("choices"):
            extra["metavar"] = (
                f.metadata.get("metavar")
                or _METAVARS.get(parse)
                or flag_of(f)[2:].replace("-", "_").upper()
            )
        parser.add_argument(*flags_of(f), **common, **extra)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The generated options the user typed, by field name."""
    return {
        name.removeprefix(PREFIX): value
        for name, value in vars(args).items()
        if name.startswith(PREFIX)
    }


def command_line(command: str, config: Any) -> str:
    """`bild-align COMMAND` with the options that reproduce `config` (those not at default)."""
    import shlex

    parts = ["bild-align", command]
    for f in dataclasses.fields(config):
        if not f.metadata.get("command_line", True):
            continue
        value = getattr(config, f.name)
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if value == default or value is None or value is False:
            continue
        if value is True:
            parts.append(flag_of(f))
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
        parts += [flag_of(f), shlex.quote(text)]
    return " ".join(parts)
