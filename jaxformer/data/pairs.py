"""Batches of (source ids, target ids) pairs for the encoder-decoder: packing and bucketing.

Pairs come from a `PairStore` (`read_pairs`) or a tfds translation dataset
(`tfds_pair_ids`, through `tfds.data_source`, imported only there). Both batchers are plain,
deterministic generators over any iterable of pairs. A pair longer than the limit on either
side (EOS included) is dropped and counted in `PairStats`, never an error; so is a pair with
an empty side.

- `pack_pairs`: several pairs per row. A packed batch holds `input_ids`, `attention_mask`,
  `segment_ids` (source side, 1..k per pair, 0 = padding), `decoder_input_ids` (the start
  token opens every pair's target), `labels`, `labels_mask`, `decoder_segment_ids`; the
  model keeps attention within a pair and restarts positions per pair.
- `bucket_batches`: one pair per row, rows of similar length together, each bucket padded to
  its boundary: `input_ids`, `attention_mask`, `labels`, `labels_mask` (the format of
  `translation_task.encode_pairs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

__all__ = [
    "PairArrays",
    "PairFeed",
    "PairStats",
    "bucket_batches",
    "clean_pairs",
    "count_pairs",
    "pack_pairs",
    "pair_lengths",
    "plan_rows",
    "read_pairs",
    "tfds_pair_ids",
    "tfds_text_pairs",
]


@dataclasses.dataclass
class _PairVerdicts:
    """What the filter (`clean_pairs`, `count_pairs`) did with each pair: kept, or dropped as
    over a limit on either side (EOS counted) or as having an empty side."""

    kept: int = 0
    dropped_too_long: int = 0
    dropped_empty: int = 0


@dataclasses.dataclass
class PairStats(_PairVerdicts):
    """Counts of one pass: the filter's verdicts (`kept`, `dropped_too_long`,
    `dropped_empty`), then what the batches hold: rows, and per side the real tokens and the
    slots, padding included (padding fraction = 1 - tokens / slots)."""

    rows: int = 0
    source_tokens: int = 0
    target_tokens: int = 0
    source_slots: int = 0
    target_slots: int = 0

    @property
    def padding_fraction(self) -> float:
        slots = self.source_slots + self.target_slots
        return 1.0 - (self.source_tokens + self.target_tokens) / slots if slots else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "padding_fraction": self.padding_fraction}


def clean_pairs(
    pairs: Iterable,
    max_source_len: int,
    max_target_len: int,
    *,
    eos_id: int | None = None,
    stats: PairStats | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """int32 (source, target) pairs, EOS appended to both sides when `eos_id` is given; pairs
    over a limit (counted with the EOS) or with an empty side are dropped and counted."""
    stats = PairStats() if stats is None else stats
    for src, tgt in pairs:
        src, tgt = np.asarray(src, np.int32).reshape(-1), np.asarray(tgt, np.int32).reshape(-1)
        if not src.size or not tgt.size:
            stats.dropped_empty += 1
            continue
        if eos_id is not None:
            src, tgt = np.append(src, np.int32(eos_id)), np.append(tgt, np.int32(eos_id))
        if src.size > max_source_len or tgt.size > max_target_len:
            stats.dropped_too_long += 1
            continue
        stats.kept += 1
        yield src, tgt


def _windows(it: Iterable, size: int) -> Iterator[list]:
    window = []
    for x in it:
        window.append(x)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def plan_rows(
    source_lengths: Sequence[int],
    target_lengths: Sequence[int],
    source_len: int,
    target_len: int,
    max_segments: int = 64,
) -> list[list[int]]:
    """Rows as lists of pair indices: first fit, longest pairs first (by the larger of the
    two fill fractions); every row fits both limits. Deterministic (stable order)."""
    s, t = np.asarray(source_lengths, np.int64), np.asarray(target_lengths, np.int64)
    order = np.argsort(-np.maximum(s / source_len, t / target_len), kind="stable")
    room_s, room_t = np.zeros(len(s), np.int64), np.zeros(len(s), np.int64)
    count = np.zeros(len(s), np.int64)
    rows: list[list[int]] = []
    for i in order.tolist():
        n = len(rows)
        fits = (room_s[:n] >= s[i]) & (room_t[:n] >= t[i]) & (count[:n] < max_segments)
        r = int(np.argmax(fits)) if fits.any() else n
        if r == n:
            rows.append([])
            room_s[r], room_t[r] = source_len, target_len
        rows[r].append(i)
        room_s[r] -= s[i]
        room_t[r] -= t[i]
        count[r] += 1
    return [sorted(r) for r in rows]


def _empty(n: int, length: int, fill: int = 0) -> np.ndarray:
    return np.full((n, length), fill, np.int32)


def _packed_batch(rows, source_len, target_len, pad_id, start_id) -> dict:
    """Rows given as lists of (source, target) pairs -> the packed arrays."""
    n = len(rows)
    out = {
        "input_ids": _empty(n, source_len, pad_id),
        "segment_ids": _empty(n, source_len),
        "decoder_input_ids": _empty(n, target_len, pad_id),
        "labels": _empty(n, target_len, pad_id),
        "decoder_segment_ids": _empty(n, target_len),
    }
    for r, members in enumerate(rows):
        i = j = 0
        for k, (src, tgt) in enumerate(members, start=1):
            out["input_ids"][r, i : i + src.size] = src
            out["segment_ids"][r, i : i + src.size] = k
            out["labels"][r, j : j + tgt.size] = tgt
            out["decoder_input_ids"][r, j] = start_id
            out["decoder_input_ids"][r, j + 1 : j + tgt.size] = tgt[:-1]
            out["decoder_segment_ids"][r, j : j + tgt.size] = k
            i, j = i + src.size, j + tgt.size
    out["attention_mask"] = (out["segment_ids"] > 0).astype(np.int32)
    out["labels_mask"] = (out["decoder_segment_ids"] > 0).astype(np.int32)
    return out


def _count(stats: PairStats, batch: dict, src_key: str, tgt_key: str) -> None:
    stats.rows += batch[src_key].shape[0]
    stats.source_tokens += int(batch[src_key].sum())
    stats.target_tokens += int(batch[tgt_key].sum())
    stats.source_slots += batch[src_key].size
    stats.target_slots += batch[tgt_key].size


def pack_pairs(
    pairs: Iterable,
    batch_size: int,
    source_len: int,
    target_len: int,
    *,
    pad_id: int,
    start_id: int,
    eos_id: int | None = None,
    max_segments: int = 64,
    window: int = 1024,
    drop_remainder: bool = False,
    stats: PairStats | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Packed batches of `batch_size` rows ([batch, source_len] / [batch, target_len] int32;
    see the module doc). Pairs are planned `window` at a time (`plan_rows`). The last batch
    is smaller unless `drop_remainder`. Counts go to `stats`."""
    if batch_size < 1 or window < 1:
        raise ValueError(f"batch_size={batch_size} and window={window} must be >= 1.")
    stats = PairStats() if stats is None else stats
    kept = clean_pairs(pairs, source_len, target_len, eos_id=eos_id, stats=stats)
    pending: list[list] = []  # planned rows (as lists of pairs) not yet emitted

    def emit(rows):
        batch = _packed_batch(rows, source_len, target_len, pad_id, start_id)
        _count(stats, batch, "attention_mask", "labels_mask")
        return batch

    for chunk in _windows(kept, window):
        plan = plan_rows(
            [len(s) for s, _ in chunk],
            [len(t) for _, t in chunk],
            source_len,
            target_len,
            max_segments,
        )
        pending += [[chunk[i] for i in row] for row in plan]
        while len(pending) >= batch_size:
            yield emit(pending[:batch_size])
            pending = pending[batch_size:]
    if pending and not drop_remainder:
        yield emit(pending)


def bucket_batches(
    pairs: Iterable,
    boundaries: Sequence[int],
    *,
    pad_id: int,
    batch_size: int | None = None,
    tokens_per_batch: int | None = None,
    eos_id: int | None = None,
    drop_remainder: bool = False,
    stats: PairStats | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Length-bucketed batches: a pair goes to the first boundary >= its longer side; a
    bucket is emitted when full (`batch_size` rows, or `tokens_per_batch // boundary`), padded
    to [rows, boundary] on both sides. Pairs over the last boundary are dropped and counted.
    Leftover partial buckets come last (shortest first) unless `drop_remainder`."""
    bounds = sorted(int(b) for b in boundaries)
    if not bounds or bounds[0] < 1:
        raise ValueError(f"boundaries must be positive lengths, got {list(boundaries)}.")
    if (batch_size is None) == (tokens_per_batch is None):
        raise ValueError("give exactly one of batch_size or tokens_per_batch.")
    sizes = [
        batch_size if batch_size is not None else max(1, tokens_per_batch // b) for b in bounds
    ]
    stats = PairStats() if stats is None else stats
    buckets: list[list] = [[] for _ in bounds]

    def emit(k):
        rows, n = buckets[k], bounds[k]
        batch = {
            "input_ids": _empty(len(rows), n, pad_id),
            "labels": _empty(len(rows), n, pad_id),
        }
        for r, (src, tgt) in enumerate(rows):
            batch["input_ids"][r, : src.size] = src
            batch["labels"][r, : tgt.size] = tgt
        lens = np.array([[s.size, t.size] for s, t in rows])
        batch["attention_mask"] = (np.arange(n) < lens[:, :1]).astype(np.int32)
        batch["labels_mask"] = (np.arange(n) < lens[:, 1:]).astype(np.int32)
        buckets[k] = []
        _count(stats, batch, "attention_mask", "labels_mask")
        return batch

    for src, tgt in clean_pairs(pairs, bounds[-1], bounds[-1], eos_id=eos_id, stats=stats):
        k = int(np.searchsorted(bounds, max(src.size, tgt.size)))
        buckets[k].append((src, tgt))
        if len(buckets[k]) == sizes[k]:
            yield emit(k)
    if not drop_remainder:
        for k in range(len(bounds)):
            if buckets[k]:
                yield emit(k)


def read_pairs(store, indices: Iterable[int] | None = None) -> Iterator[tuple]:
    """(source ids, target ids) from a `PairStore` (or its directory), in `indices` order
    (default: store order; pass a permutation to shuffle an epoch)."""
    from jaxformer.data.store import PairStore

    if isinstance(store, str):
        store = PairStore(store)
    for i in range(len(store)) if indices is None else indices:
        yield store[int(i)]


def tfds_text_pairs(
    name: str,
    *,
    split: str = "train",
    source_lang: str = "en",
    target_lang: str = "de",
    data_dir: str | None = None,
    indices: Iterable[int] | None = None,
) -> Iterator[tuple[str, str]]:
    """(source, target) texts of a tfds translation dataset (e.g. `wmt14_translate/de-en`),
    read lazily through `tfds.data_source` (no TensorFlow)."""
    from jaxformer.data.sources import tfds_source

    source = tfds_source(name, split=split, data_dir=data_dir)
    text = lambda x: x.decode("utf-8") if isinstance(x, bytes) else str(x)
    for i in range(len(source)) if indices is None else indices:
        ex = source[int(i)]
        missing = [lang for lang in (source_lang, target_lang) if lang not in ex]
        if missing:
            raise KeyError(f"{name} examples have fields {sorted(ex)}, not {missing}.")
        yield text(ex[source_lang]), text(ex[target_lang])


def tfds_pair_ids(name: str, tokenizer, *, chunk: int = 512, **kw) -> Iterator[tuple]:
    """`tfds_text_pairs(name, **kw)` encoded `chunk` pairs at a time with `tokenizer`
    (anything with `.encode(list[str]) -> list[list[int]]`, e.g. `Seq2SeqTokenizer`)."""
    for window in _windows(tfds_text_pairs(name, **kw), chunk):
        src = tokenizer.encode([s for s, _ in window])
        tgt = tokenizer.encode([t for _, t in window])
        yield from zip(src, tgt)


class PairArrays:
    """(source ids, target ids) pairs held in memory as two flat int32 arrays and offsets
    (a few bytes a token, not a Python object per pair); random access like a `PairStore`."""

    def __init__(self, sources: Sequence, targets: Sequence):
        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets.")
        self.sides = []
        for rows in (sources, targets):
            lengths = np.array([len(r) for r in rows], np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            flat = np.fromiter((t for r in rows for t in r), np.int32, int(offsets[-1]))
            self.sides.append((flat, offsets))

    def __len__(self) -> int:
        return len(self.sides[0][1]) - 1

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} out of range for {len(self)} pairs")
        (s, so), (t, to) = self.sides
        return s[so[i] : so[i + 1]], t[to[i] : to[i + 1]]

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        return tuple(np.diff(offsets) for _, offsets in self.sides)


def pair_lengths(pairs) -> tuple[np.ndarray, np.ndarray]:
    """(source lengths, target lengths) of a random-access pair source, without EOS: from the
    offsets of a `PairStore` or `PairArrays` (no token is read), else pair by pair."""
    from jaxformer.data.store import PairStore

    if isinstance(pairs, PairArrays):
        return pairs.lengths()
    if isinstance(pairs, PairStore):
        sides = [
            np.concatenate([np.diff(np.asarray(a[f"{side}_offsets"])) for a in pairs.arrays])
            for side in ("source", "target")
        ]
        return sides[0].astype(np.int64), sides[1].astype(np.int64)
    s = np.array([len(src) for src, _ in pairs], np.int64)
    t = np.array([len(tgt) for _, tgt in pairs], np.int64)
    return s, t


def count_pairs(source_lengths, target_lengths, limit: int) -> tuple[np.ndarray, PairStats]:
    """(indices of the pairs that fit, counts): the rule of `clean_pairs` (EOS counted, an
    empty side dropped) applied to lengths, so a feed can skip the rest without reading them."""
    s, t = np.asarray(source_lengths), np.asarray(target_lengths)
    empty = (s == 0) | (t == 0)
    long = ~empty & ((s + 1 > limit) | (t + 1 > limit))
    kept = np.flatnonzero(~empty & ~long)
    return kept, PairStats(
        kept=len(kept), dropped_too_long=int(long.sum()), dropped_empty=int(empty.sum())
    )


class PairFeed:
    """Endless fixed-shape batches ([batch_size, length] both sides) of a random-access pair
    source (`pairs[i]` -> (source ids, target ids), no EOS), for the training loop.

    Epoch e visits the pairs that fit (`kept`) in a keyed permutation (`lazy.epoch_order`: no
    table). The stream is cut into chunks of `window` pairs; each chunk is packed
    (`pack_pairs`) or batched one pair per row (`bucket_batches` with the one boundary
    `length`), its last batch filled with empty rows. Chunk c is a pure function of
    (seed, c), so the state is two integers: exact resume. Process p of n takes its block
    of every batch's rows.
    """

    def __init__(
        self,
        pairs,
        kept: np.ndarray,
        batch_size: int,
        length: int,
        *,
        pack: bool,
        window: int = 4096,
        pad_id: int,
        start_id: int,
        eos_id: int,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if not len(kept):
            raise ValueError(f"no pair fits the length limit {length}: raise data.seq_len.")
        self.pairs, self.kept = pairs, np.asarray(kept, np.int64)
        self.b, self.length, self.pack = batch_size, length, pack
        self.ids = dict(pad_id=pad_id, start_id=start_id, eos_id=eos_id)
        self.seed, self.window = seed, max(1, window)
        self.pi, self.pc = process_index, process_count
        self.chunk, self.k = 0, 0
        self._cache = (-1, [])

    def _order(self, c: int) -> np.ndarray:
        from jaxformer.data.lazy import epoch_order

        q = c * self.window + np.arange(self.window, dtype=np.int64)
        return self.kept[epoch_order(q, len(self.kept), self.seed)[0]]

    def batches(self, c: int) -> list[dict]:
        """The global batches of chunk c."""
        pairs = (self.pairs[int(i)] for i in self._order(c))
        L, ids = self.length, self.ids
        if self.pack:
            out = list(pack_pairs(pairs, self.b, L, L, window=self.window, **ids))
        else:
            out = list(
                bucket_batches(
                    pairs, [L], pad_id=ids["pad_id"], batch_size=self.b, eos_id=ids["eos_id"]
                )
            )
        last, short = out[-1], self.b - len(out[-1]["input_ids"])
        if short:  # empty rows: no token, no loss
            pad = ("input_ids", "decoder_input_ids", "labels")
            out[-1] = {
                k: np.concatenate(
                    [v, np.full((short,) + v.shape[1:], ids["pad_id"] if k in pad else 0, v.dtype)]
                )
                for k, v in last.items()
            }
        return out

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._cache[0] != self.chunk:
            self._cache = (self.chunk, self.batches(self.chunk))
        chunk = self._cache[1]
        batch = chunk[self.k]
        self.k += 1
        if self.k == len(chunk):
            self.chunk, self.k = self.chunk + 1, 0
        per = self.b // self.pc
        return {k: v[self.pi * per : (self.pi + 1) * per] for k, v in batch.items()}

    def get_state(self) -> dict:
        return {"chunk": self.chunk, "batch": self.k}

    def set_state(self, state) -> None:
        self.chunk, self.k = int(state["chunk"]), int(state["batch"])
