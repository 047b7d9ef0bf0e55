"""T5 (Raffel et al., 2020) and T5 v1.1 / Flan-T5: a pre-norm encoder-decoder with bucketed
relative position biases, RMS norms and no biases anywhere.

The interface is the `Transformer`'s: `model.apply({"params": p}, input_ids, attention_mask,
decoder_input_ids, decoder_attention_mask)` -> `Seq2SeqOutput`; `encode` and `decode` for
`jaxformer.generate`; `T5(cfg, use_cache=True)` keeps the decoding cache. There is no position
table, so any length runs (the buckets past `relative_attention_max_distance` saturate).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxformer.layers.attention import MultiHeadAttention, cache_positions, dense_init
from jaxformer.layers.dropout import Dropout
from jaxformer.layers.embeddings import Embed
from jaxformer.layers.feedforward import ACTIVATIONS, GatedFeedForward, activation, dense
from jaxformer.models.configs import DTYPES, KERNELS, ConfigError, _ConfigMixin, check_choice
from jaxformer.models.common import EitherSide, EncoderDecoder, dtypes

__all__ = ["T5", "T5Config", "relative_position_bucket"]


@dataclasses.dataclass(frozen=True)
class T5Config(_ConfigMixin):
    """T5 v1.0 (`feed_forward_proj="relu"`, tied output scaled by d_model^-0.5) and v1.1 /
    Flan-T5 (`"gated-gelu"`, untied output, no scaling)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64  # per-head width; d_kv * num_heads need not equal d_model
    d_ff: int = 2048
    num_layers: int = 6  # encoder
    num_decoder_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1  # embeddings, sub-layer outputs, attention probs, FFN hidden
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "act" or "gated-act"; "gated-gelu" is tanh GELU
    tie_word_embeddings: bool = True  # output projection = the shared table
    scale_decoder_outputs: bool = True  # decoder output x d_model^-0.5 before the projection
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_kernel: str = "auto"  # jaxformer.layers.kernels.KERNELS (a bias runs xla)

    def __post_init__(self):
        _ = self.activation  # validates feed_forward_proj
        for name in ("dtype", "param_dtype"):
            check_choice(name, getattr(self, name), DTYPES)
        check_choice("attention_kernel", self.attention_kernel, KERNELS)
        for name in ("eos_token_id", "pad_token_id", "decoder_start_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ConfigError(
                    f"{name}={getattr(self, name)} is outside the vocabulary "
                    f"[0, {self.vocab_size})."
                )

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        """The activation name in `ACTIVATIONS` (transformers' reading of the option)."""
        parts = self.feed_forward_proj.split("-")
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        act = parts[-1]
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or act not in ACTIVATIONS:
            raise ConfigError(
                f"feed_forward_proj={self.feed_forward_proj!r} is not supported; use 'ACT' or "
                f"'gated-ACT' with ACT one of {sorted(ACTIVATIONS)} (T5: 'relu', "
                "Flan-T5: 'gated-gelu')."
            )
        return act

    # Read by `jaxformer.generate`: no position table, no length limit.
    max_length = None

    @property
    def tgt_vocab_size(self) -> int:
        return self.vocab_size

    @classmethod
    def from_hf(cls, hf, **overrides) -> T5Config:
        """From a transformers `T5Config` (object or config.json dict)."""
        g = (
            (lambda k, d=None: hf.get(k, d))
            if isinstance(hf, Mapping)
            else (lambda k, d=None: getattr(hf, k, d))
        )
        eos = g("eos_token_id", 1)
        eos = eos[0] if isinstance(eos, (list, tuple)) else eos
        tie = g("tie_word_embeddings", True) is not False
        # transformers 5 keeps the v1.0 / v1.1 difference in `scale_decoder_outputs` (and
        # sets tie_word_embeddings=True for both); older files only have the tie flag.
        scale = g("scale_decoder_outputs", None)
        scale = tie if scale is None else bool(scale)
        pad = g("pad_token_id", 0)
        fields = {
            "vocab_size": g("vocab_size"),
            "d_model": g("d_model"),
            "d_kv": g("d_kv"),
            "d_ff": g("d_ff"),
            "num_layers": g("num_layers"),
            "num_decoder_layers": g("num_decoder_layers") or g("num_layers"),
            "num_heads": g("num_heads"),
            "relative_attention_num_buckets": g("relative_attention_num_buckets", 32),
            "relative_attention_max_distance": g("relative_attention_max_distance", 128),
            "dropout_rate": float(g("dropout_rate", 0.1)),
            "layer_norm_epsilon": float(g("layer_norm_epsilon", 1e-6)),
            "feed_forward_proj": g("feed_forward_proj", "relu"),
            "tie_word_embeddings": tie and scale,
            "scale_decoder_outputs": scale,
            "pad_token_id": pad,
            "eos_token_id": eos,
            "decoder_start_token_id": g("decoder_start_token_id", None) or pad,
        }
        fields.update(overrides)
        return cls.from_dict(fields)

    def to_hf(self) -> dict[str, Any]:
        """The config.json of the equivalent `T5ForConditionalGeneration`."""
        return {
            "model_type": "t5",
            "architectures": ["T5ForConditionalGeneration"],
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "d_kv": self.d_kv,
            "d_ff": self.d_ff,
            "num_layers": self.num_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "dropout_rate": self.dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "feed_forward_proj": self.feed_forward_proj,
            "tie_word_embeddings": self.tie_word_embeddings,
            "scale_decoder_outputs": self.scale_decoder_outputs,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
            "is_encoder_decoder": True,
        }


def relative_position_bucket(relative, bidirectional: bool, num_buckets: int, max_distance: int):
    """T5's bucket of each relative position (key - query): exact for small distances, then
    logarithmic up to `max_distance`, then saturated. Bidirectional splits the buckets
    between the two directions; causal maps every future position to bucket 0."""
    out = jnp.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        out = out + (relative > 0).astype(relative.dtype) * num_buckets
        dist = jnp.abs(relative)
    else:
        dist = -jnp.minimum(relative, 0)
    exact = num_buckets // 2
    log_ratio = jnp.log(jnp.maximum(dist, 1).astype(jnp.float32) / exact) / math.log(
        max_distance / exact
    )
    large = exact + (log_ratio * (num_buckets - exact)).astype(relative.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return out + jnp.where(dist < exact, dist, large)


class RelativeBias(nn.Module):
    """Query positions [q] x key positions [k] -> additive logit bias [1, heads, q, k]."""

    cfg: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, q_pos, k_pos):
        cfg = self.cfg
        table = self.param(
            "embedding",
            dense_init(1.0, (None, "heads")),
            (cfg.relative_attention_num_buckets, cfg.num_heads),
            jnp.dtype(cfg.param_dtype),
        )
        buckets = relative_position_bucket(
            k_pos[None, :] - q_pos[:, None],
            self.bidirectional,
            cfg.relative_attention_num_buckets,
            cfg.relative_attention_max_distance,
        )  # [q, k]
        return jnp.transpose(jnp.take(table, buckets, axis=0), (2, 0, 1))[None]


def _norm(cfg: T5Config, name: str):
    """T5LayerNorm: x / rms(x) * scale, no mean, no bias (statistics in float32)."""
    return nn.RMSNorm(
        epsilon=cfg.layer_norm_epsilon,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        name=name,
    )


def _attention(cfg: T5Config, name: str, decode: bool = False) -> MultiHeadAttention:
    return MultiHeadAttention(
        cfg.num_heads,
        cfg.d_kv,
        out_features=cfg.d_model,
        dropout_rate=cfg.dropout_rate,
        kernel=cfg.attention_kernel,
        decode=decode,
        use_bias=False,
        init_std=cfg.d_model**-0.5,
        scale=1.0,  # T5 folds the 1/sqrt(d) into its initialisation
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        name=name,
    )


class T5FeedForward(nn.Module):
    """wo(dropout(act(wi x))), or the gated form (wi [embed, 2, d_ff]: input, gate)."""

    cfg: T5Config

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        if cfg.is_gated:
            return GatedFeedForward(
                cfg.d_ff,
                cfg.activation,
                cfg.dropout_rate,
                use_bias=False,
                init_std=cfg.d_model**-0.5,
                out_init_std=cfg.d_ff**-0.5,
                dtype=dt,
                param_dtype=pdt,
                name="mlp",
            )(x, deterministic)
        h = dense(cfg.d_ff, ("embed", "mlp"), cfg.d_model**-0.5, dt, pdt, "wi", use_bias=False)(x)
        h = Dropout(cfg.dropout_rate)(activation(cfg.activation)(h), deterministic)
        return dense(cfg.d_model, ("mlp", "embed"), cfg.d_ff**-0.5, dt, pdt, "wo", use_bias=False)(
            h
        )


class T5Layer(EitherSide):
    """Pre-norm residual sub-layers: self-attention (with the stack's position bias), cross-
    attention (decoder), feed-forward. `cfg`: a `T5Config`; the call takes the stack's
    position `bias` after the mask."""

    @nn.compact
    def __call__(
        self,
        x,
        self_mask,
        bias,
        encoded=None,
        cross_mask=None,
        deterministic: bool = True,
        use_cached_kv: bool = False,
    ):
        cfg = self.cfg
        drop = lambda h: Dropout(cfg.dropout_rate)(h, deterministic)
        h = _norm(cfg, "self_attention_norm")(x)
        attn = _attention(cfg, "self_attention", self.decode)
        x = x + drop(attn(h, mask=self_mask, deterministic=deterministic, bias=bias))
        if self.is_decoder:
            h = _norm(cfg, "cross_attention_norm")(x)
            cross = _attention(cfg, "cross_attention", self.decode)
            h = cross(
                h,
                None if use_cached_kv else encoded,
                mask=cross_mask,
                deterministic=deterministic,
                use_cached_kv=use_cached_kv,
            )
            x = x + drop(h)
        h = _norm(cfg, "mlp_norm")(x)
        x = x + drop(T5FeedForward(cfg, name="ff")(h, deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class T5Stack(EitherSide):
    """Embedded tokens [b, t, d] -> states [b, t, d]: the encoder (bidirectional buckets) or,
    with `is_decoder`, the decoder (causal buckets, cross-attention, a decoding cache).
    `cfg`: a `T5Config`."""

    @nn.compact
    def __call__(
        self, x, mask, encoded=None, cross_mask=None, deterministic=True, use_cached_kv=False
    ):
        cfg = self.cfg
        t = x.shape[1]
        q_pos, k_len = jnp.arange(t), t
        if self.decode:
            # The new queries sit after the cached ones; the keys span the whole cache.
            q_pos, cached = cache_positions(self, q_pos, t)
            if cached:
                k_len = self.variables["cache"]["layer_0"]["self_attention"]["cached_key"].shape[1]
        bias = RelativeBias(cfg, not self.is_decoder, name="relative_bias")(
            q_pos, jnp.arange(k_len)
        )
        x = Dropout(cfg.dropout_rate)(x, deterministic)
        n = cfg.num_decoder_layers if self.is_decoder else cfg.num_layers
        for i in range(n):
            x = T5Layer(cfg, is_decoder=self.is_decoder, decode=self.decode, name=f"layer_{i}")(
                x, mask, bias, encoded, cross_mask, deterministic, use_cached_kv
            )
        x = _norm(cfg, "final_norm")(x)
        return Dropout(cfg.dropout_rate)(x, deterministic)


class T5(EncoderDecoder):
    """T5 for conditional generation. `use_cache=True` turns on the decoding cache."""

    cfg: T5Config
    use_cache: bool = False

    def setup(self):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        self.shared_embedding = Embed(
            cfg.vocab_size, cfg.d_model, init_std=1.0, dtype=dt, param_dtype=pdt
        )
        self.encoder = T5Stack(cfg)
        self.decoder = T5Stack(cfg, is_decoder=True, decode=self.use_cache)
        if not cfg.tie_word_embeddings:
            self.output = dense(cfg.vocab_size, ("embed", "vocab"), 1.0, dt, pdt, use_bias=False)

    def _embed(self, ids, target: bool):
        return self.shared_embedding(ids)

    def _logits(self, h):
        cfg = self.cfg
        if cfg.scale_decoder_outputs:
            h = h * jnp.asarray(cfg.d_model**-0.5, h.dtype)
        logits = self.shared_embedding.attend(h) if cfg.tie_word_embeddings else self.output(h)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "vocab"))
