"""Feed-forward block, activations, LayerNorm."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxformer.layers.attention import Projection, dense_init, zeros_init
from jaxformer.layers.dropout import Dropout


def gelu_erf(x):
    """Exact GELU, x * Phi(x), written with erf as BERT and PyTorch write it (XLA's erf is
    one rational approximation; `jax.nn.gelu`'s erfc form evaluates two branches)."""
    return 0.5 * x * (1.0 + lax.erf(x * (1.0 / math.sqrt(2.0))))


ACTIVATIONS = {
    "gelu": gelu_erf,  # BERT: exact erf GELU
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),  # tanh approximation
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "swish": jax.nn.silu,  # Marian: x * sigmoid(x)
    "silu": jax.nn.silu,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def layer_norm(
    eps: float, dtype, param_dtype, name=None, axis_name: str = "embed", use_bias: bool = True
):
    """LayerNorm with named params; statistics in float32 even under bf16 compute."""
    return nn.LayerNorm(
        epsilon=eps,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
        use_bias=use_bias,
        use_fast_variance=False,
        force_float32_reductions=True,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
        bias_init=zeros_init((axis_name,)),
    )


def dense(
    features: int,
    axes: tuple,
    init_std: float,
    dtype,
    param_dtype,
    name=None,
    use_bias: bool = True,
):
    """nn.Dense whose kernel and bias carry logical axis names."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
        kernel_init=dense_init(init_std, axes),
        bias_init=zeros_init(axes[-1:]),
    )


class FeedForward(nn.Module):
    """[b, t, embed] -> [b, t, embed]: Dense(mlp) -> activation -> Dense(embed)."""

    intermediate_size: int
    act: str = "gelu"
    dropout_rate: float = 0.0
    init_std: float = 0.02
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = dense(
            self.intermediate_size,
            ("embed", "mlp"),
            self.init_std,
            self.dtype,
            self.param_dtype,
            name="wi",
        )(x)
        h = activation(self.act)(h)
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        # A ReLU Transformer applies dropout here too; BERT-family models do not.
        h = dense(
            x.shape[-1], ("mlp", "embed"), self.init_std, self.dtype, self.param_dtype, name="wo"
        )(h)
        return h


class GatedFeedForward(nn.Module):
    """GLU feed-forward (Shazeer 2020; GeGLU with GELU): [b, t, embed] -> [b, t, embed],
    Wo(dropout(act(x Wi_in) * (x Wi_gate))).

    The input and gate kernels are one `wi` [embed, 2, mlp] so that sharding the mlp axis
    keeps each input column beside its gate column.
    """

    intermediate_size: int
    act: str = "gelu"
    dropout_rate: float = 0.0
    use_bias: bool = False
    init_std: float = 0.02
    out_init_std: float | None = None  # None: init_std
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        h = Projection(
            (2, self.intermediate_size),
            ("embed", None, "mlp"),
            use_bias=self.use_bias,
            init_std=self.init_std,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="wi",
        )(x)  # [b, t, embed] -> [b, t, 2, mlp]
        h = activation(self.act)(h[..., 0, :]) * h[..., 1, :]
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
        return dense(
            x.shape[-1],
            ("mlp", "embed"),
            self.init_std if self.out_init_std is None else self.out_init_std,
            self.dtype,
            self.param_dtype,
            name="wo",
            use_bias=self.use_bias,
        )(h)
