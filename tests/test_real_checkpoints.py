"""What real checkpoints do that tiny default models do not: padded vocabularies, sliding
windows, float16-unsafe architectures, missing tokenizer files, checkpoint generation configs."""

import shutil

import pytest
import torch
from transformers import GenerationConfig

from bild_align import autoregressive_generate, bild_generate, speculative_generate
from bild_align.cli import main
from bild_align.models.loading import ModelLoadError, load_seq2seq, use_plain_generation
from bild_align.models.toy import deepen_llama, random_llama, random_t5


def _pad_vocabulary(model, rows: int):
    """Pad the output embeddings with zero rows, as checkpoints padded for speed are."""
    shared = model.lm_head.weight.shape[0]
    model.resize_token_embeddings(rows)
    with torch.no_grad():
        model.lm_head.weight[shared:] = 0.0
    return model.eval()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_padded_vocabularies_decode_over_the_shared_ids(seed):
    small = random_llama(vocab_size=64, hidden_size=32, num_layers=1, confidence=8.0, seed=seed)
    large = _pad_vocabulary(deepen_llama(small, extra_layers=2, eps=0.3, seed=seed), 80)
    prompt = torch.randint(2, 64, (1, 5), generator=torch.Generator().manual_seed(seed))
    with pytest.raises(ValueError, match="vocab_size=len"):
        bild_generate(small, large, prompt, max_new_tokens=4)
    with pytest.raises(ValueError, match="exceeds the output embeddings"):
        bild_generate(small, large, prompt, max_new_tokens=4, vocab_size=80)
    expected = large.generate(prompt, do_sample=False, max_new_tokens=20, min_new_tokens=20)
    assert int(expected.max()) < 64  # padded ids are never the large model's choice
    for fb in (0.0, 0.6, 2.0):
        out = bild_generate(
            small, large, prompt, rollback_threshold=0, fallback_threshold=fb,
            max_new_tokens=20, vocab_size=64,
        )  # fmt: skip
        length = out.sequences.shape[1]
        assert out.sequences.tolist() == expected[:, :length].tolist()
    out = speculative_generate(small, large, prompt, max_new_tokens=20, vocab_size=64)
    assert out.sequences.tolist() == expected[:, : out.sequences.shape[1]].tolist()


def _random_mistral(layers: int, seed: int, window: int = 4):
    return random_llama(
        vocab_size=64, hidden_size=32, num_layers=layers, confidence=6.0, eos_weight=0.1,
        seed=seed, sliding_window=window,
    )  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
def test_rollbacks_past_a_sliding_window(seed):
    small, large = _random_mistral(1, seed), _random_mistral(2, seed + 10)
    prompt = torch.randint(2, 64, (1, 3), generator=torch.Generator().manual_seed(seed))
    expected = large.generate(prompt, do_sample=False, max_new_tokens=24)
    out = bild_generate(
        small, large, prompt, rollback_threshold=0, fallback_threshold=0, max_new_tokens=24
    )
    assert out.stats.rollbacks > 2 and out.sequences.shape[1] > 3 + 4  # rolled back past it
    assert out.sequences.tolist() == expected.tolist()
    out = bild_generate(small, large, prompt, rollback_threshold=1.0, max_new_tokens=24)
    assert out.stats.generated == out.sequences.shape[1] - 3


def test_float16_is_refused_for_t5_everywhere(byte_model_dir, byte_pair_dirs, tmp_path, capsys):
    with pytest.raises(ModelLoadError, match="bfloat16"):
        load_seq2seq(str(byte_model_dir), dtype="float16", device="cpu")
    small, large = map(str, byte_pair_dirs)
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"source": "a b", "target": "c"}\n')
    commands = [
        ["calibrate", "--large", large, "--task", str(pairs), "--output", str(tmp_path / "c")],
        ["eval", "--small", small, "--large", large, "--task", str(pairs)],
        ["chat", "--small", small, "--large", large],
        ["bench", "--preset", "tiny"],
    ]
    for argv in commands:
        assert main([*argv, "--dtype", "float16"]) == 2, argv
        err = capsys.readouterr().err
        assert "overflow in float16" in err and "bfloat16" in err, argv
    assert not (tmp_path / "c").exists()


def test_model_directory_without_tokenizer_is_refused(byte_model_dir, tmp_path, capsys):
    from transformers import AutoModelForSeq2SeqLM, T5Tokenizer

    # a SentencePiece-style model directory whose tokenizer files were not copied: transformers
    # then builds a tokenizer with no vocabulary, and every output would decode to ""
    folder = tmp_path / "no-tokenizer"
    AutoModelForSeq2SeqLM.from_pretrained(byte_model_dir).save_pretrained(folder)
    shutil.copy(byte_model_dir / "config.json", folder / "config.json")
    assert not list(folder.glob("*token*"))
    with pytest.raises(ModelLoadError, match="knows no words"):
        load_seq2seq(str(folder), device="cpu")
    del T5Tokenizer


def test_device_and_path_mistakes(byte_model_dir, tmp_path, capsys, monkeypatch):
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"source": "a b", "target": "c"}\n')
    model = str(byte_model_dir)
    assert main(["eval", "--small", model, "--large", model, "--task", str(pairs),
                 "--device", "gpu0"]) == 2  # fmt: skip
    assert "unknown device 'gpu0'" in capsys.readouterr().err
    # a misspelt folder inside an existing one looks like a Hub id (one slash) but is named
    # as a missing directory at once, with the closest existing names
    monkeypatch.chdir(byte_model_dir.parent.parent)
    folder, name = byte_model_dir.parent.name, byte_model_dir.name
    for typo in (f"{folder}/{name[:-1]}", f"./{folder}/{name}x"):
        assert main(["eval", "--small", model, "--large", typo, "--task", str(pairs)]) == 2
        err = capsys.readouterr().err
        assert "does not exist; did you mean" in err and name in err and "Hub" not in err, err
    # a quoted ~/dir is a local directory
    monkeypatch.setenv("HOME", str(byte_model_dir.parent))
    model_in_home = f"~/{byte_model_dir.name}"
    out = tmp_path / "r.json"
    argv = ["eval", "--small", model_in_home, "--large", model_in_home, "--task", str(pairs)]
    assert main([*argv, "--baselines", "large", "--max-new-tokens", "4", "--output", str(out)]) == 0


def test_checkpoint_logits_processors_are_not_applied(byte_model_dir):
    """A checkpoint whose generation config asks for processors our decoders do not apply
    (BART-CNN-style) is compared under the same plain greedy settings."""
    model, _, _ = load_seq2seq(str(byte_model_dir), device="cpu")
    asks = dict(
        no_repeat_ngram_size=1, repetition_penalty=5.0, min_new_tokens=11, suppress_tokens=[40]
    )
    model.generation_config = GenerationConfig(
        decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, **asks
    )
    recorded = use_plain_generation(model)
    assert recorded["ignored_checkpoint_settings"] == asks
    assert model.generation_config.eos_token_id == 1
    for source in ([70, 80, 90, 1], [100, 101, 1], [5, 1]):
        ids = torch.tensor([source])
        out = model.generate(ids, do_sample=False, num_beams=1, max_new_tokens=12)
        ours = bild_generate(model, model, ids, rollback_threshold=0, max_new_tokens=12)
        assert out.tolist() == ours.sequences.tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device beside the CPU")
def test_sampling_with_the_two_models_on_different_devices():
    small = random_llama(vocab_size=64, hidden_size=32, num_layers=1, confidence=4.0, seed=0)
    large = deepen_llama(small, extra_layers=2, eps=0.3, seed=0).cuda()
    prompt = torch.randint(2, 64, (1, 5), generator=torch.Generator().manual_seed(0))
    for decode in (bild_generate, speculative_generate):
        out = decode(small, large, prompt, do_sample=True, seed=0, max_new_tokens=12)
        assert out.sequences.device.type == "cuda" and out.stats.generated > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_t5_on_cuda_keeps_the_exact_mode(dtype):
    """The lean T5 step in half precision on CUDA (its position bias once crashed the fused
    attention kernels there): rb=0 equals the large model alone, at every input length."""
    small = random_t5(vocab_size=96, d_model=64, num_layers=1, seed=0).to("cuda", dtype)
    large = random_t5(vocab_size=96, d_model=64, num_layers=2, seed=1).to("cuda", dtype)
    for length in (3, 7, 12):
        ids = torch.randint(2, 96, (1, length), generator=torch.Generator().manual_seed(length))
        ids = ids.cuda()
        alone = autoregressive_generate(large, ids, max_new_tokens=20)
        exact = bild_generate(small, large, ids, rollback_threshold=0, max_new_tokens=20)
        assert exact.sequences.tolist() == alone.sequences.tolist()
