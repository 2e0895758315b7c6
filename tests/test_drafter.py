"""Drafters made from the large model: built with its encoder and a few of its layers, loaded
by the Auto classes, tied to the large model's encoder, and encoding each input once."""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from bild_align import bild_generate, speculative_generate
from bild_align.errors import UserError
from bild_align.models.drafters import (
    build_drafter,
    chosen_layers,
    encoders_equal,
    save_drafter,
    shares_encoder,
    tie_shared_encoder,
)
from bild_align.models.loading import model_revision
from bild_align.models.toy import (
    deepen,
    deepen_bart,
    random_bart,
    random_inputs,
    random_llama,
    random_t5,
)


def _large(family):
    if family == "t5":
        small = random_t5(vocab_size=96, d_model=32, num_layers=2, confidence=6.0, seed=1)
        return deepen(small, extra_layers=2, eps=0.3, seed=2)
    if family == "bart":
        return deepen_bart(random_bart("bart", vocab_size=96, d_model=32, seed=1),
                           extra_layers=2, eps=0.3, seed=2)  # fmt: skip
    return random_llama(vocab_size=96, hidden_size=32, num_layers=4, confidence=4.0, seed=1)


class EncoderPasses(TorchFunctionMode):
    """Counts the products that read the encoder's first weight (the lean steps bypass the
    modules' forward, so hooks would miss them)."""

    def __init__(self, weight):
        super().__init__()
        self.pointer, self.count = weight.data_ptr(), 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("matmul", "__matmul__", "linear") and any(
            isinstance(a, torch.Tensor) and a.data_ptr() == self.pointer for a in args
        ):
            self.count += 1
        return func(*args, **(kwargs or {}))


def _first_encoder_weight(model):
    encoder = model.get_encoder()
    if hasattr(encoder, "block"):
        return encoder.block[0].layer[0].SelfAttention.q.weight
    return encoder.layers[0].self_attn.q_proj.weight


def test_layers_are_chosen_as_asked():
    assert chosen_layers(8, 2, "first-last") == [0, 7]
    assert chosen_layers(8, 4, "first-last") == [0, 1, 2, 7]
    assert chosen_layers(8, 3, "spread") == [0, 4, 7] or chosen_layers(8, 3, "spread") == [0, 3, 7]
    assert chosen_layers(8, 2, "first") == [0, 1]
    assert chosen_layers(8, 1, "first-last") == [0]
    for count in (0, -1, 9):
        with pytest.raises(UserError, match="decoder has 8 layers"):
            chosen_layers(8, count, "first-last")


@pytest.mark.parametrize("family", ["t5", "bart", "llama"])
def test_a_drafter_folder_loads_with_the_auto_classes(family, tmp_path):
    large = _large(family)
    drafter, layers = build_drafter(large, layers=2)
    record = save_drafter(drafter, None, tmp_path / "d", made_from={"large": "L"}, layers=layers,
                          init="first-last")  # fmt: skip
    auto = AutoModelForCausalLM if family == "llama" else AutoModelForSeq2SeqLM
    loaded = auto.from_pretrained(tmp_path / "d").eval()
    assert (tmp_path / "d" / "bild_drafter.json").is_file() and record["layers"] == layers
    if family == "llama":
        assert loaded.config.num_hidden_layers == 2
        torch.testing.assert_close(loaded.lm_head.weight, large.lm_head.weight)
        torch.testing.assert_close(
            loaded.model.layers[1].mlp.up_proj.weight, large.model.layers[3].mlp.up_proj.weight
        )
    else:
        assert encoders_equal(loaded, large)
        assert len(getattr(loaded.get_decoder(), "block", None) or loaded.get_decoder().layers) == 2


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_a_tied_drafter_encodes_each_input_once_and_rb0_is_exact(family, tmp_path):
    large = _large(family)
    drafter, layers = build_drafter(large, layers=1)
    save_drafter(drafter, None, tmp_path / "d", made_from={"large": "L", "large_revision": "r"},
                 layers=layers, init="first-last")  # fmt: skip
    small = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "d").eval()
    assert not tie_shared_encoder(small, large, str(tmp_path / "d"), "another large model")
    assert not shares_encoder(small, large)
    assert tie_shared_encoder(small, large, str(tmp_path / "d"), "r")
    assert shares_encoder(small, large)
    weight = _first_encoder_weight(large)
    for rows in (1, 3):
        ids = random_inputs(rows, vocab_size=96, seed=rows)
        ids = torch.nn.utils.rnn.pad_sequence([row[0] for row in ids], batch_first=True)
        mask = (ids != 0).long()
        for engine in ("auto", "transformers"):
            for sampled in ({}, {"do_sample": True, "seed": 3}):
                with EncoderPasses(weight) as passes:
                    out = bild_generate(small, large, ids, mask, rollback_threshold=0,
                                        max_new_tokens=8, engine=engine, **sampled)  # fmt: skip
                layers_read = passes.count
                per_pass = 1 if engine == "auto" else rows  # one product, or one per row
                assert layers_read == per_pass, (engine, rows, sampled, layers_read)
                if not sampled:
                    greedy = large.generate(ids, attention_mask=mask, do_sample=False,
                                            max_new_tokens=8)  # fmt: skip
                    got = out.sequences[:, : greedy.shape[1]]
                    assert torch.equal(got, greedy[:, : got.shape[1]])
        with EncoderPasses(weight) as passes:
            speculative_generate(small, large, ids, mask, max_new_tokens=6)
        assert passes.count == 1


def test_an_untied_pair_still_encodes_twice():
    large = _large("t5")
    small, _ = build_drafter(large, layers=1)
    weight = _first_encoder_weight(large)
    with EncoderPasses(weight) as passes:
        bild_generate(small, large, torch.tensor([[5, 6, 7, 1]]), max_new_tokens=4)
    assert passes.count == 1  # the large model's own pass; the small model's reads its copy
    assert not shares_encoder(small, large)


def test_other_architectures_are_named_as_unsupported():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UserError, match="supported: bart, llama"):
        build_drafter(model, layers=1)


def test_revision_of_a_drafter_folder_is_its_own(tmp_path):
    large = _large("t5")
    drafter, layers = build_drafter(large, layers=1)
    save_drafter(drafter, None, tmp_path / "d", made_from={}, layers=layers, init="first")
    assert model_revision(None, str(tmp_path / "d")).startswith("local:")


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--layers", "0"], "--layers must be 1 or more"),
        (["--layers", "-2"], "--layers must be 1 or more"),
        (["--layers", "9"], "decoder has 4 layers"),
        (["--init", "middle"], "--init middle: choose from"),
    ],
)
def test_drafter_mistakes_exit_2_and_write_nothing(tmp_path, capsys, extra, words):
    from bild_align.cli import main
    from bild_align.testing.helpers import byte_level_model, save_with_byte_tokenizer

    model = deepen(byte_level_model(num_layers=1, d_model=16, seed=1), extra_layers=3, seed=2)
    large = save_with_byte_tokenizer(model, tmp_path / "large")
    output = tmp_path / "out"
    assert main(["drafter", "--large", str(large), "--output", str(output), *extra]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("bild-align: error:") == 1 and "Traceback" not in err
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["large"]


def test_drafter_refuses_a_folder_of_files_a_file_and_a_missing_model(tmp_path, capsys):
    from bild_align.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    for output, words in ((mine, "holds files"), (tmp_path / "file", "is a file")):
        assert main(["drafter", "--large", "nothere", "--output", str(output)]) == 2
        assert words in capsys.readouterr().err
    assert main(["drafter", "--large", str(tmp_path / "nothere"), "--output",
                 str(tmp_path / "new")]) == 2  # fmt: skip
    assert capsys.readouterr().err.count("bild-align: error:") == 1
    assert not (tmp_path / "new").exists() and (mine / "notes.txt").read_text() == "mine"


def test_most_used_tokens_keeps_the_specials_and_the_commonest():
    from bild_align.models.drafters import most_used_tokens

    targets = [[5, 5, 6, 1], [5, 7, 7, 7, 1], [9, 1]]
    assert most_used_tokens(targets, k=4, always={0, 1}) == [0, 1, 5, 7]
    assert most_used_tokens(targets, k=5, always={0, 1}) == [0, 1, 5, 6, 7]  # 6 < 9 on a tie
    assert most_used_tokens(targets, k=50, always={0, 1}) == [0, 1, 5, 6, 7, 9]


def test_a_reduced_output_layer_scores_its_ids_and_nothing_else():
    from bild_align.core.engines.output_layer import ReducedOutputLayer, output_logits

    weight = torch.randn(50, 8)
    kept = torch.tensor([0, 1, 7, 30])
    layer = ReducedOutputLayer(weight, kept, vocab_size=50)
    hidden = torch.randn(3, 2, 8)
    logits = output_logits(hidden, layer)
    full = hidden @ weight.T
    assert logits.shape == (3, 2, 50)
    torch.testing.assert_close(logits[..., kept], full[..., kept])
    others = torch.ones(50, dtype=torch.bool)
    others[kept] = False
    assert (logits[..., others] == torch.finfo(logits.dtype).min).all()
    assert (torch.softmax(logits, -1)[..., others] == 0).all()


@pytest.mark.parametrize("family", ["t5", "bart", "llama"])
def test_a_drafter_with_a_reduced_vocabulary_keeps_the_exact_mode_exact(family, tmp_path):
    """Greedy drafts come from the kept ids only; rb=0 still gives the large model's greedy
    output, on the lean and the transformers engines, at batch 1 and in batches."""
    from bild_align.models.drafters import prepare_drafter
    from bild_align.testing.helpers import padded_batch

    large = _large(family)
    drafter, layers = build_drafter(large, layers=1)
    kept = list(range(0, 96, 2))  # every other id (EOS=1 dropped: drafts never end a row)
    save_drafter(drafter, None, tmp_path / "d", made_from={"large": "L", "large_revision": "r"},
                 layers=layers, init="first-last", vocab={"ids": kept})  # fmt: skip
    auto = AutoModelForCausalLM if family == "llama" else AutoModelForSeq2SeqLM
    small = auto.from_pretrained(tmp_path / "d").eval()
    prepared = prepare_drafter(small, large, str(tmp_path / "d"), "r")
    assert prepared == {"shares_encoder": family != "llama", "vocab": len(kept)}
    assert prepare_drafter(small, large, str(tmp_path / "d"), "r") is prepared  # once
    for seed, rows in ((0, 1), (1, 3), (2, 1)):
        ids, mask = padded_batch(seed, rows=rows, vocab_size=96, left=family == "llama")
        greedy = large.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=8)
        for engine in ("auto", "transformers"):
            out = bild_generate(small, large, ids, mask, rollback_threshold=0,
                                fallback_threshold=0.0, max_small_steps=4, max_new_tokens=8,
                                engine=engine)  # fmt: skip
            assert torch.equal(out.sequences[:, : greedy.shape[1]], greedy), (engine, seed)
            alone = bild_generate(small, large, ids, mask, fallback_threshold=0.0,
                                  rollback_threshold=1e9, max_small_steps=8, max_new_tokens=8,
                                  engine=engine)  # fmt: skip
            new = alone.sequences[:, ids.shape[1] if family == "llama" else 1 :].tolist()
            drafted = [
                token
                for row, marks in zip(new, alone.from_small, strict=True)
                for token, small_made in zip(row, marks, strict=False)
                if small_made
            ]
            assert drafted and all(token % 2 == 0 for token in drafted), (engine, seed)


def _calibration(folder, targets):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True)
    table = pa.table({"source": ["x"] * len(targets), "target": targets})
    pq.write_table(table, folder / "data" / "train-00000-of-00001.parquet")
    return folder


def test_drafter_vocab_size_keeps_the_calibration_tokens_end_to_end(tmp_path, capsys):
    """The command counts the calibration targets; load_pair (every command's loader) and
    generate's entry then score only those ids, and the drafter's record survives training."""
    import bild_align
    from bild_align.cli import main
    from bild_align.core.engines.output_layer import ReducedOutputLayer
    from bild_align.models.drafters import keep_drafter_record, read_record
    from bild_align.models.loading import load_pair
    from bild_align.testing.helpers import byte_level_model, save_with_byte_tokenizer

    model = deepen(byte_level_model(num_layers=1, d_model=16, seed=1), extra_layers=3, seed=2)
    large = save_with_byte_tokenizer(model, tmp_path / "large")
    calibration = _calibration(tmp_path / "calib", ["abba", "abc", "a b", ""])
    assert main(["drafter", "--large", str(large), "--output", str(tmp_path / "d"),
                 "--layers", "1", "--vocab-size", "6",
                 "--calibration-dataset", str(calibration)]) == 0  # fmt: skip
    assert "scores 6 tokens" in capsys.readouterr().out
    kept = read_record(tmp_path / "d")["vocab"]["ids"]
    # ByT5: pad 0, EOS 1, unk 2; then the bytes a (100), b (101), c or space (the ties' lower id)
    assert kept == [0, 1, 2, 35, 100, 101]
    pair = load_pair(str(tmp_path / "d"), str(large), dtype="float32", device="cpu")
    layer = pair.small.get_output_embeddings()
    assert isinstance(layer, ReducedOutputLayer) and layer.kept.tolist() == kept
    assert pair.small.get_encoder() is pair.large.get_encoder()

    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "d").eval()
    assert not isinstance(loaded.get_output_embeddings(), ReducedOutputLayer)  # a plain folder
    ids = torch.tensor([[100, 101, 35, 1]])
    out = pair.large.generate(ids, assistant_model=loaded, custom_generate=bild_align.generate_bild,
                              max_new_tokens=6, rollback_threshold=0)  # fmt: skip
    assert torch.equal(out, pair.large.generate(ids, max_new_tokens=6, do_sample=False))
    assert isinstance(loaded.get_output_embeddings(), ReducedOutputLayer)
    assert loaded.get_encoder() is pair.large.get_encoder()

    again = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "d").eval()
    assert bild_align.use_drafter(again, pair.large) == {"shares_encoder": True, "vocab": 6}
    assert isinstance(again.get_output_embeddings(), ReducedOutputLayer)
    keep_drafter_record(str(tmp_path / "d"), tmp_path / "trained")  # what train does at the end
    assert read_record(tmp_path / "trained")["vocab"]["ids"] == kept


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--vocab-size", "6"], "--vocab-size and --calibration-dataset go together"),
        (["--vocab-size", "384", "--calibration-dataset", "CALIB"], "the vocabulary has 384"),
        (["--vocab-size", "2", "--calibration-dataset", "CALIB"], "special tokens alone"),
        (["--vocab-size", "0", "--calibration-dataset", "CALIB"], "positive integer"),
        (["--vocab-size", "9", "--calibration-dataset", "nothere"], "nothere"),
    ],
)
def test_drafter_vocab_mistakes_exit_2_and_write_nothing(tmp_path, capsys, extra, words):
    from bild_align.cli import main
    from bild_align.testing.helpers import byte_level_model, save_with_byte_tokenizer

    model = deepen(byte_level_model(num_layers=1, d_model=16, seed=1), extra_layers=3, seed=2)
    large = save_with_byte_tokenizer(model, tmp_path / "large")
    calibration = _calibration(tmp_path / "calib", ["abc"])
    extra = [str(calibration) if item == "CALIB" else item for item in extra]
    output = tmp_path / "out"
    assert main(["drafter", "--large", str(large), "--output", str(output), *extra]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("bild-align: error:") == 1 and "Traceback" not in err
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["calib", "large"]
