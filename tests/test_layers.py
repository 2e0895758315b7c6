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


DEMO_MODULES = ("bild_align.stages.demo", "bild_align.stages.demo_models")


def test_imports_point_one_way():
    """cli -> stages -> support modules -> core; core imports nothing else of the package,
    and stages import no other stage, except the demo and the rebuild of its models, which
    chain them."""
    assert {"bild_align.core.decoding", "bild_align.stages.train", "bild_align.cli"} <= set(GRAPH)
    for module, imported in GRAPH.items():
        if module.startswith("bild_align.core"):
            outside = {name for name in imported if not name.startswith("bild_align.core")}
            assert not outside, (module, outside)
        elif module.startswith("bild_align.stages.") and module not in DEMO_MODULES:
            stages = {name for name in imported if name.startswith("bild_align.stages")}
            assert not stages, (module, stages)
        elif not module.startswith("bild_align.stages") and module != "bild_align.cli":
            upward = {n for n in imported if n.startswith(("bild_align.stages", "bild_align.cli"))}
            assert not upward, (module, upward)


def test_library_code_leaves_process_state_alone(tmp_path):
    import matplotlib
    import torch

    from bild_align.eval_report import plot_sweep as _plot
    from bild_align.toy_models import random_llama, random_t5

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
        if relative.startswith(("stages/", "testing/")) or relative == "cli.py":
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
    from bild_align.core.lean_t5 import LeanT5Decoder
    from bild_align.core.loop import STEP_OBSERVER
    from bild_align.timing import ForwardClock
    from bild_align.toy_models import deepen, random_t5

    small = random_t5(vocab_size=64, d_model=16, num_layers=1, seed=1)
    large = deepen(small, extra_layers=1, seed=2)
    step = LeanT5Decoder.step
    with ForwardClock([small, large], torch.device("cpu")) as clock:
        assert LeanT5Decoder.step is step  # nothing process-wide is replaced
        bild_generate(small, large, torch.tensor([[3, 4, 5, 1]]), max_new_tokens=8)
    assert clock.seconds > 0 and STEP_OBSERVER.get() is None


def test_the_readme_layout_names_every_module():
    """The README's layout section is the map a newcomer reads first: it must match the tree."""
    import bild_align

    package = Path(bild_align.__file__).parent
    readme = (package.parents[1] / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1]
    missing = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.stem != "__init__"
        and "generate_repo" not in path.parts
        and path.parent.name not in ("stages", "configs", "testing")  # named as folders
        and path.stem not in layout
        and not (path.stem.startswith("lean_") and "lean*.py" in layout)  # the lean steps
    ]
    assert not missing, missing
    for folder in ("core", "stages", "configs", "testing"):
        assert f"src/bild_align/{folder}/" in layout
