"""The package's shape: the CLI starts without torch, and no module imports itself back."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "bild_align"

HELP_WITHOUT_TORCH = """
import sys
from bild_align.cli import main
for command in ([], ["calibrate"], ["train"], ["eval"], ["chat"], ["demo"], ["bench"]):
    try:
        main([*command, "--help"])
    except SystemExit as exit_info:
        assert exit_info.code == 0, (command, exit_info.code)
heavy = sorted(name for name in ("torch", "transformers", "datasets") if name in sys.modules)
print("heavy:", heavy)
"""


def test_every_help_starts_without_torch():
    result = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TORCH], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: bild-align" in result.stdout
    assert result.stdout.strip().endswith("heavy: []")


def test_public_names_still_import_from_the_package():
    import bild_align

    assert callable(bild_align.bild_generate) and bild_align.BiLDStats().generated == 0
    assert set(bild_align.__all__) <= set(dir(bild_align))


def _imports(path: Path) -> set[str]:
    """The bild_align modules a module imports anywhere in it (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("bild_align.")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


GRAPH = {
    _module_name(path): _imports(path) - {_module_name(path)} for path in PACKAGE.rglob("*.py")
}


def test_no_import_cycles():
    def cycle_from(start, node, seen):
        for following in sorted(GRAPH.get(node, ())):
            if following == start:
                return [*seen, following]
            if following not in seen:
                found = cycle_from(start, following, [*seen, following])
                if found:
                    return found
        return None

    for module in sorted(GRAPH):
        cycle = cycle_from(module, module, [module])
        assert cycle is None, " -> ".join(cycle)


def _command_of(module: str) -> str | None:
    """`train` for bild_align.pipeline.train.*, else None."""
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "pipeline" else None


SETTINGS = ("bild_align.configs", "bild_align.pipeline.base_config")


def _is_settings(module: str) -> bool:
    return module in SETTINGS or module.endswith(".config")


def _is_command(module: str) -> bool:
    return module.endswith(".command") or module == "bild_align.pipeline.demo.models"


def test_imports_point_one_way():
    """cli -> pipeline/COMMAND/command -> that command's pieces and the library (models, data,
    measure, runs) -> core. core imports nothing else of the package; a command imports no
    other command (except the demo and the rebuild of its models, which chain them) and no
    other command's pieces; the library imports no command and no piece, only settings (the
    tests' helpers in `testing` drive commands as a user does)."""
    assert {"bild_align.core.decoding", "bild_align.pipeline.train.command"} <= set(GRAPH)
    chains = {"bild_align.pipeline.demo.command", "bild_align.pipeline.demo.models"}
    for module, imported in GRAPH.items():
        if module.startswith("bild_align.core"):
            outside = {name for name in imported if not name.startswith("bild_align.core")}
            assert not outside, (module, outside)
        elif _command_of(module) is not None and module not in chains:
            others = {
                name
                for name in imported
                if _command_of(name) not in (None, _command_of(module)) and not _is_settings(name)
            }
            assert not others, (module, others)
            if not _is_command(module):  # a piece: no command above it
                assert not {name for name in imported if _is_command(name)}, module
        elif module != "bild_align.cli" and not module.startswith(("bild_align.testing", *chains)):
            upward = {
                name
                for name in imported
                if name == "bild_align.cli"
                or (name.startswith("bild_align.pipeline") and not _is_settings(name))
            }
            assert not upward, (module, upward)


def test_the_top_of_the_package_is_small():
    """About ten modules beside the folders: the rest lives where its layer says."""
    top = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem != "__init__")
    assert len(top) <= 10, top


def test_library_code_leaves_process_state_alone(tmp_path):
    import matplotlib
    import torch

    from bild_align.models.toy import random_llama, random_t5
    from bild_align.pipeline.eval.report import plot_sweep as _plot

    state, backend = torch.get_rng_state(), matplotlib.get_backend()
    first = random_t5(vocab_size=32, d_model=16, num_layers=1, seed=5)
    random_llama(vocab_size=32, hidden_size=16, num_layers=1, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is kept
    again = random_t5(vocab_size=32, d_model=16, num_layers=1, seed=5)
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True)
    )
    row = {"method": "bild", "setting": {"rb": 1.0, "fb": 0.5}, "speedup": 1.5}
    row["quality"] = {"score": 30.0}
    _plot([{**row, "method": "large"}, row], [row], [(30.0, 1.5)], [True], tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert matplotlib.get_backend() == backend


def test_support_modules_log_instead_of_printing():
    """Only the command line and the stages talk to the terminal; the library logs its notes
    under `bild_align` (the command line shows them on stderr)."""
    import bild_align

    package = Path(bild_align.__file__).parent
    for path in package.rglob("*.py"):
        relative = path.relative_to(package).as_posix()
        talks = relative.endswith("/command.py") or relative == "pipeline/demo/models.py"
        if talks or relative.startswith("testing/") or relative in ("cli.py", "reporting.py"):
            continue
        calls = [
            node.lineno
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
        ]
        assert not calls, (relative, calls)


def test_forward_clock_counts_lean_steps_without_patching_classes():
    import torch

    from bild_align import bild_generate
    from bild_align.core.engines.lean_t5 import LeanT5Decoder
    from bild_align.core.loop import STEP_OBSERVER
    from bild_align.measure.timing import ForwardClock
    from bild_align.models.toy import deepen, random_t5

    small = random_t5(vocab_size=64, d_model=16, num_layers=1, seed=1)
    large = deepen(small, extra_layers=1, seed=2)
    step = LeanT5Decoder.step
    with ForwardClock([small, large], torch.device("cpu")) as clock:
        assert LeanT5Decoder.step is step  # nothing process-wide is replaced
        bild_generate(small, large, torch.tensor([[3, 4, 5, 1]]), max_new_tokens=8)
    assert clock.seconds > 0 and STEP_OBSERVER.get() is None


def _layout_blocks(readme: str) -> dict[str, str]:
    """The README's layout block: each `folder/` line and the lines under it, by folder."""
    block = readme.split("## Layout", 1)[1].split("```")[1]
    blocks: dict[str, str] = {}
    folder = None
    for line in block.splitlines():
        first = line.split()[0] if line.strip() else ""
        if first.endswith("/") and not line.startswith("    "):
            folder = first.removeprefix("src/bild_align/")  # "" for the package's top
            blocks[folder] = line[line.index(first) + len(first) :]
        elif folder is not None:
            blocks[folder] += " " + line
    return blocks


def test_the_readme_layout_names_every_module():
    """The README's layout section is the map a newcomer reads first: every folder of the
    package has its line, and every module is named (as a word) under its folder's line."""
    import re

    import bild_align

    package = Path(bild_align.__file__).parent
    blocks = _layout_blocks((package.parents[1] / "README.md").read_text(encoding="utf-8"))
    missing = []
    for path in package.rglob("*.py"):
        relative = path.relative_to(package)
        if path.stem == "__init__" or "generate_repo" in relative.parts:
            continue
        parts = relative.parts
        if parts[0] == "pipeline" and len(parts) == 3:  # pipeline/COMMAND/piece.py
            folder, names = "pipeline/", (parts[1], path.stem)
        else:
            folder, names = "".join(f"{part}/" for part in parts[:-1]), (path.stem,)
        text = blocks.get(folder, "")
        if not all(re.search(rf"\b{re.escape(name)}\b", text) for name in names):
            missing.append(relative.as_posix())
    assert not missing, (missing, sorted(blocks))
    assert len(blocks) <= 20  # about fifteen lines: a map, not an inventory
