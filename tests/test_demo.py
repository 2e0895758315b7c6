"""A fast smoke test of the demo path on the shipped pair and a few real sentences."""

import json
from pathlib import Path

import pytest

from bild_align.data.gettext_corpus import CATALOG_DIR
from bild_align.pipeline.demo.command import DemoConfig, run_demo


@pytest.mark.slow
@pytest.mark.skipif(
    not any(CATALOG_DIR.glob("*.mo")),
    reason=f"no German gettext catalogs in {CATALOG_DIR} on this machine",
)
@pytest.mark.parametrize("pair", ["t5", "causal"])
def test_demo_pipeline_on_a_few_examples(tmp_path, capsys, pair):
    config = DemoConfig(
        pair=pair,
        output_dir=str(tmp_path),
        calibration_rows=48,
        eval_samples=4,
        rollback_threshold=2.0,
        fallback_threshold=0.5,
        sweep_rollback_thresholds=(0.0, 2.0),
        sweep_fallback_thresholds=(0.5,),
        max_new_tokens=24,
        tune_samples=10,
        align_overrides={
            "max_steps": 4,
            "eval_rows": 8,
            "eval_steps": 2,
            "save_steps": 2,
            "per_device_train_batch_size": 8,
            "logging_steps": 2,
        },
    )
    results = run_demo(config)
    out = capsys.readouterr().out
    for label in ("large model alone", "assisted generation", "BiLD unaligned", "BiLD aligned"):
        assert label in out
    assert "BiLD aligned, tuned" in out and "batch 8" in out
    # each batch-8 BiLD row has the large model of its own run above it (a new-user finding)
    assert "large model alone (the tuned setting's run)" in out
    for header in ("median ms", "tokens/s"):  # each table's columns line up, long labels too
        lines = out.splitlines()
        start = next(i for i, line in enumerate(lines) if header in line and line.startswith("run"))
        table = []
        for line in lines[start:]:
            if not line.strip() or line.startswith("BLEU:"):
                break
            table.append(line)
        assert len(table) >= 3 and len({len(line) for line in table}) == 1, table
    tune = json.loads((tmp_path / "tune.json").read_text())
    assert tune["examples"] == 10 and results["tuned_batch8"]["config"]["batch_size"] == 8
    assert (tmp_path / "aligned" / "bild_fallback_head.safetensors").is_file()
    assert "sweep plot:" in out and Path(results["aligned"]["sweep"]["plot"]).exists()
    calibration = json.loads((tmp_path / "calibration" / "run.json").read_text())
    assert calibration["complete"] and calibration["rows"] == 48
    exact = next(
        row
        for row in results["aligned"]["methods"]
        if row["method"] == "bild" and row["setting"]["rb"] == 0.0
    )
    assert exact["identical_to_large"] == 4  # rb = 0 is lossless on the real pair too
    # beside it, a 1-layer drafter made from the large model, aligned, tuned and evaluated alike
    assert "1-layer drafter alone (aligned)" in out and "BiLD 1-layer drafter, tuned" in out
    assert "large model alone, our engine" in out and "/engine" in out
    assert (tmp_path / "drafter-1" / "bild_drafter.json").is_file()
    assert json.loads((tmp_path / "tune-drafter-1.json").read_text())["examples"] == 10
    assert results["drafter_tuned_batch8"]["config"]["batch_size"] == 8
    rows = results["drafter_tuned_batch1"]["methods"]
    assert "speedup_over_engine" in next(row for row in rows if row["method"] == "bild")
    shares_encoder = pair == "t5"  # the trained drafter keeps the large model's encoder
    assert (tmp_path / "aligned-drafter-1" / "bild_drafter.json").is_file() == shares_encoder


def test_the_demo_knows_how_many_steps_its_aligned_model_had(tmp_path):
    """A new-user finding: `demo --max-steps 12` after a run with 5 reported the 5-step model
    as done; the demo now reads the steps from the run record (more asked: training
    continues; fewer: refused, naming both)."""
    import json

    from bild_align.pipeline.demo.command import _trained_steps
    from bild_align.pipeline.train.runs import RUN_FILE

    aligned = tmp_path / "aligned"
    aligned.mkdir()
    assert _trained_steps(aligned) is None  # nothing trained yet
    (aligned / "model.safetensors").write_bytes(b"x")
    (aligned / RUN_FILE).write_text(json.dumps({"result": {"recipe": {"max_steps": 5}}}))
    assert _trained_steps(aligned) == 5
    (aligned / RUN_FILE).write_text("{damaged")
    assert _trained_steps(aligned) is None
