"""One `bild-align tune` run's working state: the pair, the split's inputs sorted by length,
every setting's decodings (kept in the run's partial log, so that Ctrl-C loses none) and the
one-input-at-a-time timings the cost model is fitted on.

    session = TuneSession(config, task, output)   # loads the pair; resumes a partial log
    record = session.decoded(setting, progress)   # {"key", "outputs", "counts"}
    timings = session.time_rows(["large", "small", setting])   # [setting][row] -> (s, counts)
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tqdm.auto import tqdm

from bild_align.configs import TuneConfig
from bild_align.core.decoding import autoregressive_generate, bild_generate
from bild_align.core.policies import BiLDPolicy
from bild_align.data.prompts import Prompter
from bild_align.data.tasks import load_rows
from bild_align.measure.timing import timed
from bild_align.models.batched_generate import chunked, length_sorted
from bild_align.models.fallback_heads import HEAD_FILE, load_fallback_head
from bild_align.models.loading import fit_lengths, load_pair, resolve_device, use_plain_generation
from bild_align.pipeline.tune.search import (
    cost_features,
    fit_costs,
    modelled_seconds,
    setting_key,
    setting_of,
)
from bild_align.runs.records import PartialLog

# settings that change no decoding: a rerun with other values reuses the kept decodings
NOT_IN_DECODINGS = (
    "output", "save", "refine", "max_drop", "min_quality", "confidence", "bootstrap", "seed",
    "timing_rows",
)  # fmt: skip

logger = logging.getLogger(__name__)  # notes; the command line shows them on stderr


class TuneSession:
    """One tune run's models, inputs, finished decodings and partial file."""

    def __init__(self, config: TuneConfig, task, output: Path) -> None:
        self.config = config
        rows = load_rows(task, config.split, config.max_samples)
        self.device = resolve_device(config.device)
        pair = load_pair(config.small, config.large, dtype=config.dtype, device=self.device)
        self.small, self.large, self.tokenizer = pair.small, pair.large, pair.tokenizer
        self.vocab_size = pair.vocab_size
        small_revision, large_revision = pair.small_revision, pair.large_revision
        self.prompter = Prompter.for_model(
            self.large, task, config.prompt_template, config.chat_template
        )
        self.prompter.check_tokenizer(self.tokenizer)
        self.max_source_length, self.max_new_tokens = fit_lengths(
            {config.large: self.large, config.small: self.small},
            config.max_source_length,
            config.max_new_tokens,
            defaults=(task.max_source_length, task.max_target_length),
        )
        if config.max_source_length is None:  # a default leaves room for prompt and output
            self.max_source_length = self.prompter.source_room(
                self.tokenizer, self.large, self.max_source_length, self.max_new_tokens
            )
        use_plain_generation(self.large)
        use_plain_generation(self.small)
        self.rules, self.head = search_rules(config, small_revision)
        self.references = list(rows["reference"])
        self.metric = task.metric if all(self.references) else "bleu"
        # what the model reads (decoder-only: the prompts), sorted and batched by length
        self.sources = self.prompter.row_inputs(self.tokenizer, rows, self.max_source_length)
        lengths = self.prompter.input_lengths(self.tokenizer, self.sources, self.max_source_length)
        self.prompter.check_fits(self.large, max(lengths), self.max_new_tokens)
        self.order = length_sorted(lengths)  # batches of similar length pad little
        self.pair = {
            "large": config.large,
            "large_revision": large_revision,
            "small": config.small,
            "small_revision": small_revision,
            "vocab_size": self.vocab_size,
        }
        fingerprint = {
            **{k: v for k, v in asdict(config).items() if k not in NOT_IN_DECODINGS},
            **self.pair,
            "ids": list(rows["id"]),
            "max_new_tokens": self.max_new_tokens,
            **(self.prompter.describe() if self.prompter.decoder_only else {}),
        }
        self.log = PartialLog(output, "the decodings of an earlier or interrupted tune")
        records, _ = self.log.open(fingerprint)
        self.done = {r["key"]: r for r in records if isinstance(r, dict) and "key" in r}

    def encode(self, indices: list[int]):
        texts = [self.sources[index] for index in indices]
        return self.prompter.encode_inputs(self.tokenizer, texts, self.max_source_length).to(
            self.device
        )

    def generate(self, setting: BiLDPolicy | str, input_ids, attention_mask):
        if setting == "generate":  # eval's reference: transformers' own greedy generate
            sequences = self.large.generate(
                input_ids,
                attention_mask=attention_mask,
                do_sample=False,
                num_beams=1,
                max_new_tokens=self.max_new_tokens,
            )
            return SimpleNamespace(sequences=sequences, stats=None)
        if setting == "large":
            return autoregressive_generate(
                self.large, input_ids, attention_mask, max_new_tokens=self.max_new_tokens
            )
        if setting == "small":
            return autoregressive_generate(
                self.small, input_ids, attention_mask, max_new_tokens=self.max_new_tokens
            )
        return bild_generate(
            self.small,
            self.large,
            input_ids,
            attention_mask,
            policy=setting,
            max_new_tokens=self.max_new_tokens,
            vocab_size=self.vocab_size,
        )

    def decoded(self, setting: BiLDPolicy | str, progress) -> dict:
        """Every row's output and the summed counts, decoded in batches (or kept from before)."""
        key = setting if isinstance(setting, str) else setting_key(setting)
        if key in self.done:
            progress.update(len(self.sources))
            return self.done[key]
        outputs, counts = [""] * len(self.sources), {}
        with torch.inference_mode():
            for indices in chunked(self.order, self.config.search_batch_size):
                batch = self.encode(indices)
                out = self.generate(setting, batch.input_ids, batch.attention_mask)
                texts = self.prompter.completions(self.tokenizer, out.sequences, batch.input_ids)
                for index, text in zip(indices, texts, strict=True):
                    outputs[index] = text
                for name, value in asdict(out.stats).items():
                    counts[name] = counts.get(name, 0) + value
                progress.update(len(indices))
        record = {"key": key, "outputs": outputs, "counts": counts}
        self.log.append(record)
        self.done[key] = record
        return record

    def time_rows(self, settings: list) -> list[list[tuple[float, dict]]]:
        """Each setting timed one input at a time on the same rows, interleaved per row:
        [setting][row] -> (seconds, counts)."""
        count = min(self.config.timing_rows, len(self.sources))
        rows = np.linspace(0, len(self.sources) - 1, count).round().astype(int).tolist()
        timings = [[] for _ in settings]
        with torch.inference_mode():
            first = self.encode([rows[0]])
            for setting in settings:  # warm-up
                self.generate(setting, first.input_ids, first.attention_mask)
            for row in tqdm(rows, desc="timing", unit="input"):
                batch = self.encode([row])
                for place, setting in enumerate(settings):
                    seconds, out = timed(
                        lambda s=setting, b=batch: self.generate(s, b.input_ids, b.attention_mask),
                        self.device,
                    )
                    stats = None if out.stats is None else asdict(out.stats)
                    timings[place].append((seconds, stats))
        return timings

    def measure_speedups(self, chosen: dict, points: list[dict], also=()) -> None:
        """Time the chosen setting, its neighbours on the front and the points `also` against
        the large model, one input at a time, interleaved; their measured speedups go beside
        the modelled ones."""
        front = sorted(
            (p for p in points if p["on_front"] and p["method"] == "bild"),
            key=lambda p: p["speedup"],
        )
        place = next((i for i, p in enumerate(front) if p["key"] == chosen["key"]), None)
        checked = [chosen]
        if place is not None:
            checked += [front[i] for i in (place - 1, place + 1) if 0 <= i < len(front)]
        checked += [point for point in also if point not in checked]
        settings = [setting_of(point, self.head) for point in checked]
        timings = self.time_rows(["generate", "large", *settings])
        generate, large = (sum(seconds for seconds, _ in runs) for runs in timings[:2])
        for point, runs in zip(checked, timings[2:], strict=True):
            mine = sum(seconds for seconds, _ in runs)
            point["measured_speedup"] = generate / mine
            point["measured_speedup_same_engine"] = large / mine

    def fit_cost_model(self, grid: list[BiLDPolicy]) -> dict:
        """Time transformers' generate of the large model (eval's reference), the large and the
        small model alone on the decoders' engine, and two settings (the first and the last of
        the grid), one input at a time, interleaved; fit each decision's cost, and how much
        slower generate is than the large model alone on the engine."""
        timed_settings = ["generate", "large", "small", grid[0], grid[-1]]
        timings = self.time_rows(timed_settings)
        features, seconds = [], []
        for setting, runs in zip(timed_settings[1:], timings[1:], strict=True):
            for elapsed, counts in runs:
                features.append(_features(setting, counts, 1))
                seconds.append(elapsed)
        costs = fit_costs(features, seconds)
        generate, large = (sum(elapsed for elapsed, _ in runs) for runs in timings[:2])
        return {"seconds_per_unit": costs, "generate_over_large": generate / large}

    def speedup(self, key, costs: dict) -> float:
        """The modelled time of transformers' generate of the large model (its measured ratio to
        the large model alone on the engine) over the setting's modelled time."""
        per_unit = costs["seconds_per_unit"]
        rows = len(self.sources)
        counts = self.done["large"]["counts"]
        large = modelled_seconds(per_unit, _features("large", counts, rows))
        record = self.done[key if isinstance(key, str) else setting_key(key)]
        mine = modelled_seconds(per_unit, _features(key, record["counts"], rows))
        return large * costs["generate_over_large"] / mine if mine > 0 else 0.0


def search_rules(config: TuneConfig, small_revision: str) -> tuple[tuple[str, ...], object]:
    """The fallback rules to search, and the learned rule's head: without a head beside the
    small model the learned rule is left out (and said so), or refused when it is the only
    rule asked for."""
    rules = config.fallback_rule
    if "learned" not in rules:
        return rules, None
    if (Path(config.small).expanduser() / HEAD_FILE).is_file() or rules == ("learned",):
        return rules, load_fallback_head(config.small, small_revision)
    logger.info(
        "note: %s has no fallback head (%s): the learned rule is left out; `bild-align train "
        "--recipe R --fallback-head-only` trains one",
        config.small,
        HEAD_FILE,
    )
    return tuple(rule for rule in rules if rule != "learned"), None


def _features(setting: BiLDPolicy | str, counts: dict, rows: int) -> list[float]:
    if setting == "small":  # the small model alone counts its steps as large calls
        counts = {**counts, "small_steps": counts["large_calls"], "large_calls": 0}
    return cost_features(
        counts,
        uses_small=rows * (setting != "large"),
        uses_large=rows * (setting != "small"),
    )
