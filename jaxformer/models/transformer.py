"""The encoder-decoder Transformer (Vaswani et al., 2017), also the shape of Marian MT.

Call for training: `model.apply({"params": p}, input_ids, attention_mask, decoder_input_ids,
decoder_attention_mask=None, deterministic=True, rngs={"dropout": key})` -> `Seq2SeqOutput`.
Decoding calls `encode` once and `decode` per step; `Transformer(cfg, use_cache=True)` keeps
a key/value cache in the "cache" collection (see `jaxformer.inference.decoding`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxformer.layers import masks as masks_lib
from jaxformer.layers.attention import cache_positions, zeros_init
from jaxformer.layers.dropout import Dropout
from jaxformer.layers.embeddings import Embed, segment_positions, sinusoidal_table
from jaxformer.layers.feedforward import FeedForward, dense, layer_norm
from jaxformer.models.bert import remat_block
from jaxformer.models.common import (
    EitherSide,
    EncoderDecoder,
    StackPart,
    attention,
    decoder_masks,
    dtypes,
)
from jaxformer.models.seq2seq_configs import (
    TRANSFORMER_SIZES,
    TransformerConfig,
    transformer_config,
)

__all__ = ["TRANSFORMER_SIZES", "Transformer", "TransformerConfig", "transformer_config"]


class Sublayer(nn.Module):
    """Residual around `fn` with dropout and LayerNorm: post-LN norm(x + f(x)) or pre-LN
    x + f(norm(x))."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, fn, x, deterministic: bool):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        norm = layer_norm(cfg.layer_norm_eps, dt, pdt, name="norm")
        h = fn(norm(x) if cfg.pre_ln else x)
        h = Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
        x = x + h if cfg.pre_ln else norm(x + h)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class Layer(EitherSide):
    """Self-attention, cross-attention over the encoder states (decoder), feed-forward, each
    a residual sub-layer. `cfg`: a `TransformerConfig`."""

    @nn.compact
    def __call__(
        self, x, mask, encoded=None, cross_mask=None, deterministic=True, use_cached_kv=False
    ):
        cfg, decoder = self.cfg, self.is_decoder
        self_attn = attention(cfg, "self_attention", cfg.heads(decoder), decode=self.decode)
        x = Sublayer(cfg, name="self_attention_block")(
            lambda h: self_attn(h, mask=mask, deterministic=deterministic), x, deterministic
        )
        if decoder:
            cross = attention(cfg, "cross_attention", cfg.heads(decoder), decode=self.decode)
            x = Sublayer(cfg, name="cross_attention_block")(
                lambda h: cross(
                    h,
                    None if use_cached_kv else encoded,
                    mask=cross_mask,
                    deterministic=deterministic,
                    use_cached_kv=use_cached_kv,
                ),
                x,
                deterministic,
            )
        dt, pdt = dtypes(cfg)
        mlp = FeedForward(
            cfg.ffn_dim(decoder),
            cfg.hidden_act,
            init_std=cfg.initializer_range,
            dtype=dt,
            param_dtype=pdt,
            name="mlp",
        )
        return Sublayer(cfg, name="mlp_block")(mlp, x, deterministic)


def _add_positions(cfg: TransformerConfig, x, positions, deterministic: bool):
    """x: [b, t, d] scaled token embeddings; positions: [t] or [b, t] ints."""
    table = jnp.asarray(
        sinusoidal_table(cfg.max_position_embeddings, cfg.hidden_size, cfg.position_layout)
    )
    x = x + jnp.take(table, positions, axis=0).astype(x.dtype)  # [(b,) t, d] broadcasts
    return Dropout(cfg.hidden_dropout)(x, deterministic=deterministic)


class EncoderStack(nn.Module):
    """[b, s, d] token embeddings -> [b, s, d] encoder states."""

    cfg: TransformerConfig

    @nn.compact
    def __call__(self, x, attention_mask, deterministic: bool = True, segment_ids=None):
        cfg = self.cfg
        if segment_ids is None:
            positions, seg = jnp.arange(x.shape[1]), None
        else:  # packed rows: positions restart and attention stays inside each segment
            positions, seg = segment_positions(segment_ids), masks_lib.segment_mask(segment_ids)
        x = _add_positions(cfg, x, positions, deterministic)
        pad = None if attention_mask is None else masks_lib.padding_mask(attention_mask)
        mask = masks_lib.combine(pad, seg)
        layer_cls = remat_block(Layer, cfg, static_argnums=(5,))
        for i in range(cfg.num_encoder_layers):
            x = layer_cls(cfg, name=f"layer_{i}")(x, mask, None, None, deterministic)
        if cfg.pre_ln:
            x = layer_norm(cfg.layer_norm_eps, *dtypes(cfg), name="final_norm")(x)
        return x


class DecoderStack(StackPart):
    """[b, t, d] target embeddings + encoder states -> [b, t, d] decoder states. `cfg`: a
    `TransformerConfig`.

    With `decode=True`, a "cache"/"position" counter places each step's tokens after the
    ones already fed, and the attention layers use their caches.
    """

    @nn.compact
    def __call__(
        self,
        y,
        encoded,
        attention_mask,
        decoder_attention_mask=None,
        deterministic: bool = True,
        use_cached_kv: bool = False,
        segment_ids=None,
        decoder_segment_ids=None,
    ):
        cfg = self.cfg
        t = y.shape[1]
        packed = decoder_segment_ids is not None
        if packed and (self.decode or segment_ids is None):
            raise ValueError(
                "decoder_segment_ids (packed rows) need the encoder's segment_ids too and are "
                "for teacher forcing; decoding with the cache takes unpacked rows."
            )
        positions = segment_positions(decoder_segment_ids) if packed else jnp.arange(t)
        if self.decode:
            positions, _ = cache_positions(self, positions, t)
        y = _add_positions(cfg, y, positions, deterministic)
        self_mask, cross_mask = decoder_masks(
            attention_mask, decoder_attention_mask, t, self.decode
        )
        if packed:  # each target segment sees only its own prefix and its own source
            self_mask = masks_lib.combine(self_mask, masks_lib.segment_mask(decoder_segment_ids))
            cross_mask = masks_lib.combine(
                cross_mask, masks_lib.segment_mask(decoder_segment_ids, segment_ids)
            )
        # The cache path (decode=True) mutates variables step by step: never rematerialised.
        layer_cls = Layer if self.decode else remat_block(Layer, cfg, static_argnums=(5, 6))
        for i in range(cfg.num_decoder_layers):
            y = layer_cls(cfg, decode=self.decode, is_decoder=True, name=f"layer_{i}")(
                y, self_mask, encoded, cross_mask, deterministic, use_cached_kv
            )
        if cfg.pre_ln:
            y = layer_norm(cfg.layer_norm_eps, *dtypes(cfg), name="final_norm")(y)
        return y


class Transformer(EncoderDecoder):
    """Encoder-decoder Transformer. `use_cache=True` turns on the decoding cache; packed rows
    (`segment_ids`, `decoder_segment_ids`) are supported in training."""

    cfg: TransformerConfig
    use_cache: bool = False
    packing: ClassVar[bool] = True
    position_table: ClassVar[str] = "the sinusoidal table"

    def setup(self):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        kw = {"init_std": cfg.initializer_range, "dtype": dt, "param_dtype": pdt}
        if cfg.share_embeddings:
            self.shared_embedding = Embed(cfg.vocab_size, cfg.hidden_size, **kw)
        else:
            self.source_embedding = Embed(cfg.vocab_size, cfg.hidden_size, **kw)
            self.target_embedding = Embed(cfg.tgt_vocab_size, cfg.hidden_size, **kw)
        self.encoder = EncoderStack(cfg)
        self.decoder = DecoderStack(cfg, self.use_cache)
        if not cfg.tie_output:
            self.output = dense(
                cfg.tgt_vocab_size,
                ("embed", "vocab"),
                cfg.initializer_range,
                dt,
                pdt,
                use_bias=False,
            )
        if cfg.final_logits_bias:
            self.logits_bias = self.param(
                "final_logits_bias", zeros_init(("vocab",)), (cfg.tgt_vocab_size,), pdt
            )

    def _embed(self, ids, target: bool):
        x = self._tables()[int(target)](ids)  # [b, t] -> [b, t, d]
        if self.cfg.scale_embedding:
            x = x * jnp.asarray(math.sqrt(self.cfg.hidden_size), x.dtype)
        return x

    def _tables(self):
        if self.cfg.share_embeddings:
            return self.shared_embedding, self.shared_embedding
        return self.source_embedding, self.target_embedding

    def _encoder_states(self, x, attention_mask, deterministic, segment_ids=None):
        return self.encoder(x, attention_mask, deterministic, segment_ids)

    def _decoder_states(
        self,
        y,
        encoded,
        attention_mask,
        decoder_attention_mask,
        deterministic,
        use_cached_kv,
        **packed,
    ):
        return self.decoder(
            y,
            encoded,
            attention_mask,
            decoder_attention_mask,
            deterministic,
            use_cached_kv,
            **packed,
        )

    def _logits(self, h):
        h = nn.with_logical_constraint(h, ("batch", "length", "embed"))
        logits = self._tables()[1].attend(h) if self.cfg.tie_output else self.output(h)
        logits = logits.astype(jnp.float32)
        if self.cfg.final_logits_bias:
            logits = logits + self.logits_bias.astype(jnp.float32)
        return nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
