"""ModernBERT: a pre-norm encoder with rotary positions, alternating global and local
(sliding-window) attention, GeGLU and no biases, built from the shared layers.

A sibling of `bert.Encoder` rather than a family of it: see docs/design.md (ModernBERT).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from jaxformer.layers import masks as masks_lib
from jaxformer.layers.dropout import Dropout
from jaxformer.layers.embeddings import Embed, token_positions
from jaxformer.layers.feedforward import GatedFeedForward, activation, dense, layer_norm
from jaxformer.layers.rotary import rotary_tables
from jaxformer.models.bert import remat_block
from jaxformer.models.common import EncoderBase, attention, check_batch_ids, dtypes, rows_at
from jaxformer.models.heads import pool
from jaxformer.models.modernbert_configs import ModernBertConfig
from jaxformer.models.outputs import EncoderOutput


def out_init_std(cfg: ModernBertConfig) -> float:
    """ModernBERT's init for projections into the residual stream: std / sqrt(2 L)."""
    return cfg.initializer_range / math.sqrt(2.0 * cfg.num_layers)


def norm(cfg: ModernBertConfig, name=None, axis_name="embed"):
    dt, pdt = dtypes(cfg)
    return layer_norm(cfg.layer_norm_eps, dt, pdt, name, axis_name, use_bias=cfg.norm_bias)


def check_length(cfg: ModernBertConfig, length: int) -> None:
    if length > cfg.max_length:
        raise ValueError(
            f"sequence length {length} exceeds max_position_embeddings="
            f"{cfg.max_position_embeddings}; truncate or window the input, or raise "
            "max_position_embeddings (rotary positions beyond training length degrade)."
        )


class Layer(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then x + GeGLU(norm(x)). Layer 0 has no
    attention norm (the embedding norm precedes it)."""

    cfg: ModernBertConfig
    index: int

    @nn.compact
    def __call__(self, x, mask, rope, deterministic=True):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        sliding = cfg.layer_kinds[self.index] == "sliding_attention"
        h = x if self.index == 0 else norm(cfg, "attention_norm")(x)
        # Both sublayers: inputs at initializer_range, outputs at out_init_std, cfg's dtypes.
        init = dict(
            init_std=cfg.initializer_range,
            out_init_std=out_init_std(cfg),
            dtype=dt,
            param_dtype=pdt,
        )
        h = attention(
            cfg,
            "attention",
            use_bias=cfg.attention_bias,
            local_window=cfg.half_window if sliding else None,
            **init,
        )(h, mask=mask, deterministic=deterministic, rope=rope)
        x = x + Dropout(cfg.attention_dropout)(h, deterministic=deterministic)
        h = GatedFeedForward(
            cfg.intermediate_size,
            cfg.hidden_act,
            dropout_rate=cfg.mlp_dropout,
            use_bias=cfg.mlp_bias,
            name="mlp",
            **init,
        )(norm(cfg, "mlp_norm")(x), deterministic)
        return nn.with_logical_constraint(x + h, ("batch", "length", "embed"))


class ModernBertEncoder(nn.Module):
    """Token embeddings -> norm -> layers -> final norm; `[b, t]` ids -> `[b, t, H]`."""

    cfg: ModernBertConfig

    def setup(self):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        self.word = Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            ("vocab", "embed"),
            cfg.initializer_range,
            dt,
            pdt,
        )
        self.embedding_norm = norm(cfg)
        self.embedding_dropout = Dropout(cfg.embedding_dropout)
        layer_cls = remat_block(Layer, cfg, static_argnums=(4,))
        self.layers = [layer_cls(cfg, i) for i in range(cfg.num_layers)]
        self.final_norm = norm(cfg)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        segment_ids=None,
        deterministic: bool = True,
    ):
        """attention_mask [b, t] (1 = token); segment_ids [b, t] for packed rows (0 = pad;
        attention stays within a segment and positions restart in each)."""
        cfg = self.cfg
        check_batch_ids(input_ids, cfg.vocab_size)
        check_length(cfg, input_ids.shape[1])
        if position_ids is None:
            position_ids = token_positions(input_ids, segment_ids)
        x = self.embedding_norm(self.word(input_ids))
        x = self.embedding_dropout(x, deterministic=deterministic)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        mask = masks_lib.make_attention_mask(attention_mask, segment_ids)
        ropes = {
            kind: rotary_tables(position_ids, cfg.head_dim, cfg.rope_theta(kind))
            for kind in set(cfg.layer_kinds)
        }
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, ropes[cfg.layer_kinds[i]], deterministic)
        return self.final_norm(x)

    def attend(self, x):
        """Logits against the token embeddings (the tied MLM decoder)."""
        return self.word.attend(x)


class PredictionHead(nn.Module):
    """dense (H -> H) -> activation -> norm: the transform every ModernBERT head starts with."""

    cfg: ModernBertConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        x = dense(
            cfg.hidden_size,
            ("embed", None),
            out_init_std(cfg),
            dt,
            pdt,
            name="dense",
            use_bias=cfg.classifier_bias,
        )(x)
        return norm(cfg, "norm", axis_name=None)(activation(cfg.classifier_activation)(x))


class Classifier(nn.Module):
    """PredictionHead -> dropout -> Dense(num_labels) (with bias), on [..., H]."""

    cfg: ModernBertConfig
    num_out: int

    @nn.compact
    def __call__(self, x, deterministic=True):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        x = PredictionHead(cfg, name="head")(x)
        x = Dropout(cfg.classifier_dropout)(x, deterministic=deterministic)
        std = cfg.hidden_size**-0.5
        return dense(self.num_out, (None, None), std, dt, pdt, name="out_proj")(x)


class ModernBertModel(EncoderBase):
    """ModernBERT with the head named by `cfg.head`, called as every encoder is
    (`EncoderBase.__call__`; token_type_ids are ignored: ModernBERT has no segment
    embeddings, pairs are told apart by [SEP] alone). With an MLM head,
    `mlm_positions` [b, n] limits the logits to those rows.
    """

    cfg: ModernBertConfig

    def setup(self):
        cfg = self.cfg
        self.encoder = ModernBertEncoder(cfg)
        if cfg.head == "mlm":
            self.mlm = PredictionHead(cfg)
            if cfg.decoder_bias:
                _, pdt = dtypes(cfg)
                self.mlm_bias = self.param(
                    "mlm_bias",
                    nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
                    (cfg.vocab_size,),
                    pdt,
                )
        if cfg.head in ("sequence_classification", "token_classification"):
            self.classifier = Classifier(cfg, cfg.num_labels)
        if cfg.head == "question_answering":
            self.qa = Classifier(cfg, 2)

    def _forward(self, inputs, mlm_positions, deterministic: bool) -> EncoderOutput:
        cfg = self.cfg
        input_ids, attention_mask, _, position_ids, segment_ids = inputs
        hidden = self.encoder(input_ids, attention_mask, position_ids, segment_ids, deterministic)
        out = {}
        if cfg.head == "mlm":
            h = hidden
            if mlm_positions is not None:  # [b, n]: logits only where they are scored
                h = rows_at(hidden, mlm_positions)
            logits = self.encoder.attend(self.mlm(h))
            if cfg.decoder_bias:
                logits = logits + jnp.asarray(self.mlm_bias, logits.dtype)
            out["mlm_logits"] = logits
        if cfg.head == "sequence_classification":
            if cfg.classifier_pooling == "cls":
                pooled = hidden[:, 0]
            else:
                pooled = pool(hidden, attention_mask, "mean")
            out["logits"] = self.classifier(pooled, deterministic)
        if cfg.head == "token_classification":
            out["logits"] = self.classifier(hidden, deterministic)
        if cfg.head == "question_answering":
            logits = self.qa(hidden, deterministic)
            out["start_logits"], out["end_logits"] = logits[..., 0], logits[..., 1]
        return EncoderOutput(last_hidden_state=hidden, **out)
