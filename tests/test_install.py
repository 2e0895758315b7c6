"""`pip install .` (not editable) still finds the recipes and the demo pair, from any folder."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
import bild_align
from bild_align.defaults import demo_model
from bild_align.recipes import load_recipe
assert bild_align.__file__.startswith(sys.argv[1]), bild_align.__file__
large = demo_model("large")
assert large.startswith(sys.argv[1]), large
recipe = load_recipe("recipes/demo-align.yaml")
assert recipe.small_model.startswith(sys.argv[1]) and recipe.small_model.endswith("demo/small")
assert recipe.output_dir == "outputs/demo/aligned"  # made where the user runs
from bild_align.resources import GENERATE_REPO
assert (GENERATE_REPO / "custom_generate" / "generate.py").is_file()  # custom_generate's folder
assert (GENERATE_REPO / "custom_generate" / "requirements.txt").is_file()
print("ok", large)
"""


def test_a_regular_install_finds_recipes_and_demo_pair(tmp_path):
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels, prefix, source = tmp_path / "wheels", tmp_path / "prefix", tmp_path / "source"
    # built from a copy: a build leaves build/ and egg-info behind in the tree it reads
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "outputs", "results", "build")
    )
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--ignore-installed", "--prefix", str(prefix), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    (site,) = prefix.glob("lib/python*/site-packages")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("BILD_DEMO_DIR", None)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(prefix)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert "ok" in probe.stdout
