"""Shape buckets and a jit-compiled forward that compiles once per bucket.

Inputs of any length are padded up to the next bucket (powers of two up to the model's maximum
length) and batches up to the next power of two, so a stream of texts of lengths 3..500 costs a
handful of compilations instead of one per length.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

import jax
import numpy as np


def length_buckets(max_length: int, smallest: int = 8) -> list[int]:
    """Powers of two from `smallest` below `max_length`, then `max_length` itself."""
    out, b = [], smallest
    while b < max_length:
        out.append(b)
        b *= 2
    return out + [max_length]


def batch_buckets(max_batch: int) -> list[int]:
    return length_buckets(max_batch, smallest=1)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= n; ValueError if n exceeds the largest."""
    i = bisect.bisect_left(buckets, n)
    if i == len(buckets):
        raise ValueError(f"length {n} exceeds the largest bucket {buckets[-1]}.")
    return buckets[i]


class BucketedFn:
    """`fn(params, **arrays)` under `jax.jit`, fed padded `[batch, length]` int arrays.

    `compilations` counts traces (one per distinct bucket shape), which is what tests and
    benchmarks look at.
    """

    def __init__(
        self,
        fn: Callable,
        params,
        max_length: int,
        max_batch: int = 32,
        pad_values: dict[str, int] | None = None,
        smallest: int = 8,
    ):
        self.params = params
        self.lengths = length_buckets(max_length, smallest)
        self.batches = batch_buckets(max_batch)
        self.max_batch = max_batch
        self.pad_values = pad_values or {}
        self.compilations = 0

        def counted(params, arrays):
            self.compilations += 1  # runs only while tracing, i.e. once per new shape
            return fn(params, **arrays)

        self._jitted = jax.jit(counted)

    def num_buckets(self) -> int:
        return len(self.lengths) * len(self.batches)

    def __call__(self, rows: Sequence[dict[str, Sequence[int]]], extra: dict | None = None):
        """Runs rows (dicts of equal-length int lists, e.g. input_ids / token_type_ids) in
        length-sorted chunks of at most `max_batch`; returns host outputs in input order.

        `extra(indices, batch, length) -> dict` may add arrays for the chunk of rows
        `indices` (padded to `batch` rows).
        Outputs are numpy pytrees whose leading axis is the row.
        """
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
        results: list = [None] * len(rows)
        for c in range(0, len(order), self.max_batch):
            idx = order[c : c + self.max_batch]
            chunk = [rows[i] for i in idx]
            length = bucket_for(max(len(r["input_ids"]) for r in chunk), self.lengths)
            batch = bucket_for(len(chunk), self.batches)
            arrays = {}
            for key in chunk[0]:
                a = np.full((batch, length), self.pad_values.get(key, 0), np.int32)
                for j, r in enumerate(chunk):
                    a[j, : len(r[key])] = r[key]
                arrays[key] = a
            mask = np.zeros((batch, length), np.int32)
            for j, r in enumerate(chunk):
                mask[j, : len(r["input_ids"])] = 1
            mask[len(chunk) :, 0] = 1  # padding rows see one token, so softmaxes stay finite
            arrays["attention_mask"] = mask
            if extra is not None:
                arrays.update(extra(idx, batch, length))
            out = jax.device_get(self._jitted(self.params, arrays))
            for j, i in enumerate(idx):
                results[i] = jax.tree.map(lambda x: x[j], out)  # noqa: B023 (called at once)
        return results
