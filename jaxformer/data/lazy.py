"""Pretraining examples built lazily from a store: example i of epoch e is a pure function of
(seed, i, e), computed when read, so memory does not grow with the corpus.

Instances are anchored on the token stream of a range of documents: instance i of copy c
(of `dupe_factor`) starts at the sentence holding token `i * stride + c * stride / dupe_factor`
(stride = the instance's token budget), so an epoch reads every sentence about once and the
copies are segmented differently. From there, with BERT's rules (`pretraining.py`):

  nsp/sop  A chunk of the anchor's document reaching the target length (max, or with
           probability `short_seq_prob` a random shorter one), at least two sentences, split
           at a random sentence into A and B. NSP: half the time B comes from a random other
           document (label 1); the sentences not used go to the next packed instance. SOP:
           half the time A and B swap (label 1). Pairs over the limit lose tokens from the
           longer side, front or back at random.
  none     Whole sentences up to the target, crossing documents with a separator (RoBERTa
           FULL-SENTENCES); a sentence longer than a row is cut.

Differences from the eager builder, which the lazy design forces: an instance never crosses
a shard (a row ends early at a shard end), sentences left unused by an NSP instance are not
returned to the pool, and a document with a single sentence is split inside that sentence
into A and B (the eager builder skips it).

Packed rows (`pack=True`) hold consecutive instances from the anchor until the row is full
(the last one shortened to fit), at most `max_segments`. Masking: "static" (drawn from
(seed, copy, i): the same every epoch), "dynamic" (from (seed, epoch, i)), or "device" (no
mask: the batch carries unmasked ids and the train step masks).

`store_batches` turns this into a grain MapDataset of batches for one process: the global
order is a keyed permutation of each epoch (no list of indices is kept), and process p of n
takes every n-th example, so `DataIterator.get_state()` is one integer.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import sys

import numpy as np

from jaxformer.data.masking import Masker
from jaxformer.data.packing import default_packed_predictions

__all__ = ["StoreExamples", "store_batches", "permute"]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIN_SEGMENT = 8  # a packed row takes no more instances once fewer body tokens fit


def _mix(z: int) -> int:
    """splitmix64's finalizer: a bijective 64-bit hash."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _M64
    return z ^ (z >> 31)


class _Rand:
    """A counter-based random stream keyed by integers: cheap to create per example and the
    same on every machine (numpy Generators cost ~10 us each to seed)."""

    __slots__ = ("key", "n")

    def __init__(self, *keys: int):
        k = 0x6A09E667F3BCC908
        for v in keys:
            k = _mix((k ^ (int(v) & _M64)) + _GOLDEN & _M64)
        self.key, self.n = k, 0

    def u64(self) -> int:
        self.n += 1
        return _mix(self.key + self.n * _GOLDEN & _M64)

    def random(self) -> float:
        return (self.u64() >> 11) * (1.0 / (1 << 53))

    def randint(self, a: int, b: int) -> int:
        """Uniform in [a, b] (inclusive)."""
        return a + self.u64() % (b - a + 1)

    def heads(self, k: int) -> int:
        """Heads among k fair coin flips (Binomial(k, 1/2))."""
        total = 0
        while k > 0:
            take = min(k, 64)
            total += bin(self.u64() & ((1 << take) - 1)).count("1")
            k -= take
        return total


def _mix_np(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def permute(j: np.ndarray, n: int, key: int) -> np.ndarray:
    """A keyed permutation of range(n) applied to `j` (vectorised; no table): a 4-round
    Feistel network on ceil(log2 n) bits, cycle-walking past values >= n."""
    bits = max(2, (n - 1).bit_length())
    lo_bits = bits // 2
    lo_mask, hi_mask = np.uint64((1 << lo_bits) - 1), np.uint64((1 << (bits - lo_bits)) - 1)
    keys = [np.uint64(_mix((key + r * _GOLDEN) & _M64)) for r in range(4)]
    x = np.asarray(j, np.uint64).copy()
    todo = np.ones(x.shape, bool)
    with np.errstate(over="ignore"):
        while todo.any():
            y = x[todo]
            left, right = y >> np.uint64(lo_bits), y & lo_mask
            for r, k in enumerate(keys):  # alternate halves of unequal width
                if r % 2 == 0:
                    left = (left ^ _mix_np(right ^ k)) & hi_mask
                else:
                    right = (right ^ _mix_np(left ^ k)) & lo_mask
            y = (left << np.uint64(lo_bits)) | right
            x[todo] = y
            todo[todo] = y >= np.uint64(n)
    return x.astype(np.int64)


def epoch_order(q: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(item, epoch) at global positions `q` of a stream of epochs over n items: epoch e
    visits the items in the keyed permutation `permute(., n, f(seed, e))`."""
    epoch, j = np.divmod(q, n)
    idx = np.empty_like(j)
    for e in np.unique(epoch):
        at = epoch == e
        idx[at] = permute(j[at], n, _mix((seed << 20) ^ int(e)))
    return idx, epoch


@dataclasses.dataclass
class _Segment:
    ids: np.ndarray  # int32, with specials
    types: np.ndarray
    starts: np.ndarray | None  # bool: sentence starts (whole-word device masking), or None
    label: int | None


class _Window:
    """The token reads of one row: one read of a stretch of a shard from the first span on,
    converted to int32 once; later spans inside it are slices (a span outside re-reads)."""

    __slots__ = ("tokens", "size", "k", "lo", "hi", "data")

    def __init__(self, tokens, size: int):
        self.tokens, self.size = tokens, size
        self.k, self.lo, self.hi, self.data = -1, 0, 0, None

    def get(self, k: int, a: int, b: int) -> np.ndarray:
        if k != self.k or a < self.lo or b > self.hi:
            t = self.tokens[k]
            self.k, self.lo, self.hi = k, a, min(len(t), max(b, a + self.size))
            self.data = np.asarray(t[a : self.hi], np.int32)
        return self.data[a - self.lo : b - self.lo]


class StoreExamples:
    """Fixed-shape examples over documents [lo, hi) of a `Store`, built on demand.

    config: a `pretraining.PretrainingConfig` (max_seq_len, objective, short_seq_prob,
    dupe_factor, masking). masking: "static" | "dynamic" | "device". whole_word: with device
    masking, batches carry `word_starts`.
    """

    def __init__(
        self,
        store,
        tokenizer,
        config,
        *,
        documents: tuple[int, int] | None = None,
        seed: int = 0,
        masking: str = "dynamic",
        pack: bool = False,
        max_segments: int = 16,
        packed_max_predictions: int | None = None,
    ):
        if config.objective not in ("nsp", "sop", "none"):
            raise ValueError(f"objective must be 'nsp', 'sop' or 'none', got {config.objective!r}")
        if masking not in ("static", "dynamic", "device"):
            raise ValueError(f"masking must be static, dynamic or device, got {masking!r}")
        self.store, self.tok, self.cfg = store, tokenizer, config
        self.seed, self.masking, self.pack = seed, masking, pack
        self.max_segments = max_segments if pack else 1
        self.pair = config.objective != "none"
        self.L = config.max_seq_len
        self.n_special = tokenizer.num_special_tokens(pair=self.pair)
        self.max_tokens = self.L - self.n_special
        # Sentence starts are tracked only where they reach the batch (`word_starts`).
        self._marks = masking == "device" and config.masking.whole_word
        if self.max_tokens < 2:
            raise ValueError(f"max_seq_len={self.L} leaves no room for two segments")
        lo, hi = (0, store.num_documents) if documents is None else documents
        if not 0 <= lo < hi <= store.num_documents:
            raise ValueError(f"document range [{lo}, {hi}) is empty or outside the store")
        if config.objective == "nsp" and hi - lo < 2:
            raise ValueError(f"NSP needs at least 2 documents, the range has {hi - lo}")
        self.doc_lo, self.doc_hi = lo, hi
        # Per shard: global token base and the sentence range inside [lo, hi).
        sizes = [len(t) for t in store.tokens]
        self.tok_base = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # Per-shard bases as lists: bisect on a few ints beats a numpy call per lookup.
        self._tok_base, self._doc_base = self.tok_base.tolist(), store.doc_base.tolist()
        self.sent_range = []
        for k, docs in enumerate(store.documents):
            a = int(np.clip(lo - store.doc_base[k], 0, len(docs) - 1))
            b = int(np.clip(hi - store.doc_base[k], 0, len(docs) - 1))
            self.sent_range.append((int(docs[a]), int(docs[b])))
        self.tok_lo, self.tok_hi = self._doc_token(lo), self._doc_token(hi)
        self.stride = self.L if pack else self.max_tokens
        self.n_anchor = max(1, math.ceil((self.tok_hi - self.tok_lo) / self.stride))
        self.masker = None
        self.max_predictions = config.masking.max_predictions
        if pack:
            self.max_predictions = packed_max_predictions or default_packed_predictions(config)
        if masking != "device":
            m = dataclasses.replace(config.masking, max_predictions=self.max_predictions)
            self.masker = Masker(tokenizer, m)
        # The tokenizer's layout of specials around A (and B), read once from build_inputs.
        ids, types = tokenizer.build_inputs([-1], [-2] if self.pair else None)
        ids, types = np.asarray(ids, np.int32), np.asarray(types, np.int32)
        cut = [int(np.flatnonzero(ids == m)[0]) for m in ((-1, -2) if self.pair else (-1,))]
        pieces, piece_types = np.split(ids, cut), np.split(types, cut)
        self._head, self._head_type = pieces[0], piece_types[0]
        self._tails = [(p[1:], t[1:]) for p, t in zip(pieces[1:], piece_types[1:])]
        self._body_types = [np.full(self.L, types[c], np.int32) for c in cut]  # sliced per body

    def __len__(self) -> int:
        """Examples (rows) per epoch."""
        return self.n_anchor * self.cfg.dupe_factor

    # ---- positions ------------------------------------------------------------------
    def _doc_token(self, d: int) -> int:
        st = self.store
        if d >= st.num_documents:
            return int(self.tok_base[-1])
        k, j = st.shard_of_document(d)
        return int(self.tok_base[k] + st.sentences[k][st.documents[k][j]])

    def _locate(self, g: int) -> tuple[int, int]:
        """(shard, sentence) holding global token g (inside the document range)."""
        k = bisect.bisect_right(self._tok_base, g) - 1
        off = self.store.sentences[k]
        s = int(off.searchsorted(g - self._tok_base[k], "right")) - 1
        s0, s1 = self.sent_range[k]
        return k, min(max(s, s0), s1 - 1)

    def _doc_bounds(self, k: int, s: int) -> tuple[int, int, int]:
        """(first sentence, end sentence, index in the shard) of the document holding s."""
        docs = self.store.documents[k]
        j = int(docs.searchsorted(s, "right")) - 1
        return int(docs[j]), int(docs[j + 1]), j

    def _span(self, k: int, s0: int, s1: int, w: _Window):
        """(int32 ids of sentences [s0, s1), their starts in it or None)."""
        off = self.store.sentences[k]
        a, b = int(off[s0]), int(off[s1])
        return w.get(k, a, b), (off[s0:s1] - a) if self._marks else None

    def _inputs(self, *bodies):
        """(ids, types) of A (and B) with the tokenizer's specials (`build_inputs` layout)."""
        ids, types = [self._head], [self._head_type]
        for body, (tail, tail_type), body_type in zip(bodies, self._tails, self._body_types):
            ids += [body, tail]
            types += [body_type[: len(body)], tail_type]
        return np.concatenate(ids), np.concatenate(types)

    def _target(self, r: _Rand, room: int) -> int:
        t = self.max_tokens
        if r.random() < self.cfg.short_seq_prob:
            t = r.randint(2, self.max_tokens)
        return min(t, room)

    # ---- one instance -----------------------------------------------------------------
    def _pair(self, k: int, s: int, r: _Rand, room: int, w: _Window):
        """(segment, next sentence) for the pair instance starting at sentence s."""
        off = self.store.sentences[k]
        target = self._target(r, room)
        d0, d1, j = self._doc_bounds(k, s)
        if d1 - d0 == 1:  # one sentence: split it (see the module docstring)
            ids, _ = self._span(k, s, s + 1, w)
            if len(ids) < 2:
                return None, s + 1
            ids = ids[: max(2, target)]
            cut = r.randint(1, len(ids) - 1)
            a, b = ids[:cut], ids[cut:]
            sa, sb = (np.array([0]), np.zeros(0, int)) if self._marks else (None, None)
            a_end = end = s + 1
        else:
            end = int(off.searchsorted(int(off[s]) + target, "left"))
            end = min(max(end, s + 2), d1)
            if end - s < 2:  # the document's last sentence: take the one before too
                s = end - 2
            a_end = r.randint(s + 1, end - 1)
            a, sa = self._span(k, s, a_end, w)
            b, sb = self._span(k, a_end, end, w)
        label = 0
        if self.cfg.objective == "nsp" and r.random() < 0.5:
            label = 1
            this = self._doc_base[k] + j
            b, sb = self._random_continuation(this, max(1, target - len(a)), r)
            end = a_end  # the unused sentences start the next instance
        if self.cfg.objective == "sop" and r.random() < 0.5:
            a, b, sa, sb, label = b, a, sb, sa, 1
        a, sa, b, sb = self._truncate(a, sa, b, sb, r, room)
        ids, types = self._inputs(a, b)
        starts = None
        if self._marks:
            starts = np.zeros(len(ids), bool)
            starts[1 + sa] = True
            starts[len(ids) - 1 - len(b) + sb] = True
        return _Segment(ids, types, starts, label), end

    def _random_continuation(self, this: int, b_target: int, r: _Rand):
        """B for a "not next" pair: sentences from a random point of a document other than
        `this` (global index)."""
        st = self.store
        other = r.randint(self.doc_lo, self.doc_hi - 2)
        other += other >= this
        k2 = bisect.bisect_right(self._doc_base, other) - 1
        j2 = other - self._doc_base[k2]
        d0, d1 = int(st.documents[k2][j2]), int(st.documents[k2][j2 + 1])
        start = r.randint(d0, d1 - 1)
        off = st.sentences[k2]
        end = int(off.searchsorted(int(off[start]) + b_target, "left"))
        return self._span(k2, start, min(max(end, start + 1), d1), _Window(st.tokens, 0))

    def _truncate(self, a, sa, b, sb, r: _Rand, limit: int):
        """BERT's trimming, one token at a time from the longer side (front or back at
        random), done in closed form: how many from each side, then how many of those
        from the front."""
        excess = len(a) + len(b) - limit
        if excess <= 0:
            return a, sa, b, sb
        ra = rb = 0
        gap = len(a) - len(b)
        if gap > 0:
            ra = min(excess, gap)
        elif gap < 0:
            rb = min(excess, -gap)
        rest = excess - ra - rb
        rb += (rest + 1) // 2  # equal lengths: b first (BERT's `a if len(a) > len(b) else b`)
        ra += rest // 2
        out = []
        for x, sx, n in ((a, sa, ra), (b, sb, rb)):
            front = r.heads(n)
            x = x[front : len(x) - (n - front)]
            if sx is not None:
                sx = sx[(sx >= front) & (sx < front + len(x))] - front
            out += [x, sx]
        return out

    def _single(self, k: int, s: int, r: _Rand, room: int, w: _Window):
        """(segment, next sentence): whole sentences from s up to the target, documents
        joined by a separator."""
        off, docs = self.store.sentences[k], self.store.documents[k]
        target = self._target(r, room)
        last = self.sent_range[k][1]
        o_s = int(off[s])
        end = min(int(off.searchsorted(o_s + target, "right")) - 1, last)
        d_lo = int(docs.searchsorted(s, "right"))
        while True:
            d_hi = int(docs.searchsorted(end, "left"))
            joins = np.asarray(docs[d_lo:d_hi])  # documents starting inside (s, end)
            if end <= s or int(off[end]) - o_s + len(joins) <= target:
                break
            end -= 1
        if end <= s:  # one sentence longer than the row: cut it
            ids = w.get(k, o_s, o_s + target)
            starts, end = np.array([0]), s + 1
        else:
            ids, starts = self._span(k, s, end, w)
            if len(joins):
                at = off[joins] - o_s
                ids = np.insert(ids, at, self.tok.sep_id)
                if starts is not None:
                    starts = starts + at.searchsorted(starts, "right")  # shifted by the seps
                    starts = np.union1d(starts, at + np.arange(len(at)))
        ids, types = self._inputs(ids)
        marks = None
        if self._marks:
            marks = np.zeros(len(ids), bool)
            marks[1 + starts] = True
        return _Segment(ids, types, marks, None), end

    # ---- rows -------------------------------------------------------------------------
    def segments(self, index: int) -> list[_Segment]:
        """The unmasked instances of row `index` (deterministic in (seed, index))."""
        copy, i = divmod(int(index), self.n_anchor)
        r = _Rand(self.seed, copy, i)
        shift = copy * self.stride // self.cfg.dupe_factor
        g = min(self.tok_lo + i * self.stride + shift, self.tok_hi - 1)
        k, s = self._locate(g)
        last = self.sent_range[k][1]
        build = self._pair if self.pair else self._single
        w = _Window(self.store.tokens, 4 * self.L)  # a row reads about L tokens from s on
        out, room, tries = [], self.L, 0
        while s < last and len(out) < self.max_segments:
            body = room - self.n_special
            if body < (_MIN_SEGMENT if out else 2):
                break
            seg, s = build(k, s, r, body, w)
            if seg is None:  # a one-token, one-sentence document
                tries += 1
                if tries > 64 or s >= last:
                    break
                continue
            out.append(seg)
            room -= len(seg.ids)
        if not out:  # only unusable documents from here to the shard end: start over at lo
            return self.segments((index + 1) % len(self)) if index + 1 < len(self) else []
        return out

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        """Row `index` of epoch `epoch` as fixed-shape numpy arrays."""
        return {k: v[0] for k, v in self.batch([index], [epoch]).items()}

    def batch(self, indices, epochs) -> dict[str, np.ndarray]:
        """Rows `indices` (of epochs `epochs`) as [batch, ...] arrays: the instances of every
        row are laid out in one flat buffer and scattered into the batch at once."""
        rows = [self.segments(int(i)) for i in indices]
        if not all(rows):
            raise ValueError("no usable documents in the range (all one token long)")
        B, L = len(rows), self.L
        segs = [x for row in rows for x in row]
        per_row = np.fromiter(map(len, rows), np.int64, B)
        lens = np.fromiter((len(x.ids) for x in segs), np.int64, len(segs))
        row_of = np.repeat(np.arange(B), per_row)
        first = np.cumsum(per_row) - per_row  # each row's first instance
        starts = np.cumsum(lens) - lens  # each instance's start in the flat buffer
        offset = starts - starts[first][row_of]  # ... and in its row
        at = np.arange(len(segs)) - first[row_of]  # the instance's place in its row
        flat = np.arange(int(lens.sum()))
        dest = flat + np.repeat(row_of * L - starts[first][row_of], lens)
        ids = np.full((B, L), self.tok.pad_id, np.int32)
        ids.reshape(-1)[dest] = np.concatenate([x.ids for x in segs])
        types = np.zeros((B, L), np.int32)
        types.reshape(-1)[dest] = np.concatenate([x.types for x in segs])
        mask = (np.arange(L) < np.add.reduceat(lens, first)[:, None]).astype(np.int32)
        labels = np.array([x.label for x in segs], np.int32) if self.pair else None
        if self.pack:
            out = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
            out["segment_ids"] = np.zeros((B, L), np.int32)
            out["segment_ids"].reshape(-1)[dest] = np.repeat(at + 1, lens)
            out["position_ids"] = np.zeros((B, L), np.int32)
            out["position_ids"].reshape(-1)[dest] = flat - np.repeat(starts, lens)
            if self.pair:
                S = self.max_segments
                out["pair_label"] = np.zeros((B, S), np.int32)
                out["pair_weights"] = np.zeros((B, S), np.float32)
                out["cls_positions"] = np.zeros((B, S), np.int32)
                out["pair_label"][row_of, at] = labels
                out["pair_weights"][row_of, at] = 1.0
                out["cls_positions"][row_of, at] = offset
        else:
            out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            if self.pair:
                out["pair_label"] = labels
        if self.masking == "device":
            if self._marks:
                marks = np.zeros((B, L), bool)
                marks.reshape(-1)[dest] = np.concatenate([x.starts for x in segs])
                out["word_starts"] = self.tok.word_starts(ids) | marks
            return out
        masked = []
        for row, (index, epoch) in enumerate(zip(indices, epochs)):
            copy, i = divmod(int(index), self.n_anchor)
            key = [self.seed, 1, copy, i]
            if self.masking == "dynamic":
                key = [self.seed, 2, int(epoch), int(index)]
            masked.append(self.masker(ids[row], np.random.default_rng(key)))
        out.update({k: np.stack([m[k] for m in masked]) for k in masked[0]})
        return out


def store_batches(
    examples: StoreExamples,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
):
    """A grain MapDataset of this process's batches [batch_size, ...] (per-process size).

    Global position q (over epochs) holds example `permute(q % n, n, (seed, q // n))`;
    process p reads positions p, p + count, ... num_epochs=None: endless.
    """
    import grain

    n = len(examples)
    per_batch = batch_size * process_count
    total = sys.maxsize // per_batch if num_epochs is None else num_epochs * n // per_batch
    if total == 0:
        raise ValueError(
            f"{n} examples per epoch do not fill one batch of {per_batch}: "
            "use more data or a smaller batch"
        )
    offsets = np.arange(batch_size, dtype=np.int64) * process_count + process_index

    def make(b: int):
        q = b * per_batch + offsets
        if shuffle:
            idx, epoch = epoch_order(q, n, seed)
        else:
            epoch, idx = np.divmod(q, n)
        return examples.batch(idx, epoch)

    return grain.MapDataset.range(total).map(make)


def held_out_warning(n_examples: int, batch_size: int) -> str | None:
    """The warning for a held-out set smaller than one eval batch, or None."""
    if n_examples >= batch_size:
        return None
    msg = (
        f"the held-out set has {n_examples} examples, fewer than one eval batch of "
        f"{batch_size}: eval repeats them to fill the batch (hold out more documents: "
        "raise data.eval_fraction)"
    )
    logging.warning(msg)
    return msg
