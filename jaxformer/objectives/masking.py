"""Dynamic MLM masking on the device: the host masker's semantics (`jaxformer.data.masking`,
whose module doc defines them) as one jittable function of a PRNG key, so the host ships
only token ids.

Per row: `c` maskable tokens (not a special id, not padding), `n = p * c` rounded
stochastically (expected rate exactly `p`), capped at the `P` prediction slots; then 80%
[MASK] / 10% a random non-special id / 10% unchanged. With `word_starts`, whole words are
taken in random order and a word that would overflow `n` is skipped, as the host does. On a
packed row (several examples, `segment_ids`) the count is drawn for the whole row; the
specials of every segment are excluded by id.

Every step is a sort, cumulative sum or gather within a row (no top-k, no scatter: XLA's
partitioner gathers the whole batch for those): memory is O(B * L), and a batch sharded
over devices stays sharded (the only collective is one flag per whole-word pass).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["device_mask"]


def _num_to_predict(key, maskable, p: float, cap: int):
    """Stochastic rounding of p * c per row [B], capped at `cap` and at c."""
    c = maskable.sum(-1)
    expected = p * c.astype(jnp.float32)
    base = jnp.floor(expected)
    up = jax.random.uniform(key, base.shape) < expected - base
    n = base.astype(jnp.int32) + up.astype(jnp.int32)
    return jnp.minimum(n, jnp.minimum(cap, c))


def _random_keys(key, shape):
    """Distinct random int32 keys >= 0 per row [B, L]: random high bits, the position in the
    low bits (`& (2**_pos_bits(L) - 1)` recovers it). One-operand sorts are the cheap ones."""
    L = shape[1]
    bits = jax.random.bits(key, shape, jnp.uint32) >> (1 + _pos_bits(L))
    return (bits.astype(jnp.int32) << _pos_bits(L)) | jnp.arange(L, dtype=jnp.int32)


def _pos_bits(L: int) -> int:
    return max(1, int(L - 1).bit_length())


def _pick_tokens(key, maskable, n):
    """n uniformly random maskable tokens per row -> [B, L] bool.

    Scores are random bits with the position in the low bits, so they are distinct within a
    row and the n-th largest is an exact threshold.
    """
    L = maskable.shape[1]
    score = jnp.where(maskable, _random_keys(key, maskable.shape), -1)
    ranked = jnp.sort(score, axis=1)  # ascending; the n-th largest sits at L - n
    thr = jnp.take_along_axis(ranked, jnp.clip(L - n, 0, L - 1)[:, None], axis=1)  # [B, 1]
    return maskable & (score >= thr) & (n > 0)[:, None]


def _pick_words(key, maskable, word_starts, n):
    """Whole words in random order, skipping a word that would overflow n -> [B, L] bool.

    A word is named by its first position; a run of maskable tokens never shares a word with
    a non-maskable one (a change of maskability starts a word).
    """
    B, L = maskable.shape
    pos = jnp.arange(L, dtype=jnp.int32)
    prev = jnp.pad(maskable[:, :-1], ((0, 0), (1, 0)), constant_values=False)
    starts = word_starts.astype(bool) | (maskable != prev)
    starts = starts.at[:, 0].set(True)
    # Size of the word starting at j: the next start after j, minus j.
    next_start = jax.lax.cummin(jnp.where(starts, pos, L), axis=1, reverse=True)
    next_start = jnp.pad(next_start[:, 1:], ((0, 0), (0, 1)), constant_values=L)
    eligible = starts & maskable
    size = jnp.where(eligible, next_start - pos, L + 1)  # L + 1: never fits
    low = (1 << _pos_bits(L)) - 1
    last = jnp.iinfo(jnp.int32).max & ~low  # ineligible words after every eligible one
    order = jnp.sort(jnp.where(eligible, _random_keys(key, (B, L)), last | pos), axis=1) & low
    s = jnp.take_along_axis(size, order, axis=1)  # [B, L] sizes in random word order

    # Greedy over the random order: from the pointer, the first word that fits, then the
    # longest run that fits after it; words passed over never fit later (the room only
    # shrinks). A few passes per row in practice.
    def body(carry):
        room, ptr, taken, _ = carry
        fits = (pos >= ptr[:, None]) & (s <= room[:, None])
        found = fits.any(-1)
        first = jnp.argmax(fits, axis=-1)
        after = pos >= first[:, None]
        cum = jnp.cumsum(jnp.where(after, s, 0), axis=-1)
        take = after & (cum <= room[:, None]) & found[:, None]
        room = room - jnp.where(take, s, 0).sum(-1)
        ptr = jnp.where(found, first + take.sum(-1), ptr)
        return room, ptr, taken | take, found & (room > 0)

    init = (n, jnp.zeros((B,), jnp.int32), jnp.zeros((B, L), bool), n > 0)
    _, _, taken, _ = jax.lax.while_loop(lambda c: c[3].any(), body, init)
    # Back to word order: sorting (order << 1 | taken) puts word j's flag at j.
    taken_at_start = (jnp.sort((order << 1) | taken.astype(jnp.int32), axis=1) & 1) > 0
    word_of = jax.lax.cummax(jnp.where(starts, pos, 0), axis=1)  # first position of its word
    return jnp.take_along_axis(taken_at_start, word_of, axis=1) & maskable


def _gather_positions(chosen, P: int):
    """Sorted positions of the chosen tokens in P slots -> (positions [B, P], valid [B, P])."""
    B, L = chosen.shape
    k = min(P, L)
    key = jnp.where(chosen, jnp.arange(L, dtype=jnp.int32) - L, 0)
    top = jnp.sort(key, axis=1)[:, :k] + L  # chosen positions first, ascending; then L
    valid = top < L
    positions = jnp.where(valid, top, 0)
    if k < P:
        positions = jnp.pad(positions, ((0, 0), (0, P - k)))
        valid = jnp.pad(valid, ((0, 0), (0, P - k)))
    return positions, valid


def _non_special(k, specials: np.ndarray):
    """The k-th id (0-based) that is not in the sorted unique `specials`."""
    if not specials.size:
        return k
    below = jnp.asarray(specials - np.arange(specials.size), jnp.int32)  # non-specials below
    return k + jnp.searchsorted(below, k, side="right").astype(k.dtype)


def device_mask(
    key,
    input_ids,
    *,
    special_ids,
    mask_id: int,
    vocab_size: int,
    config,
    attention_mask=None,
    word_starts=None,
    max_predictions: int | None = None,
) -> dict:
    """Masks a batch `input_ids` [B, L] with the host masker's semantics (module doc).

    special_ids: ids never masked (static; pad among them) and never drawn as a random
    replacement, which is uniform over the other ids below `vocab_size` (the tokenizer's).
    config: a `jaxformer.data.MaskingConfig` (mlm_probability, mask_fraction,
    random_fraction, max_predictions). attention_mask [B, L]: 0 marks padding, never masked.
    word_starts [B, L]: given, whole words are masked. max_predictions: P, default
    config.max_predictions.
    Returns input_ids (masked), mlm_positions [B, P] int32 (sorted), mlm_ids [B, P] int32
    (the original ids), mlm_weights [B, P] float32 (1 real, 0 unused slot, position 0).
    """
    ids = jnp.asarray(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"device_mask takes input_ids [batch, length], got shape {ids.shape}")
    P = config.max_predictions if max_predictions is None else int(max_predictions)
    specials = np.unique(np.asarray(special_ids, np.int64))
    if specials.size and (specials[0] < 0 or specials[-1] >= vocab_size):
        raise ValueError(f"special ids {specials.tolist()} must lie in [0, {vocab_size})")
    if mask_id not in specials:
        raise ValueError(f"mask_id={mask_id} must be one of the special ids")
    k_count, k_pick, k_kind, k_rand = jax.random.split(key, 4)
    maskable = ~jnp.isin(ids, jnp.asarray(specials, ids.dtype))
    if attention_mask is not None:
        maskable &= jnp.asarray(attention_mask) > 0
    n = _num_to_predict(k_count, maskable, config.mlm_probability, P)
    if word_starts is None:
        chosen = _pick_tokens(k_pick, maskable, n)
    else:
        chosen = _pick_words(k_pick, maskable, jnp.asarray(word_starts), n)

    u = jax.random.uniform(k_kind, ids.shape)
    drawn = jax.random.randint(k_rand, ids.shape, 0, vocab_size - specials.size, ids.dtype)
    replaced = jnp.where(
        u < config.mask_fraction,
        jnp.asarray(mask_id, ids.dtype),
        jnp.where(
            u < config.mask_fraction + config.random_fraction, _non_special(drawn, specials), ids
        ),
    )
    positions, valid = _gather_positions(chosen, P)
    originals = jnp.take_along_axis(ids, positions, axis=1)
    return {
        "input_ids": jnp.where(chosen, replaced, ids),
        "mlm_positions": positions.astype(jnp.int32),
        "mlm_ids": jnp.where(valid, originals, 0).astype(jnp.int32),
        "mlm_weights": valid.astype(jnp.float32),
    }
