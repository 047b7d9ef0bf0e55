"""BERT-style pretraining examples: documents -> sentences -> segment pairs -> masked examples.

Objectives (the `pair_label` convention follows HF: 0 = "B follows A", 1 = "B does not"):
  "nsp"   next-sentence prediction: 50% B is the true continuation (0), 50% B is taken from a
          random other document (1).
  "sop"   sentence-order prediction (ALBERT): B is the continuation; 50% A and B are swapped
          (1), else in order (0).
  "none"  single segments (RoBERTa FULL-SENTENCES): contiguous sentences up to the length,
          crossing document boundaries with a separator token; no pair label.

As in BERT, with probability `short_seq_prob` (0.1) an instance targets a random shorter
length, and pairs over the limit are trimmed one token at a time from the longer side (front
or back at random). A chunk is closed only once it holds >= 2 sentences (or the document
ends), so an in-order pair always exists and NSP is 50/50; documents with one sentence
(no sentence boundary) cannot make an in-order pair and are skipped for nsp/sop, counted in
`stats["documents without a sentence boundary"]`.

Masking is static (masks drawn once, `dupe_factor` differently-segmented and -masked copies,
the same every epoch: BERT) or dynamic (a fresh mask each time an example is read, seeded by
grain from (seed, epoch, index): RoBERTa). Both are reproducible from the seed. With "device"
the rows stay unmasked (no mlm_* keys; `word_starts` added for whole-word masking) and the
train step draws the masks (`jaxformer.objectives.masking`).
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Sequence

import grain
import numpy as np

from jaxformer.data import packing
from jaxformer.data.masking import Masker, MaskingConfig
from jaxformer.data.sources import split_sentences

__all__ = [
    "PretrainingConfig",
    "create_instances",
    "mask_instance",
    "pad_example",
    "pretraining_dataset",
]


@dataclasses.dataclass(frozen=True)
class PretrainingConfig:
    max_seq_len: int = 128
    objective: str = "nsp"  # "nsp" | "sop" | "none"
    short_seq_prob: float = 0.1  # BERT: fraction of instances with a shorter target length
    dupe_factor: int = 1  # copies of the data, each segmented (and, static, masked)
    masking: MaskingConfig = MaskingConfig()


def _truncate_pair(a: list, b: list, max_tokens: int, rng: random.Random) -> None:
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _pair_instances(
    doc_index: int,
    docs: list[list[list[int]]],
    cfg: PretrainingConfig,
    tokenizer,
    rng: random.Random,
    stats: collections.Counter,
) -> list[dict]:
    document = docs[doc_index]
    max_tokens = cfg.max_seq_len - tokenizer.num_special_tokens(pair=True)
    target = max_tokens if rng.random() >= cfg.short_seq_prob else rng.randint(2, max_tokens)
    out, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or (length >= target and len(chunk) >= 2):
            if len(chunk) < 2:
                stats["trailing single sentences skipped"] += 1
            else:
                a_end = rng.randint(1, len(chunk) - 1)
                a = [t for s in chunk[:a_end] for t in s]
                label = 0
                if cfg.objective == "nsp" and rng.random() < 0.5:
                    label = 1
                    b_target = max(1, target - len(a))
                    other = rng.randrange(len(docs) - 1)
                    other += other >= doc_index  # any document but this one
                    rdoc = docs[other]
                    b = []
                    for s in rdoc[rng.randrange(len(rdoc)) :]:
                        b += s
                        if len(b) >= b_target:
                            break
                    i -= len(chunk) - a_end  # unused sentences go back in the pool
                else:
                    b = [t for s in chunk[a_end:] for t in s]
                if cfg.objective == "sop" and rng.random() < 0.5:
                    a, b, label = b, a, 1
                _truncate_pair(a, b, max_tokens, rng)
                if a and b:
                    ids, types = tokenizer.build_inputs(a, b)
                    out.append(
                        {
                            "input_ids": np.array(ids, np.int32),
                            "token_type_ids": np.array(types, np.int32),
                            "pair_label": np.int32(label),
                        }
                    )
                else:
                    stats["empty segment after truncation"] += 1
            chunk, length = [], 0
            target = (
                max_tokens if rng.random() >= cfg.short_seq_prob else rng.randint(2, max_tokens)
            )
        i += 1
    return out


def _single_instances(
    docs: list[list[list[int]]], cfg: PretrainingConfig, tokenizer, rng: random.Random
) -> list[dict]:
    max_tokens = cfg.max_seq_len - tokenizer.num_special_tokens(pair=False)
    out, current = [], []

    def new_target():
        return max_tokens if rng.random() >= cfg.short_seq_prob else rng.randint(2, max_tokens)

    def emit():
        ids, types = tokenizer.build_inputs(current)
        out.append(
            {"input_ids": np.array(ids, np.int32), "token_type_ids": np.array(types, np.int32)}
        )

    target = new_target()
    for doc in docs:
        for j, sentence in enumerate(doc):
            if j == 0 and current:
                sentence = [tokenizer.sep_id, *sentence]  # RoBERTa: separator between documents
            while sentence:
                room = target - len(current)
                if len(sentence) <= room:
                    current += sentence
                    break
                if not current:  # longer than a whole row: split it
                    current, sentence = list(sentence[:room]), sentence[room:]
                emit()
                current, target = [], new_target()
                if sentence[0] == tokenizer.sep_id and j == 0:
                    sentence = sentence[1:]  # no separator at the start of a row
    if current:
        emit()
    return out


def create_instances(
    documents: Sequence[str], tokenizer, config: PretrainingConfig, *, seed: int = 0
) -> tuple[list[dict], collections.Counter]:
    """Unmasked instances (`input_ids`, `token_type_ids`[, `pair_label`], unpadded) and stats.

    Each of `dupe_factor` passes segments every document afresh, then all are shuffled.
    """
    if config.objective not in ("nsp", "sop", "none"):
        raise ValueError(f"objective must be 'nsp', 'sop' or 'none', got {config.objective!r}")
    stats = collections.Counter()
    sentences = [split_sentences(d) for d in documents]
    flat = [s for doc in sentences for s in doc]
    ids = iter(tokenizer.tokenize_ids(flat))
    docs = [[s for s in (next(ids) for _ in doc) if s] for doc in sentences]
    if config.objective != "none":
        kept = [d for d in docs if len(d) >= 2]
        stats["documents without a sentence boundary"] = sum(len(d) == 1 for d in docs)
        docs = kept
        if config.objective == "nsp" and len(docs) < 2:
            raise ValueError(
                f"NSP needs at least 2 documents with >= 2 sentences each, got {len(docs)}"
            )
    stats["empty documents"] = sum(len(d) == 0 for d in docs)
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError("no usable documents (all empty or without a sentence boundary)")
    rng = random.Random(seed)
    instances = []
    for _ in range(config.dupe_factor):
        if config.objective == "none":
            instances += _single_instances(docs, config, tokenizer, rng)
        else:
            for d in range(len(docs)):
                instances += _pair_instances(d, docs, config, tokenizer, rng, stats)
    rng.shuffle(instances)
    stats["instances"] = len(instances)
    return instances, stats


def mask_instance(instance: dict, masker: Masker, rng: np.random.Generator) -> dict:
    """Masked, unpadded example: instance keys with masked input_ids plus the mlm_* arrays."""
    out = dict(instance)
    out.update(masker(instance["input_ids"], rng))
    return out


def pad_example(example: dict, max_seq_len: int, pad_id: int) -> dict:
    """Pads input_ids/token_type_ids to `max_seq_len`, adds attention_mask (1 = real)."""
    n = len(example["input_ids"])
    if n > max_seq_len:
        raise ValueError(f"example of {n} tokens exceeds max_seq_len={max_seq_len}")
    out = dict(example)
    out["input_ids"] = np.full(max_seq_len, pad_id, np.int32)
    out["input_ids"][:n] = example["input_ids"]
    out["token_type_ids"] = np.zeros(max_seq_len, np.int32)
    out["token_type_ids"][:n] = example["token_type_ids"]
    out["attention_mask"] = (np.arange(max_seq_len) < n).astype(np.int32)
    return out


class _MaskAndPad(grain.transforms.RandomMap):
    def __init__(self, masker, max_seq_len, pad_id):
        self.masker, self.max_seq_len, self.pad_id = masker, max_seq_len, pad_id

    def random_map(self, instance, rng):
        return pad_example(mask_instance(instance, self.masker, rng), self.max_seq_len, self.pad_id)


class _MaskAndPack(grain.transforms.RandomMap):
    def __init__(self, instances, masker, packer):
        self.instances, self.masker, self.packer = instances, masker, packer

    def random_map(self, row, rng):
        return self.packer([mask_instance(self.instances[i], self.masker, rng) for i in row])


def pretraining_dataset(
    instances: Sequence[dict],
    tokenizer,
    config: PretrainingConfig,
    *,
    masking: str = "dynamic",
    seed: int = 0,
    num_epochs: int | None = 1,
    pack: bool = False,
    max_segments: int = 16,
    packed_max_predictions: int | None = None,
) -> grain.MapDataset:
    """A grain MapDataset of fixed-shape numpy examples, shuffled per epoch.

    masking="static": masks drawn once (seeded) and repeated every epoch; "dynamic": drawn
    afresh each read; "device": none drawn, rows of ids only (plus `word_starts` [L] bool when
    config.masking.whole_word) for the train step to mask. num_epochs=None repeats forever.
    With pack=True, rows hold several instances (see `packing.pack_examples`); the packing
    plan is fixed, masks follow `masking`.
    """
    if masking not in ("static", "dynamic", "device"):
        raise ValueError(f"masking must be 'static', 'dynamic' or 'device', got {masking!r}")
    masker = None if masking == "device" else Masker(tokenizer, config.masking)
    instances = list(instances)
    if masking == "static":
        instances = [
            mask_instance(x, masker, np.random.default_rng([seed, i]))
            for i, x in enumerate(instances)
        ]
        masker = None
    if pack:
        packer = packing.Packer(
            config.max_seq_len,
            tokenizer.pad_id,
            max_segments=max_segments,
            max_predictions=packed_max_predictions or packing.default_packed_predictions(config),
        )
        if masking == "device":  # the step draws at most the row's slots
            bound = None
        elif masker is None:  # static: the masks, hence the counts, are known
            bound = [int(x["mlm_weights"].sum()) for x in instances]
        else:
            bound = [
                packer.prediction_bound(len(x["input_ids"]), config.masking) for x in instances
            ]
        rows = packer.plan([len(x["input_ids"]) for x in instances], bound)
        ds = grain.MapDataset.source(rows).seed(seed).shuffle()
        if masker is None:
            ds = ds.map(lambda row: packer([instances[i] for i in row]))
        else:
            ds = ds.random_map(_MaskAndPack(instances, masker, packer))
    else:
        ds = grain.MapDataset.source(instances).seed(seed).shuffle()
        if masker is None:
            ds = ds.map(lambda x: pad_example(x, config.max_seq_len, tokenizer.pad_id))
        else:
            ds = ds.random_map(_MaskAndPad(masker, config.max_seq_len, tokenizer.pad_id))
    if masking == "device" and config.masking.whole_word:
        ds = ds.map(lambda x: dict(x, word_starts=tokenizer.word_starts(x["input_ids"])))
    return ds.repeat(num_epochs)
