"""Attention kernels and the per-backend choice behind `attention_kernel="auto"`.

Every kernel takes q [b, q, n, d], k/v [b, k, n, d] and the library's boolean mask
(broadcastable to [b, n|1, q, k], True = attend) and returns [b, q, n, d]. The fused kernels
do not read the dense mask: they get its structure, recovered from it inside the step.

- `xla`: `jax.nn.dot_product_attention(implementation="xla")`, any mask.
- `einsum`: the explicit reference (float32 softmax); the only kernel with attention dropout.
- `cudnn`: cuDNN flash attention; a key-padding mask ([b, 1, 1, k]) goes in as
  `key_value_seq_lengths` (no dense bias). Masks that are not right padding (left padding,
  holes), per-query masks (packed segments, causal), float32 compute, head_dim not a
  multiple of 8 or above 128, and single-query decoding steps run the `xla` kernel instead.
- `splash`: TPU splash attention with segment ids (self-attention; the segment ids are
  recovered from a block-diagonal mask, padding included); other masks run `xla`.
- `pallas`: the Pallas GPU (Triton) flash kernel with segment ids, under the same rule.
- `auto` (the default): GPU -> `cudnn`, TPU -> `splash`, anything else -> `xla`; with
  attention dropout on (training with `attention_dropout > 0`) every kernel runs `einsum`.

A kernel that cannot take a given mask falls back to `xla` with a runtime `lax.cond` where the
structure is only known from the values (right padding, block-diagonal), and statically where
the shape decides (cross-attention, lengths not a multiple of the Pallas block). Pallas kernels
run inside `shard_map` over the mesh of the step (batch and heads split as the logical rules
say), since GSPMD cannot partition them. See docs/accelerators.md.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxformer.layers import masks as masks_lib
from jaxformer.layers.dropout import dropout as dropout_fn

__all__ = [
    "KERNELS",
    "attend",
    "resolve_kernel",
    "key_lengths",
    "segment_ids_from_mask",
]

Array = jnp.ndarray
KERNELS = ("auto", "xla", "einsum", "cudnn", "splash", "pallas")
_AUTO = {"gpu": "cudnn", "cuda": "cudnn", "tpu": "splash"}
_PALLAS_BLOCK = 128  # both Pallas kernels tile q and k by 128 (their default block sizes)


def resolve_kernel(kernel: str, backend: str | None = None, *, dropout: bool = False) -> str:
    """The kernel that runs for `kernel` on `backend` (default: jax's default backend).

    Attention dropout (training with `attention_dropout > 0`) always runs `einsum`: the fused
    kernels apply none, and skipping it silently would change the model."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; use one of {', '.join(KERNELS)}.")
    if dropout:
        return "einsum"
    if kernel != "auto":
        return kernel
    backend = jax.default_backend() if backend is None else backend
    return _AUTO.get(backend, "xla")


def key_lengths(mask: Array) -> tuple[Array, Array]:
    """A key-padding mask [b, 1, 1, k] -> (lengths [b] int32, whether every row is a prefix:
    True for right padding, False for left padding or holes)."""
    m = mask[:, 0, 0, :]
    lengths = jnp.sum(m, axis=-1, dtype=jnp.int32)
    prefix = jnp.arange(m.shape[-1])[None, :] < lengths[:, None]
    return lengths, jnp.all(m == prefix)


def segment_ids_from_mask(mask: Array) -> tuple[Array, Array]:
    """A self-attention mask [b, 1, t, t] -> (segment ids [b, t] int32, exact: bool scalar).

    Each query row's id is the position of the first key it sees (-1 when it sees none, as
    padding rows of packed batches). For the masks packing and padding build (block-diagonal,
    padding keys hidden) the ids reproduce the mask exactly on every row that sees a key;
    `exact` says whether they do, so a caller falls back to the dense mask when not."""
    m = mask[:, 0]  # [b, t, t]
    any_key = jnp.any(m, axis=-1)
    ids = jnp.where(any_key, jnp.argmax(m, axis=-1), -1).astype(jnp.int32)
    rebuilt = ids[:, :, None] == ids[:, None, :]
    exact = jnp.all(jnp.where(any_key[:, :, None], rebuilt == m, True))
    return ids, exact


# -- kernels -------------------------------------------------------------------------------
def _einsum(q, k, v, mask, scale, dropout_rate=0.0, dropout_rng=None, bias=None):
    # Softmax in float32 whatever the compute dtype: bf16 logits lose the small
    # probabilities that matter for long rows.
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if dropout_rate > 0.0:
        probs = dropout_fn(probs, dropout_rate, dropout_rng)
    return jnp.einsum("bnqk,bknd->bqnd", probs.astype(v.dtype), v)


def _xla(q, k, v, mask, scale, window=None, bias=None):
    if bias is not None:
        bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        bias=bias,
        mask=mask,
        scale=scale,
        local_window_size=window,
        implementation="xla",
    )


def _is_key_padding(mask, q, k) -> bool:
    return mask is not None and mask.ndim == 4 and mask.shape[1:3] == (1, 1)


def _cudnn_fits(q) -> bool:
    """cuDNN flash attention's documented envelope: half precision, head_dim a multiple of 8
    up to 128; single-query decoding steps stay on XLA."""
    d = q.shape[-1]
    half = q.dtype in (jnp.bfloat16, jnp.float16)
    return half and d % 8 == 0 and d <= 128 and q.shape[1] > 1


def _cudnn(q, k, v, mask, scale, implementation="cudnn"):
    """Flash attention with padding as lengths. `implementation` is "xla" only in tests, where
    the same lengths path runs on CPU."""
    fused = functools.partial(
        jax.nn.dot_product_attention, scale=scale, implementation=implementation
    )
    if not _cudnn_fits(q):
        return _xla(q, k, v, mask, scale)
    if mask is None:
        return fused(q, k, v)
    if not _is_key_padding(mask, q, k) or mask.shape[0] != q.shape[0]:
        return _xla(q, k, v, mask, scale)
    lengths, prefix = key_lengths(mask)
    return lax.cond(
        prefix,
        lambda: fused(q, k, v, key_value_seq_lengths=lengths),
        lambda: _xla(q, k, v, mask, scale),
    )


def _segment_ids(mask, q, k, separate: bool):
    """(q ids [b, t], kv ids [b, t], exact) for a self-attention mask, or None when the shape
    rules segment ids out. `separate`: the kernel takes different ids for queries and keys."""
    b, t = q.shape[0], q.shape[1]
    if mask is None:
        zeros = jnp.zeros((b, t), jnp.int32)
        return zeros, zeros, jnp.array(True)
    if _is_key_padding(mask, q, k):
        if not separate:  # padding query rows see the real keys: not one id per position
            return None
        kv = jnp.broadcast_to(mask[:, 0, 0, :], (b, t)).astype(jnp.int32)
        return jnp.ones((b, t), jnp.int32), kv, jnp.array(True)
    if mask.shape[1] != 1:
        return None
    ids, exact = segment_ids_from_mask(jnp.broadcast_to(mask, (b, 1, t, t)))
    return ids, ids, exact


def _pallas_fits(q, k) -> bool:
    return q.shape[1] == k.shape[1] and q.shape[1] % _PALLAS_BLOCK == 0


def _sharded(fn, q, k, v, q_ids, kv_ids):
    """Runs a Pallas kernel per shard of the current mesh: batch and heads split as the
    logical rules say (GSPMD cannot partition a Pallas call), replicated otherwise."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or math.prod(mesh.shape.values()) == 1:
        return fn(q, k, v, q_ids, kv_ids)
    spec = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
    spec = jax.sharding.PartitionSpec(*[a if a is not None else None for a in spec])
    ids_spec = jax.sharding.PartitionSpec(spec[0], None)
    return jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=(spec, spec, spec, ids_spec, ids_spec),
        out_specs=spec,
        check_vma=False,
    )(q, k, v, q_ids, kv_ids)


def _with_segments(kernel_fn, separate, q, k, v, mask, scale):
    """Runs `kernel_fn(q, k, v, q_ids, kv_ids)` when the mask is expressible as segment ids,
    else xla."""
    if not _pallas_fits(q, k):
        return _xla(q, k, v, mask, scale)
    got = _segment_ids(mask, q, k, separate)
    if got is None:
        return _xla(q, k, v, mask, scale)
    q_ids, kv_ids, exact = got
    run = lambda: _sharded(kernel_fn, q, k, v, q_ids, kv_ids)
    if mask is None:
        return run()
    return lax.cond(exact, run, lambda: _xla(q, k, v, mask, scale))


def _splash_fn(scale, interpret):
    from jax.experimental.pallas.ops.tpu.splash_attention import (
        splash_attention_kernel as splash,
        splash_attention_mask as splash_mask,
    )

    def fn(q, k, v, q_ids, kv_ids):
        n, t = q.shape[2], q.shape[1]
        kernel = splash.make_splash_mha(
            splash_mask.MultiHeadMask([splash_mask.FullMask((t, t)) for _ in range(n)]),
            head_shards=1,
            q_seq_shards=1,
            interpret=interpret,
        )
        heads_first = lambda x: jnp.swapaxes(x, 1, 2)  # [b, n, t, d]
        one = lambda q1, k1, v1, sq, sk: kernel(q1, k1, v1, segment_ids=splash.SegmentIds(sq, sk))
        out = jax.vmap(one)(heads_first(q * scale), heads_first(k), heads_first(v), q_ids, kv_ids)
        return jnp.swapaxes(out, 1, 2).astype(q.dtype)

    return fn


def _pallas_gpu_fn(scale, interpret):
    from jax.experimental.pallas.ops.gpu import attention as gpu_attention

    b = _PALLAS_BLOCK
    blocks = gpu_attention.BlockSizes(
        block_q=b, block_k=b, block_q_dkv=b, block_kv_dkv=b, block_q_dq=b, block_kv_dq=b
    )
    return lambda q, k, v, q_ids, kv_ids: gpu_attention.mha(
        q, k, v, q_ids, sm_scale=scale, block_sizes=blocks, interpret=interpret
    )


def attend(
    q: Array,
    k: Array,
    v: Array,
    mask: Array | None = None,
    *,
    kernel: str = "auto",
    dropout_rate: float = 0.0,
    dropout_rng=None,
    deterministic: bool = True,
    interpret: bool | None = None,
    backend: str | None = None,
    local_window: int | None = None,
    bias: Array | None = None,
    scale: float | None = None,
) -> Array:
    """Scaled dot-product attention with the kernel `resolve_kernel` picks.

    q: [batch, q_len, heads, head_dim]; k, v: [batch, kv_len, heads, head_dim];
    mask: bool, broadcastable to [batch, heads, q_len, kv_len], True = attend.
    local_window: w limits query i to keys j with |i - j| <= w (self-attention, a
    bidirectional band); `xla` takes it as `local_window_size`, every other kernel as part of
    the mask (cuDNN in jax rejects a window open to the right, so the band runs `xla` there).
    bias: an additive float logit bias broadcastable to [batch, heads, q_len, kv_len] (T5's
    relative positions); only `einsum` and `xla` take one, so any other kernel runs `xla`.
    scale: the logit scale (default 1/sqrt(head_dim); T5 uses 1.0).
    Returns [batch, q_len, heads, head_dim]. Rows whose keys are all masked return zeros.
    `interpret` runs the Pallas kernels in interpret mode (default: off the accelerator).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    use_dropout = dropout_rate > 0.0 and not deterministic
    name = resolve_kernel(kernel, backend, dropout=use_dropout)
    if bias is not None and name not in ("einsum", "xla"):
        name = "xla"  # the fused kernels here take no dense bias
    if interpret is None:  # the platform itself, not the (mockable) default backend name
        interpret = jax.devices()[0].platform == "cpu"
    window, any_key_mask = None, mask
    if local_window is not None:
        band = masks_lib.sliding_window_mask(q.shape[1], k.shape[1], local_window)
        any_key_mask = masks_lib.combine(mask, band)  # for the zeroing of empty rows below
        if name == "xla":
            window = (local_window, local_window)
        else:
            mask = any_key_mask
    if name == "einsum":
        out = _einsum(q, k, v, mask, scale, dropout_rate if use_dropout else 0.0, dropout_rng, bias)
    elif name == "xla":
        out = _xla(q, k, v, mask, scale, window, bias)
    elif name == "cudnn":
        out = _cudnn(q, k, v, mask, scale)
    elif name == "splash":
        out = _with_segments(_splash_fn(scale, interpret), True, q, k, v, mask, scale)
    else:  # pallas
        out = _with_segments(_pallas_gpu_fn(scale, interpret), False, q, k, v, mask, scale)
    mask = any_key_mask
    if mask is not None:
        # Fully masked rows (e.g. padding rows of a packed batch) must give zeros, not the
        # uniform average a softmax over equal -inf logits produces.
        any_key = jnp.any(mask, axis=-1)  # [b|1, n|1, q]
        out = jnp.where(jnp.swapaxes(any_key, 1, 2)[..., None], out, 0).astype(out.dtype)
    return out
