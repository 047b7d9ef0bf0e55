"""Dropout whose mask costs half the random bits of `jax.random.bernoulli`.

Each 32-bit threefry word gives two 16-bit uniforms, so a mask draws half as many threefry
blocks as `flax.linen.Dropout` (on CPU the draws are a visible share of a BERT train step).
The keep probability is quantised to 1/65536 (0.9 -> 0.899994) and the kept values are
scaled by exactly that probability, so the expectation is unchanged.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

_LEVELS = 1 << 16


def keep_mask(rng, shape: tuple, keep_prob: float) -> tuple[jnp.ndarray, float]:
    """(bool mask of `shape` with P(True) = q, q) where q = round(keep_prob * 2^16) / 2^16."""
    threshold = int(round(keep_prob * _LEVELS))
    q = threshold / _LEVELS
    if not shape or shape[-1] % 2:
        return jax.random.bits(rng, shape, jnp.uint16) < threshold, q
    words = jax.random.bits(rng, shape[:-1] + (shape[-1] // 2,), jnp.uint32)
    halves = jnp.stack([words & 0xFFFF, words >> 16], axis=-1).reshape(shape)
    return halves < threshold, q


def dropout(x: jnp.ndarray, rate: float, rng) -> jnp.ndarray:
    """Inverted dropout of `x` at `rate` (zeros, or x / keep probability)."""
    if rate <= 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep, q = keep_mask(rng, x.shape, 1.0 - rate)
    return jnp.where(keep, x / jnp.asarray(q, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
    """Drop-in for `nn.Dropout(rate)(x, deterministic)` using `dropout` above."""

    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        if deterministic or self.rate == 0.0:
            return x
        return dropout(x, self.rate, self.make_rng("dropout"))
