"""Token, position (learned and sinusoidal) and segment embeddings."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P


def sinusoidal_table(
    max_len: int, dim: int, layout: str = "interleaved", base: float = 10000.0
) -> np.ndarray:
    """`[max_len, dim]` sinusoidal positions, float32.

    interleaved (the Transformer paper): PE[p, 2i] = sin(p / base^(2i/dim)), PE[p, 2i+1] = cos.
    halves (Marian / fairseq): sines in the first dim//2 columns, cosines in the rest.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even dimension, got {dim}.")
    pos = np.arange(max_len, dtype=np.float64)[:, None]
    inv = base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # [dim/2]
    ang = pos * inv[None, :]  # [max_len, dim/2]
    if layout == "interleaved":
        table = np.empty((max_len, dim), np.float64)
        table[:, 0::2], table[:, 1::2] = np.sin(ang), np.cos(ang)
    elif layout == "halves":
        table = np.concatenate([np.sin(ang), np.cos(ang)], axis=-1)
    else:
        raise ValueError(f"unknown sinusoidal layout {layout!r}; use 'interleaved' or 'halves'.")
    return table.astype(np.float32)


def segment_positions(segment_ids: jnp.ndarray) -> jnp.ndarray:
    """`[batch, length]` segment ids of packed rows -> positions that restart at 0 where each
    segment begins (a change of id)."""
    b, t = segment_ids.shape
    idx = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    starts = jnp.concatenate(
        [jnp.ones((b, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    # Subtract from each index the index where its segment began.
    return idx - jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)


def token_positions(input_ids: jnp.ndarray, segment_ids=None) -> jnp.ndarray:
    """`[batch, length]` positions 0..length-1, restarting in each packed segment where
    `segment_ids` is given."""
    if segment_ids is not None:
        return segment_positions(segment_ids)
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


def take_rows(table: jnp.ndarray, ids: jnp.ndarray) -> jnp.ndarray:
    """`table[ids]`: `[num, features]` rows at int `ids [...]` -> `[..., features]`.

    Under a mesh with Explicit axes (the default of `jax.make_mesh`) a gather of a
    replicated table at batch-sharded ids has no unambiguous output sharding, so the
    output is declared to follow the ids; elsewhere (no mesh, Auto axes) it is a plain take
    and the compiler picks the layout.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not mesh.explicit_axes:
        return jnp.take(table, ids, axis=0)
    spec = tuple(jax.typeof(ids).sharding.spec)
    spec += (None,) * (ids.ndim - len(spec))
    return table.at[ids].get(out_sharding=P(*spec, None))


class Embed(nn.Module):
    """A lookup table `[num, features]` with `attend` for tied output projections."""

    num_embeddings: int
    features: int
    axes: tuple = ("vocab", "embed")
    init_std: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(self.init_std), self.axes),
            (self.num_embeddings, self.features),
            self.param_dtype,
        )

    def __call__(self, ids):
        # [..., ] int -> [..., features]; take on the table keeps it shardable over vocab.
        return take_rows(jnp.asarray(self.embedding, self.dtype), ids)

    def attend(self, x):
        """[..., features] -> [..., num_embeddings]: logits against the table (tied decoder)."""
        return jnp.einsum("...e,ve->...v", x, jnp.asarray(self.embedding, self.dtype))


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal position embeddings, added by the caller."""

    max_len: int
    features: int
    layout: str = "interleaved"

    @nn.compact
    def __call__(self, position_ids):
        table = jnp.asarray(sinusoidal_table(self.max_len, self.features, self.layout))
        return take_rows(table, position_ids)
