"""Attention masks in one vocabulary: boolean `[batch, heads|1, q_len, kv_len]`, True = attend."""

from __future__ import annotations


import jax.numpy as jnp


def padding_mask(kv_mask: jnp.ndarray) -> jnp.ndarray:
    """`[batch, kv_len]` (1 = real token) -> `[batch, 1, 1, kv_len]`: every query sees real keys.

    Query rows at padded positions still see the real keys (as in BERT), so their outputs stay
    finite; losses weight them out.
    """
    return kv_mask.astype(bool)[:, None, None, :]


def causal_mask(q_len: int, kv_len: int | None = None, offset: int = 0) -> jnp.ndarray:
    """`[1, 1, q_len, kv_len]`: query i (at absolute position i + offset) sees keys <= it."""
    kv_len = q_len if kv_len is None else kv_len
    q = jnp.arange(q_len)[:, None] + offset
    k = jnp.arange(kv_len)[None, :]
    return (k <= q)[None, None]


def segment_mask(q_segments: jnp.ndarray, kv_segments: jnp.ndarray | None = None) -> jnp.ndarray:
    """Packed rows: `[batch, q_len]` segment ids (0 = padding) -> `[batch, 1, q_len, kv_len]`,
    True where query and key belong to the same segment."""
    kv_segments = q_segments if kv_segments is None else kv_segments
    return q_segments[:, None, :, None] == kv_segments[:, None, None, :]


def sliding_window_mask(q_len: int, kv_len: int | None = None, window: int = 0) -> jnp.ndarray:
    """`[1, 1, q_len, kv_len]`: bidirectional band, query i sees keys j with |i - j| <= window.

    Inside a packed row the band and `segment_mask` together keep each window in its segment.
    """
    kv_len = q_len if kv_len is None else kv_len
    d = jnp.arange(q_len)[:, None] - jnp.arange(kv_len)[None, :]
    return (jnp.abs(d) <= window)[None, None]


def combine(*masks: jnp.ndarray | None) -> jnp.ndarray | None:
    """Logical AND of the masks that are not None (broadcasting); None if all are None."""
    out = None
    for m in masks:
        if m is None:
            continue
        out = m if out is None else jnp.logical_and(out, m)
    return out


def make_attention_mask(
    attention_mask=None, segment_ids=None, causal: bool = False, q_len: int | None = None
) -> jnp.ndarray | None:
    """The mask for self-attention from the usual inputs (any may be None)."""
    pad = padding_mask(attention_mask) if attention_mask is not None else None
    seg = segment_mask(segment_ids) if segment_ids is not None else None
    cau = None
    if causal:
        n = (
            q_len
            if q_len is not None
            else (attention_mask if attention_mask is not None else segment_ids).shape[-1]
        )
        cau = causal_mask(n)
    return combine(pad, seg, cau)
