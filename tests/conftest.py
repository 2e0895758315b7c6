import os
import shutil
import tempfile
from pathlib import Path

# Every Hugging Face cache the tests touch (datasets' Arrow files of local data, transformers'
# copies of custom_generate code, the hub) lives in one temporary folder, removed at the end:
# the suite leaves the user's ~/.cache/huggingface alone (test_checkout_clean.py checks it).
# Set before the libraries are imported: they read these at import.
HOME_CACHE = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
TEST_CACHES = tempfile.mkdtemp(prefix="bild-align-test-caches-")
for variable, folder in (
    ("HF_HOME", "home"), ("HF_DATASETS_CACHE", "datasets"), ("HF_MODULES_CACHE", "modules"),
    ("HF_HUB_CACHE", "hub"), ("MPLCONFIGDIR", "matplotlib"),
):  # fmt: skip
    os.environ[variable] = os.path.join(TEST_CACHES, folder)

import pytest  # noqa: E402
import torch  # noqa: E402

from bild_align.testing.helpers import (  # noqa: E402
    byte_level_model,
    checkout_state,
    save_byte_level_model,
    save_with_byte_tokenizer,
)

torch.set_num_threads(2)
CHECKOUT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session):
    session.config.checkout_state = checkout_state(CHECKOUT)
    session.config.home_cache_state = cache_state(HOME_CACHE)
    session.config.home_cache = HOME_CACHE


def pytest_sessionfinish(session):
    shutil.rmtree(TEST_CACHES, ignore_errors=True)


def cache_state(folder: Path) -> set:
    """Every file under `folder` with its size and modification time."""
    if not folder.is_dir():
        return set()
    return {
        (str(path), stat.st_size, stat.st_mtime_ns)
        for path in folder.rglob("*")
        if path.is_file() and (stat := path.stat())
    }


def pytest_collection_modifyitems(config, items):
    """The check that the checkout is still clean runs after every other test."""
    items.sort(key=lambda item: "test_checkout_clean.py" in item.nodeid)


@pytest.fixture(autouse=True)
def _in_a_temporary_folder(tmp_path, monkeypatch):
    """Each test runs in its own folder: default outputs (results/eval.json, outputs/...)
    land there, never in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def byte_model_dir(tmp_path_factory):
    return save_byte_level_model(tmp_path_factory.mktemp("byte_model"))


@pytest.fixture(scope="session")
def byte_pair_dirs(tmp_path_factory):
    """(small, large) saved directories: the large model is a deeper near-copy of the small."""
    from bild_align.models.toy import deepen

    small = byte_level_model(num_layers=1, d_model=32, seed=3)
    large = deepen(small, extra_layers=2, eps=0.05, head_noise=0.05, seed=4)
    root = tmp_path_factory.mktemp("byte_pair")
    return (
        save_with_byte_tokenizer(small, root / "small"),
        save_with_byte_tokenizer(large, root / "large"),
    )


@pytest.fixture(scope="session")
def causal_pair_dirs(tmp_path_factory):
    """(small, large) saved decoder-only (Llama) models over the byte vocabulary."""
    from bild_align.models.toy import deepen_llama
    from bild_align.testing.helpers import byte_level_llama

    small = byte_level_llama(num_layers=1, hidden_size=32, seed=3)
    large = deepen_llama(small, extra_layers=2, eps=0.05, seed=4)
    root = tmp_path_factory.mktemp("causal_pair")
    return (
        save_with_byte_tokenizer(small, root / "small"),
        save_with_byte_tokenizer(large, root / "large"),
    )


@pytest.fixture
def pairs(tmp_path):
    """A JSON lines file of four German-looking / English-looking pairs (columns de, en)."""
    from bild_align.testing.helpers import write_pairs

    return write_pairs(tmp_path / "pairs.jsonl", 4, seed=5)


@pytest.fixture(autouse=True)
def _reports_shown():
    """The commands' reports shown, as `bild-align` shows them (tests read them on capsys);
    test_reporting.py checks that Python callers see nothing unless they ask."""
    from bild_align.reporting import reporting

    with reporting():
        yield
