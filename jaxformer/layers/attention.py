"""Multi-head attention (self and cross) with a decoding cache and a selectable kernel."""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxformer.layers import masks as masks_lib
from jaxformer.layers.kernels import attend
from jaxformer.layers.rotary import apply_rotary

Array = jnp.ndarray


def dense_init(stddev: float, axes: tuple) -> Callable:
    """Truncation-free normal init (BERT's) annotated with logical axis names."""
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


def zeros_init(axes: tuple) -> Callable:
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def cache_positions(module: nn.Module, positions: Array, t: int) -> tuple[Array, bool]:
    """Positions of `t` new tokens in a decoder with a decoding cache: shifted past the tokens
    the cache holds, whose count (`cache/position` of `module`) grows by `t`. The call that
    creates the cache leaves them as they are. Returns (positions, whether it existed)."""
    cached = module.has_variable("cache", "position")
    index = module.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
    if cached:
        positions = index.value + positions
        index.value = index.value + t
    return positions, cached


class Projection(nn.Module):
    """Dense over the last `in_ndim` dims: [..., *in] -> [..., *out_shape].

    The kernel `[*in, *out_shape]` is created at that shape (not flattened, as DenseGeneral
    does), so its logical `axes` hold at init and at apply under any sharding rules.
    """

    out_shape: tuple
    axes: tuple  # logical names of the kernel dims; the bias takes the out ones
    in_ndim: int = 1
    use_bias: bool = True
    init_std: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = tuple(x.shape[-self.in_ndim :]) + tuple(self.out_shape)
        kernel = self.param("kernel", dense_init(self.init_std, self.axes), shape, self.param_dtype)
        # One 2-d matmul on flattened views: the gradients then need no transposed copy of
        # the kernel (a 3-d tensordot's transpose rule materialises one per step).
        lead = x.shape[: x.ndim - self.in_ndim]
        n_in, n_out = math.prod(shape[: self.in_ndim]), math.prod(self.out_shape)
        y = x.astype(self.dtype).reshape(lead + (n_in,)) @ jnp.asarray(kernel, self.dtype).reshape(
            n_in, n_out
        )
        y = y.reshape(lead + tuple(self.out_shape))  # [..., *out_shape]
        if self.use_bias:
            bias = self.param(
                "bias",
                zeros_init(self.axes[self.in_ndim :]),
                tuple(self.out_shape),
                self.param_dtype,
            )
            y = y + jnp.asarray(bias, self.dtype)
        return y


class MultiHeadAttention(nn.Module):
    """Multi-head attention. Self-attention when `inputs_kv` is None, cross otherwise.

    With `decode=True`, self-attention keeps a key/value cache of the length it was
    initialised with and appends the new positions at `cache_index`; cross-attention stores
    its projected keys/values so later steps pass `use_cached_kv=True` and skip the encoder.
    """

    num_heads: int
    head_dim: int
    out_features: int | None = None
    dropout_rate: float = 0.0
    kernel: str = "auto"  # see jaxformer.layers.kernels
    decode: bool = False
    use_bias: bool = True
    init_std: float = 0.02
    out_init_std: float | None = None  # the output projection's; None: init_std
    local_window: int | None = None  # self-attention band |i - j| <= local_window
    scale: float | None = None  # logit scale; None: 1/sqrt(head_dim) (T5: 1.0)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array | None = None,
        mask: Array | None = None,
        deterministic: bool = True,
        use_cached_kv: bool = False,
        rope: tuple[Array, Array] | None = None,
        bias: Array | None = None,
    ) -> Array:
        """rope: optional (cos, sin) [b, t, head_dim] tables from `rotary.rotary_tables`;
        queries and keys are rotated by them (self-attention). bias: an additive logit bias
        [b|1, heads, q, kv] (with a cache, kv spans the whole cache)."""
        is_self = inputs_kv is None and not use_cached_kv
        features = self.out_features or inputs_q.shape[-1]
        proj = lambda name: Projection(  # [b, t, embed] -> [b, t, heads, kv]
            (self.num_heads, self.head_dim),
            ("embed", "heads", "kv"),
            1,
            self.use_bias,
            self.init_std,
            self.dtype,
            self.param_dtype,
            name=name,
        )
        q = proj("query")(inputs_q)

        if use_cached_kv:
            if not self.has_variable("cache", "cross_key"):
                raise ValueError(
                    "use_cached_kv=True but the cross-attention cache is empty; "
                    "run one step with the encoder output first."
                )
            k = self.get_variable("cache", "cross_key")
            v = self.get_variable("cache", "cross_value")
        else:
            src = inputs_q if is_self else inputs_kv
            k, v = proj("key")(src), proj("value")(src)
            if self.decode and not is_self:
                self.put_variable("cache", "cross_key", k)
                self.put_variable("cache", "cross_value", v)

        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)

        if self.decode and is_self:
            k, v, mask = self._update_cache(k, v, mask)

        out = attend(
            q,
            k,
            v,
            mask,
            kernel=self.kernel,
            dropout_rate=self.dropout_rate,
            dropout_rng=None
            if deterministic or self.dropout_rate == 0.0
            else self.make_rng("dropout"),
            deterministic=deterministic,
            local_window=self.local_window,
            bias=bias,
            scale=self.scale,
        )
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "kv"))
        return Projection(
            (features,),
            ("heads", "kv", "embed"),
            2,
            self.use_bias,
            self.init_std if self.out_init_std is None else self.out_init_std,
            self.dtype,
            self.param_dtype,
            name="out",
        )(out)  # [b, q, heads, kv] -> [b, q, embed]

    def _update_cache(self, k: Array, v: Array, mask: Array | None):
        """Writes the new keys/values at cache_index; returns the full cache and its mask."""
        initialized = self.has_variable("cache", "cached_key")
        cached_k = self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        cached_v = self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        index = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
        if not initialized:  # init call: shapes only, the cache spans the init length
            return k, v, mask
        max_len, step = cached_k.value.shape[1], k.shape[1]
        i = index.value
        cached_k.value = lax.dynamic_update_slice(
            cached_k.value, k.astype(cached_k.value.dtype), (0, i, 0, 0)
        )
        cached_v.value = lax.dynamic_update_slice(
            cached_v.value, v.astype(cached_v.value.dtype), (0, i, 0, 0)
        )
        index.value = i + step
        # New query j sits at absolute position i + j and sees cached keys up to itself.
        visible = masks_lib.causal_mask(step, max_len, offset=i)
        return cached_k.value, cached_v.value, masks_lib.combine(mask, visible)
