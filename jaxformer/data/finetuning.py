"""Fine-tuning preprocessors: GLUE-style classification/regression, SQuAD v1.1/v2.0 with a
document stride, CoNLL-style NER, and translation pairs with length bucketing.

All return fixed-shape numpy dicts padded with the tokenizer's pad id; `attention_mask` is 1
on real tokens. Label conventions: classification `label` int32 (float32 for regression);
QA `start_positions`/`end_positions` index the input (0, the [CLS], when the answer is not
in the window or there is none); NER `labels` hold the tag on a word's first sub-token and
-100 elsewhere, with `label_weights` 1/0 to match.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import grain
import numpy as np

from jaxformer.data import metrics

__all__ = [
    "GLUE_TASKS",
    "CONLL2003_TAGS",
    "encode_classification",
    "GlueProcessor",
    "glue_metrics",
    "SquadConfig",
    "prepare_squad",
    "squad_predictions",
    "encode_ner",
    "ner_tags_from_predictions",
    "encode_translation",
    "translation_dataset",
]

IGNORE_INDEX = -100

# task -> (first text field, second text field or None, number of classes; 0 = regression)
GLUE_TASKS = {
    "cola": ("sentence", None, 2),
    "sst2": ("sentence", None, 2),
    "mrpc": ("sentence1", "sentence2", 2),
    "qqp": ("question1", "question2", 2),
    "stsb": ("sentence1", "sentence2", 0),
    "mnli": ("premise", "hypothesis", 3),
    "qnli": ("question", "sentence", 2),
    "rte": ("sentence1", "sentence2", 2),
    "wnli": ("sentence1", "sentence2", 2),
    "ax": ("premise", "hypothesis", 3),
}
CONLL2003_TAGS = [
    "O",
    "B-PER",
    "I-PER",
    "B-ORG",
    "I-ORG",
    "B-LOC",
    "I-LOC",
    "B-MISC",
    "I-MISC",
]  # the order of tfds conll2003 "ner"


def _text(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _pad(ids: Sequence[int], length: int, value: int) -> np.ndarray:
    out = np.full(length, value, np.int32)
    out[: len(ids)] = ids
    return out


def _truncate_longest_first(a: list, b: list | None, budget: int) -> None:
    while len(a) + (len(b) if b else 0) > budget:
        (b if b and len(b) > len(a) else a).pop()


# ---- GLUE-style classification ----------------------------------------------------------
def encode_classification(
    tokenizer,
    text: str,
    pair: str | None = None,
    label=None,
    *,
    max_seq_len: int = 128,
    regression: bool = False,
) -> dict:
    """[CLS] text [SEP] (pair [SEP]) padded to max_seq_len, longest-first truncation."""
    a = tokenizer.tokenize_ids([text])[0]
    b = tokenizer.tokenize_ids([pair])[0] if pair is not None else None
    _truncate_longest_first(a, b, max_seq_len - tokenizer.num_special_tokens(b is not None))
    ids, types = tokenizer.build_inputs(a, b)
    out = {
        "input_ids": _pad(ids, max_seq_len, tokenizer.pad_id),
        "token_type_ids": _pad(types, max_seq_len, 0),
        "attention_mask": _pad([1] * len(ids), max_seq_len, 0),
    }
    if label is not None:
        out["label"] = np.asarray(label, np.float32 if regression else np.int32)
    return out


class GlueProcessor(grain.transforms.Map):
    """Maps a tfds GLUE example (dict) to features; usable as a grain map transform."""

    def __init__(self, task: str, tokenizer, max_seq_len: int = 128):
        if task not in GLUE_TASKS:
            raise ValueError(f"unknown GLUE task {task!r}; expected one of {sorted(GLUE_TASKS)}")
        self.task, self.tokenizer, self.max_seq_len = task, tokenizer, max_seq_len
        self.first, self.second, self.num_classes = GLUE_TASKS[task]

    def map(self, example: dict) -> dict:
        pair = _text(example[self.second]) if self.second else None
        return encode_classification(
            self.tokenizer,
            _text(example[self.first]),
            pair,
            example.get("label"),
            max_seq_len=self.max_seq_len,
            regression=self.num_classes == 0,
        )


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The task's official metrics (predictions: class ids, or scores for stsb)."""
    p, y = np.asarray(predictions), np.asarray(labels)
    if task == "stsb":
        return {"pearson": metrics.pearson(p, y), "spearman": metrics.spearman(p, y)}
    out = {"accuracy": metrics.accuracy(p, y)}
    if task == "cola":
        out = {"matthews_corr": metrics.matthews_corr(p, y)}
    elif task in ("mrpc", "qqp"):
        out["f1"] = metrics.f1(p, y)
    return out


# ---- SQuAD --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SquadConfig:
    max_seq_len: int = 384
    doc_stride: int = 128  # step between window starts, in tokens (as in original BERT)
    max_query_len: int = 64


def _trimmed_offsets(context: str, offsets) -> np.ndarray:
    out = np.array(offsets, np.int32).reshape(-1, 2)
    for row in out:  # byte-level BPE offsets include the leading space; trim it
        while row[0] < row[1] and context[row[0]].isspace():
            row[0] += 1
    return out


def _windows(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    spans, start = [], 0
    while True:
        length = min(n - start, size)
        spans.append((start, length))
        if start + length >= n:
            return spans
        start += min(length, stride)


def prepare_squad(
    examples: Sequence[dict],
    tokenizer,
    config: SquadConfig = SquadConfig(),
    *,
    training: bool = True,
    errors: str = "raise",
):
    """Features for SQuAD-style examples (tfds `squad` dicts: question, context, answers).

    Each example gives one feature per window of `config.max_seq_len` tokens over the context.
    training=True needs each answer to sit at its `answer_start` in the context; a mismatch
    raises ValueError (errors="raise") or skips the example and counts it (errors="skip").
    Returns (features, skipped Counter). Features hold input_ids, token_type_ids,
    attention_mask, start_positions, end_positions, offsets [L, 2] (character span of each
    context token, -1 elsewhere), token_is_max_context [L], example_index.
    """
    features, skipped = [], collections.Counter()
    L = config.max_seq_len
    for ex_index, ex in enumerate(examples):
        context, question = _text(ex["context"]), _text(ex["question"])
        answers = ex.get("answers", {"text": [], "answer_start": []})
        texts = [_text(t) for t in answers["text"]]
        starts = [int(s) for s in answers["answer_start"]]
        impossible = bool(ex.get("is_impossible", False)) or not texts
        char_span = None
        if training and not impossible:
            s, t = starts[0], texts[0]
            if context[s : s + len(t)] != t:
                err = ValueError(
                    f"example {ex.get('id', ex_index)!r}: answer {t!r} is not at "
                    f"character {s} of its context"
                )
                if errors == "raise":
                    raise err
                skipped["answer not found at answer_start"] += 1
                continue
            char_span = (s, s + len(t))
        q = tokenizer.tokenize_ids([question])[0][: config.max_query_len]
        enc = tokenizer.encode(context, add_special_tokens=False)
        ctx, offsets = enc.ids, _trimmed_offsets(context, enc.offsets)
        prefix = len(tokenizer.build_inputs(q, [])[0]) - 1  # [CLS] q [SEP] (</s>) before ctx
        size = L - len(q) - tokenizer.num_special_tokens(pair=True)
        if size <= 0:
            raise ValueError(f"max_seq_len={L} leaves no room for context after the question")
        tok_span = None
        if char_span is not None:
            inside = np.flatnonzero((offsets[:, 1] > char_span[0]) & (offsets[:, 0] < char_span[1]))
            tok_span = (inside[0], inside[-1]) if inside.size else None
        spans = _windows(len(ctx), size, config.doc_stride)
        for w, (start, length) in enumerate(spans):
            ids, types = tokenizer.build_inputs(q, ctx[start : start + length])
            off = np.full((L, 2), -1, np.int32)
            off[prefix : prefix + length] = offsets[start : start + length]
            max_ctx = np.zeros(L, bool)
            for i in range(length):
                p = start + i
                score = lambda s, n: min(p - s, s + n - 1 - p) + 0.01 * n  # noqa: B023 (called at once)
                best = max((score(s, n), k) for k, (s, n) in enumerate(spans) if s <= p < s + n)[1]
                max_ctx[prefix + i] = best == w
            sp = ep = 0
            if tok_span is not None and start <= tok_span[0] and tok_span[1] < start + length:
                sp, ep = prefix + tok_span[0] - start, prefix + tok_span[1] - start
            features.append(
                {
                    "input_ids": _pad(ids, L, tokenizer.pad_id),
                    "token_type_ids": _pad(types, L, 0),
                    "attention_mask": _pad([1] * len(ids), L, 0),
                    "start_positions": np.int32(sp),
                    "end_positions": np.int32(ep),
                    "offsets": off,
                    "token_is_max_context": max_ctx,
                    "example_index": np.int32(ex_index),
                }
            )
    return features, skipped


def squad_predictions(
    features: Sequence[dict],
    start_logits,
    end_logits,
    contexts: Sequence[str],
    *,
    n_best: int = 20,
    max_answer_len: int = 30,
    version_2: bool = False,
    null_threshold: float = 0.0,
) -> list[str]:
    """Best answer text per example (index into `contexts`), from per-feature logits [L].

    Spans start and end inside the context, start on a token whose window is its max
    context, and are at most `max_answer_len` tokens. version_2: "" (no answer) when the
    [CLS] score beats the best span by more than `null_threshold`.
    """
    best = [(-np.inf, "") for _ in contexts]
    null = [np.inf] * len(contexts)
    for f, s_log, e_log in zip(features, start_logits, end_logits):
        i, off = int(f["example_index"]), f["offsets"]
        s_log, e_log = np.asarray(s_log), np.asarray(e_log)
        null[i] = min(null[i], float(s_log[0] + e_log[0]))
        valid = off[:, 0] >= 0
        starts = [
            k for k in np.argsort(-s_log)[:n_best] if valid[k] and f["token_is_max_context"][k]
        ]
        ends = [k for k in np.argsort(-e_log)[:n_best] if valid[k]]
        for s in starts:
            for e in ends:
                if s <= e < s + max_answer_len:
                    score = float(s_log[s] + e_log[e])
                    if score > best[i][0]:
                        best[i] = (score, contexts[i][off[s, 0] : off[e, 1]])
    out = []
    for i, (score, text) in enumerate(best):
        no_answer = version_2 and (score == -np.inf or null[i] - score > null_threshold)
        out.append("" if no_answer else text)
    return out


# ---- NER ----------------------------------------------------------------------------------
def encode_ner(
    tokenizer,
    words: Sequence[str],
    tags: Sequence[int],
    *,
    max_seq_len: int = 128,
    label_all_subtokens: bool = False,
) -> dict:
    """Word-level tags -> sub-token labels: the tag on each word's first sub-token.

    Words that do not fit are cut; `num_words` says how many are labelled (evaluate only
    those). Raises ValueError if words and tags differ in length.
    """
    words = [_text(w) for w in words]
    if len(words) != len(tags):
        raise ValueError(f"{len(words)} words but {len(tags)} tags")
    enc = tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
    wid = [-1 if w is None else w for w in enc.word_ids]
    keep = min(len(wid), max_seq_len - tokenizer.num_special_tokens(pair=False))
    if keep < len(wid):
        while keep > 0 and wid[keep - 1] == wid[keep]:
            keep -= 1  # cut before a half word
    word_ids = np.array(wid[:keep], np.int64)
    ids, _ = tokenizer.build_inputs(enc.ids[: len(word_ids)])
    labels = np.full(max_seq_len, IGNORE_INDEX, np.int32)
    first = np.r_[True, word_ids[1:] != word_ids[:-1]][: len(word_ids)] & (word_ids >= 0)
    tag_arr = np.asarray(tags, np.int32)
    pos = np.arange(len(word_ids)) + 1  # +1: after [CLS]
    chosen = (word_ids >= 0) if label_all_subtokens else first
    labels[pos[chosen]] = tag_arr[word_ids[chosen]]
    return {
        "input_ids": _pad(ids, max_seq_len, tokenizer.pad_id),
        "token_type_ids": np.zeros(max_seq_len, np.int32),
        "attention_mask": _pad([1] * len(ids), max_seq_len, 0),
        "labels": labels,
        "label_weights": (labels != IGNORE_INDEX).astype(np.float32),
        "num_words": np.int32(len(set(word_ids[word_ids >= 0].tolist()))),
    }


def ner_tags_from_predictions(
    predictions, labels, names: Sequence[str] = CONLL2003_TAGS
) -> list[str]:
    """Per-word tag names: the prediction at each first sub-token (labels != -100)."""
    p, y = np.asarray(predictions), np.asarray(labels)
    return [names[k] for k in p[y != IGNORE_INDEX]]


# ---- translation --------------------------------------------------------------------------
def encode_translation(source_tokenizer, target_tokenizer, source: str, target: str) -> dict:
    """Unpadded `inputs` and `targets` ids, each ending in its tokenizer's EOS ([SEP] / </s>)."""
    src = source_tokenizer.tokenize_ids([_text(source)])[0] + [source_tokenizer.sep_id]
    tgt = target_tokenizer.tokenize_ids([_text(target)])[0] + [target_tokenizer.sep_id]
    return {"inputs": np.array(src, np.int32), "targets": np.array(tgt, np.int32)}


def translation_dataset(
    examples: Sequence[dict],
    *,
    boundaries: Sequence[int],
    batch_size: int | Sequence[int],
    pad_id: int,
    seed: int = 0,
    num_epochs: int | None = 1,
):
    """Length-bucketed batches of `encode_translation` examples as a grain MapDataset.

    An example goes to the first bucket whose boundary is >= max(len(inputs), len(targets))
    and is padded to that boundary; longer examples are dropped and counted (returned).
    batch_size: one for all buckets or one per bucket (e.g. fewer rows for longer buckets).
    Batch membership is fixed by `seed`; batch order is reshuffled every epoch.
    Returns (dataset, skipped Counter).
    """
    boundaries = sorted(boundaries)
    sizes = [batch_size] * len(boundaries) if isinstance(batch_size, int) else list(batch_size)
    if len(sizes) != len(boundaries):
        raise ValueError("give one batch size, or one per boundary")
    buckets = [[] for _ in boundaries]
    skipped = collections.Counter()
    for i, ex in enumerate(examples):
        n = max(len(ex["inputs"]), len(ex["targets"]))
        b = int(np.searchsorted(boundaries, n))
        if b == len(boundaries):
            skipped[f"longer than {boundaries[-1]} tokens"] += 1
        else:
            buckets[b].append(i)
    rng = np.random.default_rng(seed)
    plan = []
    for b, idx in enumerate(buckets):
        idx = rng.permutation(idx)
        plan += [(b, idx[k : k + sizes[b]]) for k in range(0, len(idx) - sizes[b] + 1, sizes[b])]
        if len(idx) % sizes[b]:
            skipped["remainder of a bucket"] += len(idx) % sizes[b]

    def make(item):
        b, idx = item
        length = boundaries[b]
        return {
            k: np.stack([_pad(examples[i][k], length, pad_id) for i in idx])
            for k in ("inputs", "targets")
        }

    ds = grain.MapDataset.source(plan).seed(seed).shuffle().map(make).repeat(num_epochs)
    return ds, skipped
