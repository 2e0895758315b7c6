"""The learned fallback rule: its examples, its fit, its file, the oracles, and that every engine
and batch shape feeds it the same hidden state."""

import json

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from bild_align import autoregressive_generate, bild_generate, load_fallback_head
from bild_align.cli import main
from bild_align.core.fallback_head import TENSORS, FallbackHead
from bild_align.core.policies import BiLDPolicy
from bild_align.errors import UserError
from bild_align.models.fallback_heads import HEAD_FILE, fit_head, head_examples, save_head
from bild_align.models.loading import model_revision
from bild_align.models.toy import deepen, random_inputs, random_t5
from bild_align.testing.helpers import write_pairs


def _random_head(width: int, seed: int = 0, bias: float = 0.0) -> FallbackHead:
    generator = torch.Generator().manual_seed(seed)
    return FallbackHead(
        {
            "mean": torch.zeros(width + 2),
            "std": torch.ones(width + 2),
            "w1": torch.randn(16, width + 2, generator=generator),
            "b1": torch.zeros(16),
            "w2": torch.randn(1, 16, generator=generator) / 4,
            "b2": torch.tensor([bias]),
        }
    )


def _pair(seed=2):
    small = random_t5(vocab_size=128, d_model=32, num_layers=1, confidence=8.0, seed=seed)
    return small, deepen(small, extra_layers=2, eps=0.05, head_noise=0.3, seed=seed + 10)


def test_learned_rule_needs_a_head():
    with pytest.raises(ValueError, match="needs its fallback_head"):
        BiLDPolicy(fallback_rule="learned")


@pytest.mark.parametrize("fb, rb", [(0.5, 0.0), (0.9, 0.0), (1.5, 4.0)])
def test_learned_rule_keeps_the_oracles(fb, rb):
    """rb=0 gives the large model's greedy output; so does fb>1 (every step falls back)."""
    for seed in (2, 5):
        small, large = _pair(seed)
        head = _random_head(32, seed)
        for input_ids in random_inputs(3, vocab_size=128, seed=seed):
            expected = autoregressive_generate(large, input_ids, max_new_tokens=20)
            out = bild_generate(
                small, large, input_ids, fallback_threshold=fb, rollback_threshold=rb,
                fallback_rule="learned", fallback_head=head, max_new_tokens=20,
            )  # fmt: skip
            assert out.sequences.tolist() == expected.sequences.tolist()


def test_every_engine_and_batch_feeds_the_head_the_same_hidden_state():
    """The lean step, transformers' forward (a hook on the output layer) and a padded batch
    make the same decisions with the same head; the head really decides (both ways)."""
    small, large = _pair(3)
    head = _random_head(32, 7, bias=0.5)
    inputs = random_inputs(4, vocab_size=128, seed=9)
    ids = torch.nn.utils.rnn.pad_sequence([row[0] for row in inputs], batch_first=True)
    mask = (ids != 0).long()
    mask[:, 0] = 1
    policy = BiLDPolicy(0.5, 3.0, 6, "learned", head)
    batch = bild_generate(small, large, ids, mask, policy=policy, max_new_tokens=24)
    fallbacks = small_tokens = 0
    for row, input_ids in enumerate(inputs):
        for engine in ("auto", "transformers"):
            alone = bild_generate(
                small, large, input_ids, policy=policy, max_new_tokens=24, engine=engine
            )
            assert alone.from_small[0] == batch.from_small[row]
            assert alone.row_stats[0] == batch.row_stats[row]
        fallbacks += alone.stats.fallbacks
        small_tokens += alone.stats.small_accepted
    assert fallbacks > 0 and small_tokens > 0


def test_examples_fit_and_file_round_trip(byte_pair_dirs, tmp_path):
    small_dir = byte_pair_dirs[0]
    small = AutoModelForSeq2SeqLM.from_pretrained(small_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(small_dir)
    rows = [
        json.loads(line) for line in write_pairs(tmp_path / "p.jsonl", 30).read_text().splitlines()
    ]
    targets = tokenizer.batch_decode(
        small.generate(**tokenizer([r["de"] for r in rows], return_tensors="pt", padding=True),
                       max_new_tokens=8), skip_special_tokens=True,
    )  # fmt: skip
    features, labels = head_examples(small, tokenizer, [r["de"] for r in rows], targets)
    assert features.shape[1] == small.config.d_model + 2 and len(features) == len(labels)
    # the targets are the small model's own greedy outputs (cut at 8 tokens: the appended EOS
    # is the one position where it need not agree)
    assert labels.mean() > 0.8 and set(labels.unique().tolist()) <= {0.0, 1.0}
    head, report = fit_head(features, labels, steps=50)
    assert 0 <= report["held_out_accuracy"] <= 1 and report["positions"] == len(labels)
    folder = tmp_path / "model"
    folder.mkdir()
    save_head(folder, head, small_revision="r1", vocab_size=384, report=report)
    loaded = load_fallback_head(folder, "r1")
    for name in TENSORS:
        assert torch.equal(loaded.tensors[name], head.tensors[name])
    with pytest.raises(UserError, match="another version"):
        load_fallback_head(folder, "r2")
    (folder / HEAD_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="damaged"):
        load_fallback_head(folder)
    with pytest.raises(UserError, match="--fallback-head-only"):
        load_fallback_head(tmp_path)


def _recipe(tmp_path, small_dir, calibration):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"task: {calibration}\ncalibration_dataset: task:{calibration}\n"
        f"output_dir: {small_dir}\nsmall_model: {small_dir}\neval_rows: 2\n"
        "fallback_head_rows: 20\nmax_target_length: 16\n"
    )
    return recipe


def test_train_fallback_head_only_then_eval_and_tune_use_it(byte_pair_dirs, tmp_path, capsys):
    import shutil

    small_dir = shutil.copytree(byte_pair_dirs[0], tmp_path / "small")
    calibration = tmp_path / "pairs.jsonl"
    rows = [
        json.loads(line) for line in write_pairs(calibration, 24, seed=4).read_text().splitlines()
    ]
    calibration.write_text(
        "".join(json.dumps({"source": r["de"], "target": r["en"]}) + "\n" for r in rows)
    )
    revision = model_revision(None, str(small_dir))
    assert main(["train", "--recipe", str(_recipe(tmp_path, small_dir, calibration)),
                 "--fallback-head-only"]) == 0  # fmt: skip
    assert "fallback head saved to" in capsys.readouterr().out
    assert model_revision(None, str(small_dir)) == revision  # the head is not the model
    load_fallback_head(small_dir, revision)
    output = tmp_path / "e.json"
    argv = ["eval", "--small", str(small_dir), "--large", str(byte_pair_dirs[1]), "--task",
            str(calibration), "--max-new-tokens", "6", "--baselines", "large",
            "--fallback", "learned", "--fb", "0.5", "--output", str(output)]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads(output.read_text())
    assert saved["config"]["fallback_rule"] == "learned"
    assert saved["methods"][1]["stats"]["small_steps"] > 0
    tune = ["tune", "--small", str(small_dir), "--large", str(byte_pair_dirs[1]), "--task",
            str(calibration), "--split", "train", "--max-new-tokens", "6", "--rb", "0,3",
            "--fb", "0.3,0.6", "--refine", "0", "--timing-rows", "2", "--bootstrap", "100",
            "--output", str(tmp_path / "t.json"), "--max-drop", "100"]  # fmt: skip
    assert main(tune) == 0
    rules = {p.get("rule") for p in json.loads((tmp_path / "t.json").read_text())["settings"]}
    assert rules == {None, "max_prob", "entropy", "learned"}


def test_fallback_head_only_without_a_model_is_one_line(tmp_path, capsys):
    recipe = _recipe(tmp_path, tmp_path / "nothing", tmp_path / "pairs.jsonl")
    write_pairs(tmp_path / "pairs.jsonl", 4)
    assert main(["train", "--recipe", str(recipe), "--fallback-head-only"]) == 2
    err = capsys.readouterr().err
    assert "needs a trained model in output_dir" in err and "Traceback" not in err


def test_eval_learned_without_a_head_is_one_line(byte_pair_dirs, tmp_path, capsys):
    calibration = write_pairs(tmp_path / "pairs.jsonl", 4)
    argv = ["eval", "--small", str(byte_pair_dirs[0]), "--large", str(byte_pair_dirs[1]),
            "--task", str(calibration), "--source-column", "de", "--max-new-tokens", "4",
            "--fallback", "learned", "--output", str(tmp_path / "e.json")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs a fallback head" in err and err.count("bild-align: error:") == 1


def test_files_put_beside_a_model_leave_its_revision_and_head_valid(byte_pair_dirs, tmp_path):
    """A new-user finding: results written into the model folder (tune.json, notes) made the
    saved head look like it belonged to another model."""
    import os
    import shutil

    small_dir = shutil.copytree(byte_pair_dirs[0], tmp_path / "small")
    revision = model_revision(None, str(small_dir))
    save_head(small_dir, _random_head(8), small_revision=revision, vocab_size=384, report={})
    for name in ("tune.json", "notes.txt", "eval_test.json", "README.md", "bild_policy.json"):
        (small_dir / name).write_text("{}")
    (small_dir / "results").mkdir()
    assert model_revision(None, str(small_dir)) == revision
    load_fallback_head(small_dir, revision)
    # a copy as `cp -r` makes it (new modification times) is the same model, head included
    copied = shutil.copytree(small_dir, tmp_path / "copied", copy_function=shutil.copy)
    os.utime(copied / "model.safetensors", ns=(1, 1))
    assert model_revision(None, str(copied)) == revision
    load_fallback_head(copied, model_revision(None, str(copied)))
    weights = small_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert model_revision(None, str(small_dir)) != revision  # new weights: another model
    with pytest.raises(UserError, match="another version"):
        load_fallback_head(small_dir, model_revision(None, str(small_dir)))
