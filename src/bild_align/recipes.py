"""YAML recipes parsed into dataclasses: built-in defaults < recipe file < command line.

    recipe = load_recipe("recipes/iwslt.yaml", overrides={"learning_rate": 1e-4})
    recipe.learning_rate      # 1e-4: the command line wins
    config = build(EvalConfig, {"small": "S", "rollback_threshold": [2.0]}, COMMAND_LINE)

Unknown keys, values of the wrong type and missing required keys are errors (`RecipeError`,
a `UserError`) that name the key and the file. A setting's earlier name (rb, fb, sweep_rb, ...:
`core.policies.EARLIER_NAMES`) is read as its current one, with a note.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any

from bild_align.configs import TrainRecipe, check
from bild_align.core.policies import EARLIER_NAMES
from bild_align.errors import UserError

logger = logging.getLogger(__name__)  # notes; the command line shows them on stderr


class RecipeError(UserError):
    pass


COMMAND_LINE = "the command line"  # a `build` source that is no file: problems stand alone


def _type_ok(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check (and gently coerce) a YAML value against a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(annotation):
            return True, None
        for option in typing.get_args(annotation):
            if option is not type(None):
                ok, coerced = _type_ok(value, option)
                if ok:
                    return True, coerced
        return False, value
    if origin in (list, tuple):
        item_type = typing.get_args(annotation)[0]  # list[X] or tuple[X, ...]
        if not isinstance(value, list | tuple):
            value = [value]
        checked = [_type_ok(item, item_type) for item in value]
        return all(ok for ok, _ in checked), origin(item for _, item in checked)
    if annotation is dict or origin is dict:
        return isinstance(value, dict), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if annotation is str:
        return isinstance(value, str), value
    return True, value


def _type_name(annotation: Any) -> str:
    """The type in a user's words: true or false, a list of numbers, ..."""
    words = {
        bool: "true or false",
        list[float]: "a list of numbers, e.g. [1, 2, 3]",
    }
    if annotation in words:
        return words[annotation]
    return str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_values(recipe_class: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """`values` with each key known to `recipe_class` and of its field's type (coerced gently:
    5e-4 read as text becomes a float, a list becomes a tuple); errors name the key and `source`."""
    hints = typing.get_type_hints(recipe_class)
    fields = [f.name for f in dataclasses.fields(recipe_class)]
    values = _current_names(values, fields, source)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise RecipeError(
            f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(fields)}"
        )
    checked = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]):  # a section of its own, e.g. `eval:`
            if not isinstance(value, dict | hints[key]):
                raise RecipeError(f"{source}: {key!r} is a section: indented key: value lines")
            if isinstance(value, dict):
                value = build(hints[key], value, f"{source}, section {key!r}")
            checked[key] = value
            continue
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise RecipeError(
                f"{source}: key {key!r} must be {_type_name(hints[key])}, got {value!r}"
            )
        checked[key] = coerced
    return checked


def _current_names(values: dict[str, Any], fields: list[str], source: str) -> dict[str, Any]:
    """`values` with the settings' earlier names (rb, fb, ...: `EARLIER_NAMES`) read as
    today's, said once; an earlier and a current name of one setting that disagree: refused."""
    earlier = [key for key in values if EARLIER_NAMES.get(key) in fields and key not in fields]
    if not earlier:
        return values
    renamed = dict(values)
    for key in earlier:
        name = EARLIER_NAMES[key]
        value = renamed.pop(key)
        if name in renamed and renamed[name] != value:
            raise RecipeError(
                f"{source}: {key} (the earlier name) and {name} disagree; keep {name}"
            )
        renamed[name] = value
    if source != COMMAND_LINE:
        logger.warning(
            "bild-align: %s: earlier names read as today's: %s",
            source,
            ", ".join(f"{key} -> {EARLIER_NAMES[key]}" for key in earlier),
        )
    return renamed


def build(recipe_class: type, values: dict[str, Any], source: str) -> Any:
    """An instance of `recipe_class` from `values`, with errors naming the key and `source`."""
    checked = check_values(recipe_class, values, source)
    fields = {f.name: f for f in dataclasses.fields(recipe_class)}
    missing = [
        name
        for name, f in fields.items()
        if name not in checked
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise RecipeError(f"{source}: missing required key(s) {', '.join(missing)}")
    recipe = recipe_class(**checked)
    try:
        check(recipe, None if source == COMMAND_LINE else source)
    except UserError as error:
        raise RecipeError(str(error)) from None
    return recipe


# Recipe keys that name a file, a folder or a model: a relative value written "./x" or "../x"
# is relative to the recipe file; any other relative value to the working directory.
PATH_KEYS = (
    *("task", "calibration_dataset", "output_dir", "small_model", "tokenizer", "large_model"),
    *("small", "large", "output"),  # an eval recipe's
)


def find_recipe(path: str | Path) -> Path:
    """`path`, or the shipped recipe of that name (`recipes/demo-align.yaml` or `demo-align`)
    when no such file exists here: the recipes also work from outside the checkout."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    from bild_align.resources import shipped

    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    builtin = shipped(f"recipes/{name}")
    if builtin is None or path.parent.name not in ("", "recipes"):
        raise RecipeError(f"recipe {path} does not exist")
    logger.info("bild-align: using the built-in recipe %s", builtin)
    return builtin


def resolve_paths(values: dict[str, Any], recipe_file: Path) -> dict[str, Any]:
    """Values of PATH_KEYS written "./x" or "../x", made relative to the recipe's folder."""
    folder = recipe_file.resolve().parent
    resolved = dict(values)
    for key in PATH_KEYS:
        value = values.get(key)
        if isinstance(value, str) and value.startswith(("./", "../")):
            resolved[key] = os.path.normpath(folder / value)
    return resolved


@functools.cache
def _unique_key_loader():
    """A safe YAML loader that refuses a key given twice in one mapping (PyYAML keeps the
    last one without a word, so a recipe's first value would be lost silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_unique_key_loader()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys to values")
    return data


def load_recipe(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    recipe_class: type = TrainRecipe,
) -> Any:
    """Defaults < the recipe at `path` < `overrides` (e.g. from the command line)."""
    if path is not None:
        path = find_recipe(path)
        values = resolve_paths(read_yaml(path), path)
    else:
        values = {}
    return _recipe(values, path, overrides, recipe_class)


def _recipe(
    values: dict[str, Any],
    path: Path | None,
    overrides: dict[str, Any] | None = None,
    recipe_class: type = TrainRecipe,
) -> Any:
    """`load_recipe` once the file (found and read) gave `values`."""
    source = str(path) if path is not None else COMMAND_LINE
    if recipe_class is TrainRecipe:
        values = _moved_into_eval_section(values, source)
    if overrides:
        values = {**values, **overrides}
        source = f"{source} (with command-line overrides)" if path is not None else source
    return build(recipe_class, values, source)


# a training recipe's top-level keys of earlier versions, now in its `eval:` section
_EVAL_KEYS_MOVED = {
    "eval_split": "split", "rb": "rb", "fb": "fb", "sweep_rb": "sweep_rb", "sweep_fb": "sweep_fb"
}  # fmt: skip


def _moved_into_eval_section(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Old recipes keep working: their top-level eval keys go into the `eval:` section (both
    places with different values: refused)."""
    moved = [key for key in _EVAL_KEYS_MOVED if key in values]
    if not moved or not isinstance(values.get("eval", {}), dict):
        return values  # (a section that is no mapping is refused as such by `build`)
    logger.warning(
        "bild-align: %s: key(s) %s now go in the recipe's `eval:` section (read from there)",
        source,
        ", ".join(moved),
    )
    values = dict(values)
    section = dict(values.get("eval") or {})
    for key in moved:
        name = _EVAL_KEYS_MOVED[key]
        if name in section and section[name] != values[key]:
            raise RecipeError(
                f"{source}: {key}: {values[key]!r} (top level, the old place) and eval: {name}: "
                f"{section[name]!r} disagree; keep the one in the eval: section"
            )
        section[name] = values.pop(key)
    values["eval"] = section
    return values


# keys only a training recipe has: a recipe with one of them is a training recipe
_TRAINING_ONLY = ("calibration_dataset", "output_dir")


def eval_settings(path: str | Path, sweep: bool) -> dict[str, Any]:
    """`EvalConfig` keys from a recipe, for `bild-align eval --recipe`.

    An eval recipe holds EvalConfig keys (small, large, task, split, rollback_threshold,
    fallback_threshold, sweep, ...). A training recipe supplies its output_dir as the small
    model, its large_model and task, its `eval:` section's split and thresholds (the sweep_
    grids with `sweep`), and its prompt settings."""
    from bild_align.configs import EvalConfig

    path = find_recipe(path)
    values = resolve_paths(read_yaml(path), path)
    if not any(key in values for key in _TRAINING_ONLY):
        return check_values(EvalConfig, values, str(path))
    recipe = _recipe(values, path)
    # thresholds only where the recipe gives them: without, eval uses a saved policy
    section = values.get("eval") if isinstance(values.get("eval"), dict) else {}
    given = set(section) | {_EVAL_KEYS_MOVED[key] for key in _EVAL_KEYS_MOVED if key in values}
    given = {EARLIER_NAMES.get(key, key) for key in given}
    chosen = {
        "small": recipe.output_dir,
        "large": recipe.large_model,
        "task": recipe.task,
        "split": recipe.eval.split,
        "rollback_threshold": tuple(
            recipe.eval.sweep_rollback_thresholds if sweep else recipe.eval.rollback_threshold
        )
        if sweep or "rollback_threshold" in given
        else None,
        "fallback_threshold": tuple(
            recipe.eval.sweep_fallback_thresholds if sweep else recipe.eval.fallback_threshold
        )
        if sweep or "fallback_threshold" in given
        else None,
        "prompt_template": recipe.prompt_template,
        "chat_template": recipe.chat_template or None,  # decoder-only pairs' prompts
    }
    return {key: value for key, value in chosen.items() if value is not None}
