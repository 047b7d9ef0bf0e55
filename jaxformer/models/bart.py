"""BART (Lewis et al., 2020) and mBART: an encoder-decoder with learned positions (offset by 2),
an embedding LayerNorm, post-LN layers (mBART: pre-LN with final norms), encoder and decoder of
their own head counts and FFN widths, and a logits bias.

The interface is the `Transformer`'s (`encode` / `decode`, `use_cache=True` for decoding).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxformer.layers.attention import MultiHeadAttention, cache_positions, zeros_init
from jaxformer.layers.dropout import Dropout
from jaxformer.layers.embeddings import Embed
from jaxformer.layers.feedforward import ACTIVATIONS, FeedForward, layer_norm
from jaxformer.models.configs import ConfigError, _ConfigMixin, check_choice
from jaxformer.models.common import EitherSide, EncoderDecoder, dtypes

__all__ = ["Bart", "BartConfig"]

POSITION_OFFSET = 2  # BART's learned table keeps two rows before position 0


@dataclasses.dataclass(frozen=True)
class BartConfig(_ConfigMixin):
    """BART (`pre_ln=False`) and mBART (`pre_ln=True`, final norms)."""

    vocab_size: int = 50265
    d_model: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    decoder_ffn_dim: int = 4096
    max_position_embeddings: int = 1024  # longest source / target
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    scale_embedding: bool = False  # token embeddings x sqrt(d_model)
    pre_ln: bool = False  # mBART
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    decoder_start_token_id: int = 2
    forced_bos_token_id: int | None = None  # mBART: the target language token
    forced_eos_token_id: int | None = 2
    init_std: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        check_choice("activation_function", self.activation_function, sorted(ACTIVATIONS))
        for heads, name in (
            (self.encoder_attention_heads, "encoder_attention_heads"),
            (self.decoder_attention_heads, "decoder_attention_heads"),
        ):
            if self.d_model % heads:
                raise ConfigError(f"d_model={self.d_model} is not divisible by {name}={heads}.")

    @property
    def max_length(self) -> int:
        """Longest source / target the position table allows."""
        return self.max_position_embeddings

    @property
    def tgt_vocab_size(self) -> int:
        return self.vocab_size

    @classmethod
    def from_hf(cls, hf, generation=None, **overrides) -> BartConfig:
        """From a transformers `BartConfig` / `MBartConfig` (object or config.json dict) and,
        optionally, its generation config (object or generation_config.json dict), whose
        forced BOS / EOS and start ids win (transformers 5 keeps mBART's forced language token
        only there)."""
        get = lambda c, k, d=None: c.get(k, d) if isinstance(c, Mapping) else getattr(c, k, d)
        g = lambda k, d=None: get(hf, k, d)
        kind = g("model_type")
        if kind not in ("bart", "mbart"):
            raise ConfigError(f"model_type={kind!r} is not 'bart' or 'mbart'.")
        if g("activation_dropout", 0.0):
            raise ConfigError(
                f"activation_dropout={g('activation_dropout')} is not supported; set it to 0."
            )
        names = [f.name for f in dataclasses.fields(cls)]
        fields = {n: g(n) for n in names if g(n) is not None and n not in ("dtype", "param_dtype")}
        fields["forced_eos_token_id"] = g("forced_eos_token_id")
        fields["forced_bos_token_id"] = g("forced_bos_token_id")
        fields["decoder_start_token_id"] = g("decoder_start_token_id")
        fields["pre_ln"] = kind == "mbart"
        for key in ("forced_bos_token_id", "forced_eos_token_id", "decoder_start_token_id"):
            if generation is not None and get(generation, key) is not None:
                fields[key] = get(generation, key)
        # transformers starts from the BOS id when no start token is named (mBART).
        if fields.get("decoder_start_token_id") is None:
            fields["decoder_start_token_id"] = g("bos_token_id", 0)
        fields.pop("init_std", None)
        fields.update(overrides)
        return cls.from_dict(fields)

    def to_hf(self) -> dict[str, Any]:
        d = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k not in ("pre_ln", "dtype", "param_dtype")
        }
        kind = "mbart" if self.pre_ln else "bart"
        arch = "MBartForConditionalGeneration" if self.pre_ln else "BartForConditionalGeneration"
        return {
            "model_type": kind,
            "architectures": [arch],
            **d,
            "activation_dropout": 0.0,
            "is_encoder_decoder": True,
            "tie_word_embeddings": True,
        }


class BartLayer(EitherSide):
    """Self-attention, cross-attention (decoder), feed-forward; post-LN or pre-LN residuals.
    `cfg`: a `BartConfig`."""

    @nn.compact
    def __call__(
        self, x, self_mask, encoded=None, cross_mask=None, deterministic=True, use_cached_kv=False
    ):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        heads = cfg.decoder_attention_heads if self.is_decoder else cfg.encoder_attention_heads
        ffn = cfg.decoder_ffn_dim if self.is_decoder else cfg.encoder_ffn_dim

        def attention(name):
            return MultiHeadAttention(
                heads,
                cfg.d_model // heads,
                dropout_rate=cfg.attention_dropout,
                decode=self.decode,
                init_std=cfg.init_std,
                dtype=dt,
                param_dtype=pdt,
                name=name,
            )

        def block(name, fn, x):
            norm = layer_norm(1e-5, dt, pdt, name=f"{name}_norm")
            h = Dropout(cfg.dropout)(fn(norm(x) if cfg.pre_ln else x), deterministic)
            return x + h if cfg.pre_ln else norm(x + h)

        x = block(
            "self_attention",
            lambda h: attention("self_attention")(h, mask=self_mask, deterministic=deterministic),
            x,
        )
        if self.is_decoder:
            x = block(
                "cross_attention",
                lambda h: attention("cross_attention")(
                    h,
                    None if use_cached_kv else encoded,
                    mask=cross_mask,
                    deterministic=deterministic,
                    use_cached_kv=use_cached_kv,
                ),
                x,
            )
        mlp = FeedForward(
            ffn,
            cfg.activation_function,
            init_std=cfg.init_std,
            dtype=dt,
            param_dtype=pdt,
            name="mlp",
        )
        return block("mlp", mlp, x)


class BartStack(EitherSide):
    """Token embeddings [b, t, d] -> states: + learned positions, embedding LayerNorm,
    dropout, layers, and (pre-LN) a final norm. `cfg`: a `BartConfig`."""

    @nn.compact
    def __call__(
        self, x, mask, encoded=None, cross_mask=None, deterministic=True, use_cached_kv=False
    ):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        t = x.shape[1]
        positions = jnp.arange(t)
        if self.decode:
            positions, _ = cache_positions(self, positions, t)
        table = Embed(
            cfg.max_position_embeddings + POSITION_OFFSET,
            cfg.d_model,
            ("length", "embed"),
            cfg.init_std,
            dt,
            pdt,
            name="positions",
        )
        x = x + table(positions + POSITION_OFFSET)
        x = layer_norm(1e-5, dt, pdt, name="embedding_norm")(x)
        x = Dropout(cfg.dropout)(x, deterministic)
        n = cfg.decoder_layers if self.is_decoder else cfg.encoder_layers
        for i in range(n):
            x = BartLayer(cfg, is_decoder=self.is_decoder, decode=self.decode, name=f"layer_{i}")(
                x, mask, encoded, cross_mask, deterministic, use_cached_kv
            )
        if cfg.pre_ln:
            x = layer_norm(1e-5, dt, pdt, name="final_norm")(x)
        return x


class Bart(EncoderDecoder):
    """BART / mBART for conditional generation. `use_cache=True` turns on the decoding cache."""

    cfg: BartConfig
    use_cache: bool = False
    position_table: ClassVar[str] = "BART's learned position table"

    def setup(self):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        self.shared_embedding = Embed(
            cfg.vocab_size, cfg.d_model, init_std=cfg.init_std, dtype=dt, param_dtype=pdt
        )
        self.encoder = BartStack(cfg)
        self.decoder = BartStack(cfg, is_decoder=True, decode=self.use_cache)
        self.logits_bias = self.param(
            "final_logits_bias", zeros_init(("vocab",)), (cfg.vocab_size,), pdt
        )

    def _embed(self, ids, target: bool):
        cfg = self.cfg
        x = self.shared_embedding(ids)
        if cfg.scale_embedding:
            x = x * jnp.asarray(math.sqrt(cfg.d_model), x.dtype)
        return x

    def _logits(self, h):
        logits = self.shared_embedding.attend(h).astype(jnp.float32)
        logits = logits + self.logits_bias.astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
