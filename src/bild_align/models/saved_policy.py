"""A tuned BiLD policy saved beside the small model (`bild-align tune --save`), and read back.

    save_policy(small_dir, BiLDPolicy(0.1, 6.0, 16, "entropy"), pair={...}, tuned={...})
    policy = load_policy(small_dir)                              # a BiLDPolicy
    bild_generate(small, large, ids, policy=load_policy(small_dir))
    saved = saved_policy_for(small_dir, large_revision, vocab_size)   # what the stages use

`bild_policy.json` holds the policy, the pair it was tuned for (the large model, its revision,
the shared vocabulary) and what tune measured (task, split, budget, quality, speedup). A policy
tuned against one large model means nothing beside another: `saved_policy_for` refuses it,
naming the pair it was made for.
"""

from __future__ import annotations

import json
from pathlib import Path

from bild_align.core.policies import BiLDPolicy
from bild_align.errors import UserError
from bild_align.runs.files import write_json_atomic

POLICY_FILE = "bild_policy.json"
SETTINGS = ("fallback_threshold", "rollback_threshold", "max_small_steps", "fallback_rule")


def policy_path(small_dir: str | Path) -> Path:
    return Path(small_dir).expanduser() / POLICY_FILE


def save_policy(small_dir: str | Path, policy: BiLDPolicy, *, pair: dict, tuned: dict) -> Path:
    """Write `policy` with the `pair` it belongs to and what `tuned` measured, atomically."""
    folder = Path(small_dir).expanduser()
    if not folder.is_dir():
        raise UserError(
            f"--save writes {POLICY_FILE} into the small model's folder, and {small_dir} is not "
            "a local folder; download the model (e.g. `hf download`) and tune that folder"
        )
    settings = {name: getattr(policy, name) for name in SETTINGS}
    return write_json_atomic(
        folder / POLICY_FILE, {"policy": settings, "pair": pair, "tuned": tuned}
    )


def read_saved(small_dir: str | Path) -> dict | None:
    """The saved record, None when there is none; a damaged one is a UserError."""
    path = policy_path(small_dir)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if set(record["policy"]) != set(SETTINGS):
            raise ValueError(f"its policy needs exactly {', '.join(SETTINGS)}")
        record["pair"]["large"], record["pair"]["vocab_size"]  # noqa: B018 (must exist)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserError(
            f"{path} is damaged ({error}); run `bild-align tune --save` again or delete it"
        ) from None
    return record


def load_policy(small_dir: str | Path) -> BiLDPolicy:
    """The policy `bild-align tune --save` wrote into `small_dir` (library use)."""
    record = read_saved(small_dir)
    if record is None:
        raise FileNotFoundError(f"no {POLICY_FILE} in {small_dir}; run `bild-align tune --save`")
    return _policy(small_dir, record)


def _check_small_model(small_dir, record: dict) -> str | None:
    """The folder's small model is the one the policy was tuned for (by its weights' content;
    a policy copied from another model's folder is refused, naming what it was tuned for).
    Returns the folder's revision."""
    from bild_align.models.loading import model_revision

    folder = Path(small_dir).expanduser()
    if not folder.is_dir():
        return None
    current = model_revision(None, str(folder))
    tuned_for = record["pair"].get("small_revision")
    if tuned_for is not None and tuned_for != current:
        raise UserError(
            f"{policy_path(small_dir)} was tuned for another small model "
            f"({record['pair'].get('small')}, revision {tuned_for}; this folder's model is "
            f"{current}): tune this model "
            "(`bild-align tune --save`), give the thresholds, or delete that file"
        )
    return current


def _policy(small_dir, record: dict) -> BiLDPolicy:
    """The saved settings as a policy; a learned rule with the head saved beside it."""
    from bild_align.models.fallback_heads import load_fallback_head

    settings = record["policy"]
    current = _check_small_model(small_dir, record)
    head = None
    if settings["fallback_rule"] == "learned":
        head = load_fallback_head(
            small_dir, current or record["pair"].get("small_revision"), rule_from="policy"
        )
    try:
        return BiLDPolicy(**settings, fallback_head=head)
    except (TypeError, ValueError) as error:
        raise UserError(f"{policy_path(small_dir)} is damaged ({error})") from None


def saved_policy_for(
    small_dir: str | Path, large_revision: str, vocab_size: int
) -> tuple[BiLDPolicy, dict] | None:
    """The saved policy and its record, if `small_dir` holds one tuned with this large model
    (same revision, same vocabulary); None without one; UserError for another pair's."""
    record = read_saved(small_dir)
    if record is None:
        return None
    pair = record["pair"]
    if pair.get("large_revision") != large_revision or pair["vocab_size"] != vocab_size:
        raise UserError(
            f"{policy_path(small_dir)} was tuned with the large model {pair['large']} "
            f"(revision {pair.get('large_revision')}, {pair['vocab_size']} shared tokens), not "
            "this one; give --rb and --fb, tune this pair (`bild-align tune --save`), or "
            "delete that file"
        )
    return _policy(small_dir, record), record
