"""BiLD through transformers' own `generate` (custom_generate): the callable, the package's
folder and an exported folder give exactly `bild_generate`'s tokens; refusals are by name."""

import pytest
import torch
from transformers import ByT5Tokenizer, LogitsProcessorList, StoppingCriteriaList
from transformers.generation import MaxTimeCriteria, RepetitionPenaltyLogitsProcessor

import bild_align
from bild_align import bild_generate, speculative_generate
from bild_align.cli import main
from bild_align.core.policies import BiLDPolicy
from bild_align.models.fallback_heads import HEAD_FILE as HEAD
from bild_align.models.saved_policy import save_policy
from bild_align.models.toy import deepen, deepen_llama, random_llama, random_t5


def _t5_pair(seed):
    small = random_t5(confidence=8.0, seed=seed)
    return small, deepen(small, extra_layers=3, eps=0.1, head_noise=0.3, seed=seed + 1)


def _llama_pair(seed):
    small = random_llama(confidence=6.0, seed=seed)
    return small, deepen_llama(small, extra_layers=2, eps=0.1, seed=seed + 1)


PAIRS = {"t5": _t5_pair, "llama": _llama_pair}


def _inputs(rows, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 120, (rows, 9), generator=generator)
    mask = torch.ones_like(ids)
    if rows > 1:  # the second row is shorter: padded on the left (decoder-only convention)
        mask[1, :3] = 0
        ids[1, :3] = 0
    return ids, mask


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export") / "bild"
    assert main(["export-generate", str(folder)]) == 0
    return str(folder)


def _entries(exported):
    return {
        "callable": (bild_align.generate_bild, {}),
        "package folder": (bild_align.CUSTOM_GENERATE, {"trust_remote_code": True}),
        "exported folder": (exported, {"trust_remote_code": True}),
    }


@pytest.mark.parametrize("kind", sorted(PAIRS))
@pytest.mark.parametrize("rows", [1, 2])
def test_generate_gives_bild_generates_tokens(kind, rows, exported):
    for seed in (0, 5):
        small, large = PAIRS[kind](seed)
        ids, mask = _inputs(rows, seed)
        settings = {"fallback_threshold": 0.7, "rollback_threshold": 1.5, "max_small_steps": 5}
        expected = bild_generate(small, large, ids, mask, max_new_tokens=14, **settings)
        greedy = large.generate(input_ids=ids, attention_mask=mask, max_new_tokens=14)
        for name, (entry, extra) in _entries(exported).items():
            out = large.generate(
                input_ids=ids, attention_mask=mask, assistant_model=small, custom_generate=entry,
                max_new_tokens=14, return_dict_in_generate=True, **settings, **extra,
            )  # fmt: skip
            assert torch.equal(out.sequences, expected.sequences), (name, seed)
            assert out.bild_stats == expected.stats and out.from_small == expected.from_small
            assert len(out.bild_row_stats) == rows
            exact = large.generate(
                ids, attention_mask=mask, assistant_model=small, custom_generate=entry,
                max_new_tokens=14, rollback_threshold=0, **extra,
            )  # fmt: skip
            assert torch.equal(exact, greedy), (name, seed)


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_speculative_sampling_and_max_length_follow_generate(kind):
    small, large = PAIRS[kind](2)
    ids, mask = _inputs(2, 2)
    common = {"input_ids": ids, "attention_mask": mask, "assistant_model": small}
    common["custom_generate"] = bild_align.generate_bild
    greedy = large.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10)
    speculative = large.generate(
        **common, speculative=True, num_assistant_tokens=3, max_new_tokens=10
    )  # noqa: E501
    assert torch.equal(speculative, greedy)
    assert torch.equal(
        speculative,
        speculative_generate(small, large, ids, mask, gamma=3, max_new_tokens=10).sequences,
    )
    # sampling reads do_sample / temperature / top_k / top_p as generate does (top_k 50 default)
    sampled = large.generate(
        **common, do_sample=True, temperature=0.8, top_p=0.9, seed=3, max_new_tokens=10
    )  # noqa: E501
    expected = bild_generate(
        small, large, ids, mask, do_sample=True, temperature=0.8, top_k=50, top_p=0.9, seed=3,
        max_new_tokens=10,
    )  # fmt: skip
    assert torch.equal(sampled, expected.sequences)
    # without max_new_tokens, generate's max_length (20, counting the prompt) rules
    by_length = large.generate(**common, rollback_threshold=0, max_length=15)
    assert torch.equal(by_length, large.generate(input_ids=ids, attention_mask=mask, max_length=15))


def test_a_saved_policy_is_used_without_thresholds(tmp_path):
    small, large = _t5_pair(1)
    small.save_pretrained(tmp_path / "small")
    large.save_pretrained(tmp_path / "large")
    small = type(small).from_pretrained(tmp_path / "small").eval()
    large = type(large).from_pretrained(tmp_path / "large").eval()
    policy = BiLDPolicy(0.9, 0.5, 3, "entropy")
    from bild_align.models.loading import model_revision

    pair = {"large": "L", "large_revision": model_revision(large, str(tmp_path / "large"))}
    save_policy(tmp_path / "small", policy, pair={**pair, "vocab_size": 128}, tuned={})
    ids, mask = _inputs(2, 1)
    common = {"input_ids": ids, "attention_mask": mask, "assistant_model": small}
    common.update(custom_generate=bild_align.generate_bild, max_new_tokens=12)
    out = large.generate(**common, return_dict_in_generate=True)
    tuned = bild_generate(small, large, ids, mask, policy=policy, max_new_tokens=12, vocab_size=128)
    assert torch.equal(out.sequences, tuned.sequences) and out.bild_stats == tuned.stats
    default = bild_generate(small, large, ids, mask, max_new_tokens=12)
    assert out.bild_stats != default.stats  # the saved policy made a difference
    given = large.generate(**common, rollback_threshold=2.0, return_dict_in_generate=True)
    assert given.bild_stats == default.stats  # thresholds given: the saved policy is not read
    # a policy tuned against another large model is refused, naming the pair it was made for
    save_policy(
        tmp_path / "small",
        policy,
        pair={**pair, "large_revision": "x", "vocab_size": 128},
        tuned={},
    )  # noqa: E501
    with pytest.raises(ValueError, match="tuned with the large model L"):
        large.generate(**common)


REFUSALS = [
    ({"num_beams": 2}, "num_beams=2"),
    ({"num_return_sequences": 2, "do_sample": True}, "num_return_sequences"),
    ({"repetition_penalty": 1.3}, "repetition_penalty=1.3"),
    ({"output_scores": True, "return_dict_in_generate": True}, "output_scores=True"),
    ({"min_new_tokens": 3}, "min_new_tokens=3"),
    (
        {"logits_processor": LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.2)])},
        "RepetitionPenaltyLogitsProcessor",
    ),
    ({"stopping_criteria": StoppingCriteriaList([MaxTimeCriteria(5.0)])}, "MaxTimeCriteria"),
    ({"speculative": True, "rollback_threshold": 1.0}, "rollback_threshold"),
    ({"num_assistant_tokens": 3}, "num_assistant_tokens"),
]


@pytest.mark.parametrize("entry", ["callable", "package folder"])
def test_what_bild_cannot_honour_is_refused_by_name(entry):
    small, large = _t5_pair(0)
    ids, mask = _inputs(1, 0)
    custom, extra = _entries("unused")[entry]
    base = {"input_ids": ids, "attention_mask": mask, "custom_generate": custom, **extra}
    for arguments, name in REFUSALS:
        with pytest.raises(ValueError, match=name):  # noqa: PT012
            large.generate(**base, assistant_model=small, max_new_tokens=5, **arguments)
            pytest.fail(f"not refused: {arguments}")
    with pytest.raises(ValueError, match="assistant_model=small"):
        large.generate(**base, max_new_tokens=5)
    vocab = {f"t{i}": i for i in range(128)}

    class Tokenizer:  # two tokenizers that differ in one id
        def __init__(self, vocabulary):
            self.vocabulary = vocabulary

        def get_vocab(self):
            return self.vocabulary

        def __len__(self):
            return len(self.vocabulary)

    with pytest.raises(ValueError, match="vocabularies differ"):
        large.generate(**base, assistant_model=random_t5(vocab_size=100), max_new_tokens=5)
    if entry == "callable":
        return  # transformers hands a callable no tokenizers: the folder route checks them
    with pytest.raises(ValueError, match="tokenizers differ"):
        large.generate(
            **base, assistant_model=small, max_new_tokens=5, tokenizer=Tokenizer(vocab),
            assistant_tokenizer=Tokenizer({**vocab, "t0": 127, "t127": 0}),
        )  # fmt: skip


def test_the_text_generation_pipeline_passes_bild_through():
    from transformers import pipeline

    tokenizer = ByT5Tokenizer()
    small = random_llama(vocab_size=384, confidence=6.0, seed=0)
    large = deepen_llama(small, extra_layers=2, seed=1)
    pipe = pipeline("text-generation", model=large, tokenizer=tokenizer)
    texts = ["Hallo Welt", "Guten Morgen, wie geht es?"]
    greedy = pipe(texts, max_new_tokens=8, do_sample=False, batch_size=2)
    entries = _entries("unused")
    for entry, extra in (entries["callable"], entries["package folder"]):
        out = pipe(
            texts, max_new_tokens=8, do_sample=False, batch_size=2, custom_generate=entry,
            assistant_model=small, rollback_threshold=0, **extra,
        )  # fmt: skip
        assert out == greedy


def test_export_generate_refuses_a_folder_of_other_files(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["export-generate", str(tmp_path / "mine")]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert main(["export-generate", str(tmp_path / "new")]) == 0
    assert main(["export-generate", str(tmp_path / "new")]) == 0  # an earlier export: rewritten
    card = (tmp_path / "new" / "README.md").read_text()
    assert "custom_generate" in card and f'custom_generate="{tmp_path / "new"}"' in card
    assert main(["export-generate", str(tmp_path / "x"), "--private"]) == 2
    assert "--push-to-hub" in capsys.readouterr().err


def test_a_policy_saved_in_the_small_models_hub_repository_is_fetched(tmp_path, monkeypatch):
    import huggingface_hub

    import bild_align.models.hf_generate as hf_generate
    from bild_align.models.loading import model_revision

    small, large = _t5_pair(3)
    policy = BiLDPolicy(0.95, 0.3, 2, "max_prob")
    pair = {"large": "L", "large_revision": model_revision(large, "me/large"), "vocab_size": 128}
    save_policy(tmp_path, policy, pair=pair, tuned={})
    fetched = []

    def download(repo_id, filename, revision=None):
        fetched.append((repo_id, filename))
        if not (tmp_path / filename).is_file():
            raise FileNotFoundError(filename)  # what the Hub says for a file it lacks
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(hf_generate, "_HUB_POLICY_FOLDERS", {})
    small.config._name_or_path, large.config._name_or_path = "me/aligned", "me/large"
    ids, mask = _inputs(2, 3)
    for _ in range(2):  # fetched once per process
        out = large.generate(
            input_ids=ids, attention_mask=mask, assistant_model=small, max_new_tokens=10,
            custom_generate=bild_align.generate_bild,
        )  # fmt: skip
        expected = bild_generate(small, large, ids, mask, policy=policy, max_new_tokens=10)
        assert torch.equal(out, expected.sequences)
    assert fetched == [("me/aligned", "bild_policy.json"), ("me/aligned", HEAD)]


@pytest.mark.parametrize("own", ["README.md", "custom_generate/generate.py"])
def test_export_generate_never_replaces_the_users_own_files(tmp_path, capsys, own):
    """A new-user finding: a folder holding the user's README.md (a name an export also
    writes) was taken for an earlier export and overwritten."""
    mine = tmp_path / "mine" / own
    mine.parent.mkdir(parents=True)
    mine.write_text("my own")
    assert main(["export-generate", str(tmp_path / "mine")]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert mine.read_text() == "my own"


def test_publishing_offline_suggests_only_what_can_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_value")
    folder = tmp_path / "gen"
    assert main(["export-generate", str(folder), "--push-to-hub", "me/bild"]) == 2
    err = capsys.readouterr().err
    # the folder the message says to upload was written
    assert f"hf upload me/bild {folder}" in err and (folder / "README.md").is_file()
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    assert main(["push", str(tmp_path / "model"), "--repo", "me/x"]) == 2
    err = capsys.readouterr().err
    assert "--repo me/x: cannot reach the Hub" in err and "--push-to-hub" not in err
    assert "bild-align push" not in err


@pytest.mark.parametrize("route", ["callable", "folder"])
def test_a_streamer_is_refused_on_both_routes(route):
    """A new-user finding: the callable route (transformers drops the streamer before calling
    it) accepted a streamer and never fed it."""
    from transformers.generation.streamers import BaseStreamer

    import bild_align

    class Collect(BaseStreamer):
        def put(self, value):
            pass

        def end(self):
            pass

    small, large = _t5_pair(5)
    custom = bild_align.generate_bild if route == "callable" else bild_align.CUSTOM_GENERATE
    extra = {} if route == "callable" else {"trust_remote_code": True}
    with pytest.raises(ValueError, match="cannot honour streamer"):
        large.generate(
            torch.tensor([[5, 6, 7, 1]]), assistant_model=small, custom_generate=custom,
            streamer=Collect(), max_new_tokens=4, rollback_threshold=0, **extra,
        )  # fmt: skip
