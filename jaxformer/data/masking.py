"""Masked-language-model masking (BERT): pick ~15% of tokens, then 80% [MASK] / 10% random /
10% unchanged. Special tokens are never picked. Whole-word masking picks whole words.

The number picked in a sequence with `c` maskable tokens is `p * c` rounded *stochastically*
(floor, plus one with probability equal to the fraction), capped at `max_predictions`: the
expected rate is exactly `p` at every length, where BERT's `round` drifts for short
sequences. With whole-word masking, words are taken in random order and a word that would
overflow the count is skipped (as BERT does), so the count can fall short by a few tokens.

Output ("gathered" form, what the model consumes): `mlm_positions` [P] int32 (sorted),
`mlm_ids` [P] int32 (the original ids), `mlm_weights` [P] float32 (1 real, 0 padding);
`dense_labels` turns them into the full-length `labels` form (-100 where not predicted).
Randomness comes only from the numpy Generator passed in: same generator state, same masks.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["MaskingConfig", "Masker", "mask_tokens", "dense_labels"]

IGNORE_INDEX = -100


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    mlm_probability: float = 0.15  # fraction of maskable tokens predicted
    max_predictions: int = 20  # P: BERT uses 20 for 128 tokens, 80 for 512
    mask_fraction: float = 0.8  # of predicted tokens: replaced by [MASK]
    random_fraction: float = 0.1  # ... replaced by a random non-special token; rest unchanged
    whole_word: bool = False  # pick whole words (needs word starts)


def _num_to_predict(n_candidates: int, cfg: MaskingConfig, rng: np.random.Generator) -> int:
    expected = cfg.mlm_probability * n_candidates
    n = int(expected) + int(rng.random() < expected - int(expected))
    return min(n, cfg.max_predictions, n_candidates)


def _whole_word_positions(
    candidates: np.ndarray, word_starts: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    word_of = np.cumsum(word_starts) - 1  # [L] word index of each token
    cand_words = word_of[candidates]
    # Words made only of candidates (a special is its own word, so this is all of them).
    starts = np.flatnonzero(np.r_[True, cand_words[1:] != cand_words[:-1]])
    groups = np.split(candidates, starts[1:])
    chosen, total = [], 0
    for g in rng.permutation(len(groups)):
        size = len(groups[g])
        if total + size > n:
            continue  # BERT: skip words that would overflow
        chosen.append(groups[g])
        total += size
        if total == n:
            break
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def mask_tokens(
    input_ids: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_id: int,
    special_ids: np.ndarray,
    random_ids: np.ndarray,
    config: MaskingConfig,
    word_starts: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Masks one sequence `input_ids` [L] (padding must be among `special_ids`).

    random_ids: the ids a "random" replacement is drawn from (the non-special vocabulary).
    word_starts [L] bool: required if config.whole_word.
    Returns input_ids (masked copy), mlm_positions, mlm_ids, mlm_weights (see module doc).
    """
    ids = np.asarray(input_ids)
    candidates = np.flatnonzero(~np.isin(ids, special_ids))
    n = _num_to_predict(len(candidates), config, rng)
    if config.whole_word:
        if word_starts is None:
            raise ValueError("whole-word masking needs word_starts")
        positions = _whole_word_positions(candidates, np.asarray(word_starts, bool), n, rng)
    else:
        positions = np.sort(rng.choice(candidates, size=n, replace=False))
    n = len(positions)
    originals = ids[positions]
    u = rng.random(n)
    replaced = np.where(u < config.mask_fraction, mask_id, originals)
    randomize = (u >= config.mask_fraction) & (u < config.mask_fraction + config.random_fraction)
    replaced = np.where(randomize, rng.choice(random_ids, size=n), replaced)
    masked = ids.copy()
    masked[positions] = replaced
    p = config.max_predictions
    out_pos = np.zeros(p, np.int32)
    out_ids = np.zeros(p, np.int32)
    weights = np.zeros(p, np.float32)
    out_pos[:n], out_ids[:n], weights[:n] = positions, originals, 1.0
    return {
        "input_ids": masked.astype(np.int32),
        "mlm_positions": out_pos,
        "mlm_ids": out_ids,
        "mlm_weights": weights,
    }


def dense_labels(
    mlm_positions: np.ndarray, mlm_ids: np.ndarray, mlm_weights: np.ndarray, length: int
) -> np.ndarray:
    """Full-length labels [..., length]: the original id where predicted, else -100."""
    pos, ids, w = map(np.asarray, (mlm_positions, mlm_ids, mlm_weights))
    labels = np.full(pos.shape[:-1] + (length,), IGNORE_INDEX, np.int32)
    batch = np.indices(pos.shape)[:-1]
    real = w > 0
    labels[tuple(b[real] for b in batch) + (pos[real],)] = ids[real]
    return labels


class Masker:
    """`mask_tokens` bound to a tokenizer's [MASK], specials, vocabulary and word starts."""

    def __init__(self, tokenizer, config: MaskingConfig = MaskingConfig()):
        self.config = config
        self.tokenizer = tokenizer
        self.mask_id = tokenizer.mask_id
        self.special_ids = tokenizer.special_ids
        self.random_ids = np.setdiff1d(np.arange(tokenizer.vocab_size), tokenizer.special_ids)

    def __call__(self, input_ids: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        starts = self.tokenizer.word_starts(input_ids) if self.config.whole_word else None
        return mask_tokens(
            input_ids,
            rng,
            mask_id=self.mask_id,
            special_ids=self.special_ids,
            random_ids=self.random_ids,
            config=self.config,
            word_starts=starts,
        )
