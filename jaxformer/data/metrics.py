"""Fine-tuning metrics, in numpy: accuracy, F1, Matthews correlation, Pearson/Spearman,
SQuAD exact match and F1 (the official v1.1/v2.0 normalisation), entity-level F1 over IOB
tags (conlleval / seqeval default rules), and corpus BLEU (sacrebleu).
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np

__all__ = [
    "accuracy",
    "f1",
    "matthews_corr",
    "pearson",
    "spearman",
    "normalize_answer",
    "squad_exact_match",
    "squad_f1",
    "squad_scores",
    "get_entities",
    "entity_f1",
    "bleu",
]


def accuracy(predictions, labels) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1(predictions, labels, positive: int = 1) -> float:
    """Binary F1 of class `positive` (0.0 when it is never predicted nor present)."""
    p, y = np.asarray(predictions) == positive, np.asarray(labels) == positive
    tp, fp, fn = np.sum(p & y), np.sum(p & ~y), np.sum(~p & y)
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def matthews_corr(predictions, labels) -> float:
    """Matthews correlation (multi-class form of Gorodkin 2004); 0.0 when undefined."""
    p, y = np.asarray(predictions), np.asarray(labels)
    classes = np.union1d(p, y)
    c = np.array([[np.sum((y == a) & (p == b)) for b in classes] for a in classes], float)
    t, q, n, correct = c.sum(1), c.sum(0), c.sum(), np.trace(c)
    denom = np.sqrt((n * n - q @ q) * (n * n - t @ t))
    return float((correct * n - t @ q) / denom) if denom else 0.0


def pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    x, y = x - x.mean(), y - y.mean()
    return float(x @ y / np.sqrt((x @ x) * (y @ y)))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties share their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), float)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(x, y) -> float:
    return pearson(_ranks(np.asarray(x, float)), _ranks(np.asarray(y, float)))


# ---- SQuAD (official evaluate-v1.1 / v2.0 normalisation) ------------------------------------
def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation and articles (a, an, the), collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def squad_exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:  # v2.0: no-answer scores 1 only against no-answer
        return float(p == g)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean EM and F1 in percent, each the max over an example's gold answers ([] = none)."""
    em = f = 0.0
    for pred, answers in zip(predictions, golds):
        answers = list(answers) or [""]
        em += max(squad_exact_match(pred, a) for a in answers)
        f += max(squad_f1(pred, a) for a in answers)
    n = max(len(predictions), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n}


# ---- entity-level F1 ---------------------------------------------------------------------
def _split(tag: str) -> tuple[str, str]:
    if tag in ("O", ""):
        return "O", ""
    prefix, _, kind = tag.partition("-")
    return (prefix, kind) if kind else ("I", prefix)


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, start, end inclusive) chunks of an IOB1/IOB2/IOBES tag sequence.

    A chunk starts at B/S, at I/E after O or after another type, and ends before O, B, S or a
    type change, or after E/S (the conlleval rules, as seqeval's default mode).
    """
    chunks, start, kind = [], None, ""
    prev = "O"
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, t = _split(tag)
        end = start is not None and (prefix in ("O", "B", "S") or t != kind or prev in ("E", "S"))
        if end:
            chunks.append((kind, start, i - 1))
            start = None
        if prefix != "O" and (start is None):
            start, kind = i, t
        prev = prefix
    return chunks


def entity_f1(
    predictions: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Micro precision, recall and F1 over exactly matching (type, start, end) entities."""
    pred = {(n, *e) for n, s in enumerate(predictions) for e in get_entities(s)}
    gold = {(n, *e) for n, s in enumerate(golds) for e in get_entities(s)}
    tp = len(pred & gold)
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(gold) if gold else 0.0
    f = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f}


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, one reference per sentence)."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
