"""Rotary position embeddings (RoPE, Su et al. 2021) in the "halves" layout of GPT-NeoX,
LLaMA and ModernBERT: dimension i of the first half rotates with dimension i + d/2."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def inverse_frequencies(dim: int, theta: float) -> np.ndarray:
    """`[dim/2]` float32: theta^(-2i/dim), the angle per position of each rotated pair."""
    if dim % 2:
        raise ValueError(f"rotary embeddings need an even head dimension, got {dim}.")
    return (1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)).astype(np.float32)


def rotary_tables(positions: jnp.ndarray, dim: int, theta: float) -> tuple[jnp.ndarray, ...]:
    """positions `[batch, length]` int -> (cos, sin), each `[batch, length, dim]` float32."""
    inv = jnp.asarray(inverse_frequencies(dim, theta))
    angles = positions.astype(jnp.float32)[..., None] * inv  # [b, t, dim/2]
    angles = jnp.concatenate([angles, angles], axis=-1)  # [b, t, dim]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotates `x` `[batch, length, heads, dim]` by the tables `[batch, length, dim]`, in
    float32 whatever x's dtype (bf16 angles drift at long positions); returns x's dtype."""
    xf = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)  # rotate_half
    out = xf * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)
