"""Helpers the tests share: tiny byte-level models saved like checkpoints, a data file of
German-looking / English-looking pairs, and how to start two CPU processes.

    model = byte_level_model(num_layers=1)
    save_with_byte_tokenizer(model, tmp_path / "small")      # a folder from_pretrained reads
    write_pairs(tmp_path / "pairs.jsonl", 20)
    subprocess.run([*TWO_CPU_PROCESSES, "calibrate", ...], env={**os.environ, **TWO_CPU_ENV})
    ids, mask = padded_batch(seed=0, rows=5, vocab_size=128, longest=9)  # right-padded
"""

import subprocess
import sys

import torch


def checkout_state(root) -> set[str] | None:
    """`git status --ignored` of the checkout at `root`, without the caches Python and pytest
    keep; None where it is not a git checkout."""
    try:
        lines = subprocess.run(
            ["git", "status", "--porcelain", "--ignored"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    state = {line for line in lines if "__pycache__" not in line and ".pytest_cache" not in line}
    return state | _empty_folders(root)


_NOT_WALKED = {".git", ".venv", ".pytest_cache", ".ruff_cache", "__pycache__"}


def _empty_folders(root) -> set[str]:
    """Empty folders under `root` (git status does not show them)."""
    import os

    found = set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _NOT_WALKED]
        if not subfolders and not files:
            found.add(f"empty folder {os.path.relpath(folder, root)}")
    return found


def interrupted_on_call(function, count: int):
    """`function`, except that its `count`-th call raises KeyboardInterrupt (a Ctrl-C there)."""
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            raise KeyboardInterrupt
        return function(*args, **kwargs)

    return wrapper


def padded_batch(seed, *, rows=5, vocab_size=128, longest=9, left=False):
    """Random inputs of different lengths (the first row the longest) padded with 0, with their
    mask: right-padded (encoder-decoder models' convention) or left-padded (decoder-only)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab_size, (rows, longest), generator=generator)
    lengths = torch.randint(1, longest + 1, (rows,), generator=generator)
    lengths[0] = longest
    columns = torch.arange(longest)[None]
    if left:
        mask = (columns >= longest - lengths[:, None]).long()
    else:
        mask = (columns < lengths[:, None]).long()
    return ids * mask, mask


def byte_level_model(*, num_layers=2, d_model=32, seed=3, eos_weight=3.0):
    """A tiny random T5 over ByT5's byte vocabulary whose head favours printable ASCII bytes
    (and, weakly, EOS), so decoded outputs are non-empty text of varying length."""
    from bild_align.models.toy import random_t5

    return _printable_bytes_only(
        random_t5(vocab_size=384, d_model=d_model, num_layers=num_layers, confidence=6.0,
                  eos_weight=eos_weight, seed=seed)
    )  # fmt: skip


def _printable_bytes_only(model):
    """Zero the output rows of every id but printable ASCII bytes and EOS."""
    with torch.no_grad():
        keep = torch.zeros(384, dtype=torch.bool)
        keep[3 + 32 : 3 + 127] = True  # bytes ' '..'~' (ByT5 ids are byte + 3)
        keep[1] = True  # EOS
        model.lm_head.weight[~keep] = 0.0
    return model


def byte_level_llama(*, num_layers=1, hidden_size=32, seed=3, eos_weight=3.0):
    """A tiny random Llama over ByT5's byte vocabulary whose head favours printable ASCII
    bytes (and, weakly, EOS): the decoder-only counterpart of `byte_level_model`."""
    from bild_align.models.toy import random_llama

    return _printable_bytes_only(
        random_llama(vocab_size=384, hidden_size=hidden_size, num_layers=num_layers,
                     confidence=6.0, eos_weight=eos_weight, seed=seed)
    )  # fmt: skip


def save_with_byte_tokenizer(model, directory):
    """Save like a checkpoint, with a ByT5 (byte-level, file-free) tokenizer beside it."""
    from transformers import ByT5Tokenizer

    model.save_pretrained(directory)
    ByT5Tokenizer().save_pretrained(directory)
    return directory


def save_byte_level_model(directory, **settings):
    return save_with_byte_tokenizer(byte_level_model(**settings), directory)


def write_pairs(path, count, *, seed=0):
    """A JSON lines file of German-looking source / English-looking target pairs."""
    import json
    import random

    rng = random.Random(seed)
    words_de = ["das", "Haus", "ist", "gross", "und", "alt", "die", "Katze", "schlaeft", "hier"]
    words_en = ["the", "house", "is", "big", "and", "old", "cat", "sleeps", "here", "a"]
    with open(path, "w", encoding="utf-8") as handle:
        for index in range(count):
            length = rng.randint(2, 12)
            de = " ".join(rng.choice(words_de) for _ in range(length)) + f" {index}"
            en = " ".join(rng.choice(words_en) for _ in range(length))
            handle.write(json.dumps({"de": de, "en": en}) + "\n")
    return path


# Two CPU processes. `accelerate launch --cpu --num_processes 2` starts only one process
# with accelerate 1.15 (multi-CPU needs an MPI hostfile there), so the tests use torchrun, as
# `accelerate launch` does on GPUs; ACCELERATE_USE_CPU makes accelerate and the Trainer use
# gloo across the processes. Pass TWO_CPU_ENV as the environment.
TWO_CPU_PROCESSES = [
    sys.executable,
    "-m",
    "torch.distributed.run",
    "--standalone",
    "--nproc_per_node",
    "2",
    "-m",
    "bild_align.cli",
]
TWO_CPU_ENV = {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}


def one_error_line(capsys, needle: str) -> str:
    """What a refused command wrote to stderr: one `bild-align: error:` line naming `needle`,
    and no traceback."""
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert err.count("bild-align: error:") == 1, err
    return err


def eval_argv(byte_pair_dirs, task, *extra) -> list[str]:
    """`bild-align eval` over the tests' byte-level pair and a pairs file, large baseline only."""
    small, large = map(str, byte_pair_dirs)
    argv = ["eval", "--small", small, "--large", large, "--task", str(task)]
    return [*argv, "--source-column", "de", "--max-new-tokens", "6", "--baselines", "large", *extra]


def pairs_eval_config(small, large, pairs, output, **extra):
    """An EvalConfig over a pairs file (columns de, en): exact mode, the large baseline only."""
    from bild_align.configs import EvalConfig

    return EvalConfig(
        small=str(small), large=str(large), task=str(pairs), source_column="de",
        target_column="en", max_new_tokens=6, output=str(output), baselines=("large",),
        rollback_threshold=(0.0,), **extra,
    )  # fmt: skip


def calibrate_pairs(model_dir, pairs, output, *extra) -> int:
    """`bild-align calibrate` of a pairs file (column de) through the command line."""
    from bild_align.cli import main

    argv = ["calibrate", "--large", str(model_dir), "--task", str(pairs), "--source-column", "de"]
    return main([*argv, "--max-new-tokens", "6", "--output", str(output), *extra])
