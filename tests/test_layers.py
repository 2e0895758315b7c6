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


def test_no_import_cycles():
    graph = {
        f"bild_align.{path.stem}": _imports(path) - {f"bild_align.{path.stem}"}
        for path in PACKAGE.glob("*.py")
        if path.stem != "__init__"
    }

    def cycle_from(start, node, seen):
        for following in sorted(graph.get(node, ())):
            if following == start:
                return [*seen, following]
            if following not in seen:
                found = cycle_from(start, following, [*seen, following])
                if found:
                    return found
        return None

    for module in sorted(graph):
        cycle = cycle_from(module, module, [module])
        assert cycle is None, " -> ".join(cycle)
