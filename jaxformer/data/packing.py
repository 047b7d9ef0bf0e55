"""Sequence packing: several short examples in one row, so no compute is spent on padding.

A packed row carries `segment_ids` [L] (0 = padding, 1..k = the packed examples; the
model's attention mask keeps segments apart) and `position_ids` [L] restarting at 0 in each
segment. MLM positions are shifted by each segment's offset; pair labels (NSP/SOP) become
per-segment arrays [S] with `pair_weights` and `cls_positions` (where each segment's first
token, its [CLS], sits).

The plan (which examples share a row) is best-fit-decreasing on tokens, subject to a
prediction budget and at most `max_segments` per row; it is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["Packer", "padding_fraction", "default_packed_predictions"]


def default_packed_predictions(config) -> int:
    """A packed row's prediction slots: p * L rounded up, plus slack for per-segment rounding."""
    m = config.masking
    return min(config.max_seq_len, math.ceil(m.mlm_probability * config.max_seq_len) + 8)


def padding_fraction(lengths: Sequence[int], seq_len: int, num_rows: int | None = None) -> float:
    """Fraction of token slots that are padding: unpacked if num_rows is None (a row each)."""
    rows = len(lengths) if num_rows is None else num_rows
    return 1.0 - float(np.sum(lengths)) / (rows * seq_len)


class Packer:
    """Plans rows and packs (masked, unpadded) examples into one fixed-shape row."""

    def __init__(
        self, seq_len: int, pad_id: int, *, max_segments: int = 16, max_predictions: int = 24
    ):
        self.seq_len, self.pad_id = seq_len, pad_id
        self.max_segments, self.max_predictions = max_segments, max_predictions

    @staticmethod
    def prediction_bound(length: int, masking) -> int:
        """Most predictions `masking` can draw for a sequence of `length` tokens."""
        return min(masking.max_predictions, math.ceil(masking.mlm_probability * length))

    def plan(
        self, lengths: Sequence[int], predictions: Sequence[int] | None = None
    ) -> list[list[int]]:
        """Rows as lists of example indices (best fit, longest first)."""
        lengths = np.asarray(lengths)
        preds = np.zeros(len(lengths), int) if predictions is None else np.asarray(predictions)
        if lengths.size and lengths.max() > self.seq_len:
            raise ValueError(f"an example of {lengths.max()} tokens exceeds seq_len={self.seq_len}")
        if preds.size and preds.max() > self.max_predictions:
            raise ValueError(
                f"an example has {preds.max()} predictions, more than the packed "
                f"budget max_predictions={self.max_predictions}"
            )
        rows, row_preds = [], []
        by_room = [[] for _ in range(self.seq_len + 1)]  # room left -> open rows
        for i in np.argsort(-lengths, kind="stable"):
            n, p = int(lengths[i]), int(preds[i])
            target = None
            for room in range(n, self.seq_len + 1):
                for k, r in enumerate(by_room[room]):
                    if row_preds[r] + p <= self.max_predictions:
                        target = by_room[room].pop(k)
                        break
                if target is not None:
                    break
            if target is None:
                target, room = len(rows), self.seq_len
                rows.append([])
                row_preds.append(0)
            rows[target].append(int(i))
            row_preds[target] += p
            if len(rows[target]) < self.max_segments:
                by_room[room - n].append(target)
        return rows

    def __call__(self, examples: Sequence[dict]) -> dict:
        """One packed row from unpadded examples (keys as `pretraining.mask_instance` gives)."""
        L, P, S = self.seq_len, self.max_predictions, self.max_segments
        if len(examples) > S:
            raise ValueError(f"{len(examples)} examples exceed max_segments={S}")
        out = {
            "input_ids": np.full(L, self.pad_id, np.int32),
            "token_type_ids": np.zeros(L, np.int32),
            "attention_mask": np.zeros(L, np.int32),
            "segment_ids": np.zeros(L, np.int32),
            "position_ids": np.zeros(L, np.int32),
        }
        has_mlm = "mlm_positions" in examples[0]
        has_pair = "pair_label" in examples[0]
        if has_mlm:
            out.update(
                mlm_positions=np.zeros(P, np.int32),
                mlm_ids=np.zeros(P, np.int32),
                mlm_weights=np.zeros(P, np.float32),
            )
        if has_pair:
            out.update(
                pair_label=np.zeros(S, np.int32),
                pair_weights=np.zeros(S, np.float32),
                cls_positions=np.zeros(S, np.int32),
            )
        offset = npred = 0
        for s, ex in enumerate(examples):
            n = len(ex["input_ids"])
            if offset + n > L:
                raise ValueError(f"examples of {offset + n} tokens do not fit seq_len={L}")
            span = slice(offset, offset + n)
            out["input_ids"][span] = ex["input_ids"]
            out["token_type_ids"][span] = ex["token_type_ids"]
            out["attention_mask"][span] = 1
            out["segment_ids"][span] = s + 1
            out["position_ids"][span] = np.arange(n)
            if has_mlm:
                real = np.asarray(ex["mlm_weights"]) > 0
                k = int(real.sum())
                if npred + k > P:
                    raise ValueError(f"{npred + k} predictions exceed max_predictions={P}")
                out["mlm_positions"][npred : npred + k] = (
                    np.asarray(ex["mlm_positions"])[real] + offset
                )
                out["mlm_ids"][npred : npred + k] = np.asarray(ex["mlm_ids"])[real]
                out["mlm_weights"][npred : npred + k] = 1.0
                npred += k
            if has_pair:
                out["pair_label"][s] = ex["pair_label"]
                out["pair_weights"][s] = 1.0
                out["cls_positions"][s] = offset
            offset += n
        return out
