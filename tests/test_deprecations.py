"""No deprecated transformers call from our code; the README's offline snippet as written."""

import logging
from pathlib import Path

from bild_align.cli import main
from bild_align.configs import CalibrateConfig, EvalConfig
from bild_align.pipeline.calibrate.command import run_calibration
from bild_align.pipeline.eval.command import run_eval
from bild_align.testing.helpers import (
    byte_level_model,
    save_with_byte_tokenizer,
)
from bild_align.testing.helpers import calibrate_pairs as _calibrate
from bild_align.testing.helpers import one_error_line as _one_error_line
from bild_align.testing.helpers import pairs_eval_config as _config

README = Path(__file__).resolve().parents[1] / "README.md"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_no_generation_config_deprecation_from_our_generate_calls(byte_pair_dirs, pairs, tmp_path):
    import transformers
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig

    collect = _Collect()
    logger = logging.getLogger("transformers")
    logger.addHandler(collect)
    transformers.logging.set_verbosity_warning()
    try:
        config = _config(*byte_pair_dirs, pairs, tmp_path / "r.json")
        run_eval(EvalConfig(**{**config.__dict__, "baselines": ("large", "small", "assisted")}))
        run_calibration(
            CalibrateConfig(
                large=str(byte_pair_dirs[1]), task=str(pairs), source_column="de",
                max_new_tokens=6, output=str(tmp_path / "cal"),
            )
        )  # fmt: skip
        assert not [m for m in collect.messages if "Passing `generation_config` together" in m]
        # the check can fail: a call passing both is seen
        model = AutoModelForSeq2SeqLM.from_pretrained(byte_pair_dirs[0])
        ids = model.generate(
            input_ids=model.dummy_inputs["input_ids"][:1],
            generation_config=GenerationConfig(decoder_start_token_id=0, eos_token_id=1),
            max_new_tokens=2,
            min_new_tokens=1,
        )
        assert ids.shape[0] == 1
        assert [m for m in collect.messages if "Passing `generation_config` together" in m]
    finally:
        logger.removeHandler(collect)


def test_the_readme_offline_snippet_loads_the_demo_pair_as_float32(monkeypatch, capsys):
    import torch

    library = README.read_text().split("## Library use", 1)[1].split("\n## ", 1)[0]
    snippet = next(
        block.split("```", 1)[0]
        for block in library.split("```python")[1:]
        if "data/demo" in block.split("```", 1)[0]
    )
    monkeypatch.chdir(README.parent)  # the snippet's paths are relative to the checkout
    namespace: dict = {}
    exec(snippet, namespace)  # noqa: S102 - the README's own code
    large, batch, out = namespace["large"], namespace["batch"], namespace["out"]
    assert large.dtype == torch.float32 and namespace["small"].dtype == torch.float32
    expected = large.generate(**batch, do_sample=False, max_new_tokens=128)
    assert out.sequences.tolist() == expected.tolist()
    assert capsys.readouterr().out.strip()


def test_a_bad_switch_word_names_the_words_that_work(capsys):
    assert main(["train", "--recipe", "recipes/demo-align.yaml", "--bf16", "maybe"]) == 2
    _one_error_line(capsys, "argument --bf16: expected true or false, got 'maybe'")


def test_bench_never_replaces_a_file_that_is_not_bench_results(tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    assert main(["bench", "--preset", "tiny", "--output", str(notes)]) == 2
    _one_error_line(capsys, "holds something other than bild-align bench results")
    assert notes.read_text() == '{"mine": true}'


def test_calibrate_does_not_resume_with_other_weights_in_the_large_folder(pairs, tmp_path, capsys):
    large = save_with_byte_tokenizer(byte_level_model(num_layers=1, seed=3), tmp_path / "large")
    output = tmp_path / "cal"
    assert _calibrate(large, pairs, output) == 0
    byte_level_model(num_layers=1, seed=12).save_pretrained(large)  # retrained in place
    assert _calibrate(large, pairs, output) == 2
    _one_error_line(capsys, "differs in: large_model_revision")
