"""One encoder for the BERT family (BERT, RoBERTa, ALBERT, ELECTRA), picked by config."""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.layers import masks as masks_lib
from jaxformer.layers.dropout import Dropout
from jaxformer.layers.embeddings import Embed, token_positions
from jaxformer.layers.feedforward import FeedForward, dense, layer_norm
from jaxformer.models import heads as heads_lib
from jaxformer.models.common import (
    EncoderBase,
    EncoderInputs,
    attention,
    check_batch_ids,
    dtypes,
    rows_at,
)
from jaxformer.models.configs import EncoderConfig
from jaxformer.models.outputs import EncoderOutput

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def check_length(cfg: EncoderConfig, length: int) -> None:
    if length > cfg.max_length:
        raise ValueError(
            f"sequence length {length} exceeds the position table: max_position_embeddings="
            f"{cfg.max_position_embeddings} allows {cfg.max_length} tokens"
            + (f" (position_offset={cfg.position_offset})" if cfg.position_offset else "")
            + ". Truncate or window the input, or use a config with a longer table."
        )


def default_position_ids(cfg: EncoderConfig, input_ids, segment_ids=None):
    """Positions per family: 0..T-1 (restarting per packed segment); RoBERTa counts only
    non-pad tokens and starts after the pad id, pads sit at the pad id."""
    if segment_ids is not None or not cfg.position_offset:
        return token_positions(input_ids, segment_ids) + cfg.position_offset
    real = (input_ids != cfg.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + (cfg.position_offset - 1)


class Embeddings(nn.Module):
    """word + position + token type, then LayerNorm and dropout. Width E (embedding_size)."""

    cfg: EncoderConfig

    def setup(self):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        kw = dict(init_std=cfg.initializer_range, dtype=dt, param_dtype=pdt)
        self.word = Embed(cfg.vocab_size, cfg.emb_size, ("vocab", "embed"), **kw)
        self.position = Embed(cfg.max_position_embeddings, cfg.emb_size, (None, "embed"), **kw)
        self.token_type = Embed(cfg.type_vocab_size, cfg.emb_size, (None, "embed"), **kw)
        self.norm = layer_norm(cfg.layer_norm_eps, dt, pdt)
        self.dropout = Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids, token_type_ids, position_ids, deterministic=True):
        x = self.word(input_ids) + self.token_type(token_type_ids)
        x = x + self.position(position_ids)
        return self.dropout(self.norm(x), deterministic=deterministic)

    def attend(self, x):
        return self.word.attend(x)


def _add_residual(cfg: EncoderConfig, norm, x, h, deterministic: bool):
    """A sublayer's end: dropout on its output `h`, the residual, and `norm` when post-LN."""
    h = Dropout(cfg.hidden_dropout)(h, deterministic=deterministic)
    x = x + h if cfg.pre_ln else norm(x + h)
    return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class AttentionBlock(nn.Module):
    """Self-attention + dropout + residual + LayerNorm (post-LN, or pre-LN by config)."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, x, mask, deterministic=True, rows=None):
        """rows: optional [b, r] positions; then only those rows are computed (queries at
        `rows`, keys and values from every position) and the output is [b, r, H]."""
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        norm = layer_norm(cfg.layer_norm_eps, dt, pdt, name="norm")
        attend = attention(cfg, "attention")
        if rows is None:
            h = norm(x) if cfg.pre_ln else x
            h = attend(h, mask=mask, deterministic=deterministic)
        else:
            kv = norm(x) if cfg.pre_ln else x
            x = jnp.take_along_axis(x, rows[..., None], axis=1)
            if mask is not None and mask.shape[2] > 1:  # per-query rows (packed segments)
                mask = jnp.take_along_axis(mask, rows[:, None, :, None], axis=2)
            h = norm(x) if cfg.pre_ln else x
            h = attend(h, inputs_kv=kv, mask=mask, deterministic=deterministic)
        return _add_residual(cfg, norm, x, h, deterministic)


class MlpBlock(nn.Module):
    """Feed-forward + dropout + residual + LayerNorm."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, x, deterministic=True):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        norm = layer_norm(cfg.layer_norm_eps, dt, pdt, name="norm")
        h = norm(x) if cfg.pre_ln else x
        h = FeedForward(
            cfg.intermediate_size,
            cfg.hidden_act,
            init_std=cfg.initializer_range,
            dtype=dt,
            param_dtype=pdt,
            name="mlp",
        )(h)
        return _add_residual(cfg, norm, x, h, deterministic)


class Layer(nn.Module):
    """One attention block then one MLP block (the unit that `scan_layers` stacks)."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, x, mask, deterministic=True):
        x = AttentionBlock(self.cfg, name="attention")(x, mask, deterministic)
        return MlpBlock(self.cfg, name="mlp")(x, deterministic), None


def remat_block(cls, cfg, static_argnums):
    """`cls` under activation checkpointing by `cfg.remat_policy` (any model config with that
    field; the encoder-decoder uses it too). CSE prevention is only needed outside scan."""
    if cfg.remat_policy == "none":
        return cls
    return nn.remat(
        cls,
        policy=REMAT_POLICIES[cfg.remat_policy],
        prevent_cse=not getattr(cfg, "scan_layers", False),
        static_argnums=static_argnums,
    )


def layer_plan(cfg: EncoderConfig) -> list[tuple[int, int]]:
    """For each applied layer, the index of its attention block and of its MLP block.

    none: a block each. all (ALBERT): layer i runs group int(i / (L / groups)), whose
    inner_group_num blocks run in turn. attention / ffn: that sub-block is one shared copy.
    """
    if cfg.sharing == "all":
        plan = []
        for i in range(cfg.num_layers):
            g = int(i / (cfg.num_layers / cfg.num_hidden_groups))
            plan += [(g * cfg.inner_group_num + j,) * 2 for j in range(cfg.inner_group_num)]
        return plan
    shared_attn, shared_mlp = cfg.sharing == "attention", cfg.sharing == "ffn"
    return [(0 if shared_attn else i, 0 if shared_mlp else i) for i in range(cfg.num_layers)]


class Encoder(EncoderBase):
    """Embeddings -> (projection E->H) -> layers -> optional pooler, called as every encoder
    is (`EncoderBase.__call__`), returning `EncoderOutput(last_hidden_state [b, t, H],
    pooled [b, H] or None without a pooler)`. It has no head: `mlm_positions` must be None."""

    cfg: EncoderConfig

    def setup(self):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        self.embeddings = Embeddings(cfg)
        if cfg.emb_size != cfg.hidden_size:
            self.embed_proj = dense(
                cfg.hidden_size, (None, "embed"), cfg.initializer_range, dt, pdt
            )
        if cfg.scan_layers:
            self.layers = nn.scan(
                remat_block(Layer, cfg, static_argnums=(3,)),
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )(cfg)
        else:
            plan = layer_plan(cfg)
            n_attn = 1 + max(a for a, _ in plan)
            n_mlp = 1 + max(m for _, m in plan)
            attn_cls = remat_block(AttentionBlock, cfg, static_argnums=(3,))
            mlp_cls = remat_block(MlpBlock, cfg, static_argnums=(2,))
            self.attention = [attn_cls(cfg) for _ in range(n_attn)]
            self.mlp = [mlp_cls(cfg) for _ in range(n_mlp)]
        if cfg.pre_ln:
            self.final_norm = layer_norm(cfg.layer_norm_eps, dt, pdt)
        if cfg.with_pooler:
            self.pooler = dense(cfg.hidden_size, ("embed", None), cfg.initializer_range, dt, pdt)

    def _forward(self, inputs: EncoderInputs, mlm_positions, deterministic: bool) -> EncoderOutput:
        if mlm_positions is not None:
            raise TypeError(
                f"Encoder got mlm_positions ({type(mlm_positions).__name__}): the bare encoder "
                "has no MLM head; use EncoderModel(head='mlm'), and pass deterministic= by name"
            )
        return self.encode(inputs, deterministic)

    def encode(
        self, inputs: EncoderInputs, deterministic: bool = True, last_rows=None
    ) -> EncoderOutput:
        """`EncoderOutput` for `inputs` (an `EncoderInputs`; the public call is `__call__`).
        With `last_rows` [b, r] (first column 0, the pooler's row) the last layer runs only
        at those rows and last_hidden_state is [b, r, H] (what `EncoderModel` uses for
        sparse MLM)."""
        input_ids, attention_mask, token_type_ids, position_ids, segment_ids = inputs
        cfg = self.cfg
        if last_rows is not None and cfg.scan_layers:
            raise ValueError("last_rows needs scan_layers=False.")
        check_batch_ids(input_ids, cfg.vocab_size)
        check_length(cfg, input_ids.shape[1])
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        if position_ids is None:
            position_ids = default_position_ids(cfg, input_ids, segment_ids)
        x = self.embeddings(input_ids, token_type_ids, position_ids, deterministic)
        if cfg.emb_size != cfg.hidden_size:
            x = self.embed_proj(x)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        mask = masks_lib.make_attention_mask(attention_mask, segment_ids)
        if cfg.scan_layers:
            x, _ = self.layers(x, mask, deterministic)
        else:
            plan = layer_plan(cfg)
            for i, (a, m) in enumerate(plan):
                rows = last_rows if i == len(plan) - 1 else None
                x = self.attention[a](x, mask, deterministic, rows)
                x = self.mlp[m](x, deterministic)
        if cfg.pre_ln:
            x = self.final_norm(x)
        pooled = jnp.tanh(self.pooler(x[:, 0])) if cfg.with_pooler else None
        return EncoderOutput(last_hidden_state=x, pooled=pooled)

    def attend(self, x):
        """Logits against the word embeddings (the tied MLM decoder)."""
        return self.embeddings.attend(x)


class EncoderModel(EncoderBase):
    """An encoder of the BERT family with the head named by `cfg.head`, called as every
    encoder is (`EncoderBase.__call__`). With an MLM head, `mlm_positions` [b, n] limits
    the logits to those rows; with `cfg.sparse_last_layer` the last layer also runs only
    there, and `last_hidden_state` is then [b, 1 + n, H]: the [CLS] row, then the rows at
    `mlm_positions`.
    """

    cfg: EncoderConfig

    def setup(self):
        cfg = self.cfg
        self.encoder = Encoder(cfg)
        if cfg.head in ("mlm", "pretraining"):
            self.mlm = heads_lib.MLMHead(cfg)
        if cfg.head == "pretraining":
            self.pair_head = heads_lib.PairHead(cfg)
        if cfg.head == "rtd":
            self.rtd = heads_lib.RTDHead(cfg)
        if cfg.head == "sequence_classification":
            self.classifier = heads_lib.SequenceClassificationHead(cfg)
        if cfg.head == "token_classification":
            self.classifier = heads_lib.TokenClassificationHead(cfg)
        if cfg.head == "question_answering":
            self.qa = heads_lib.QAHead(cfg)

    def _forward(self, inputs, mlm_positions, deterministic: bool) -> EncoderOutput:
        cfg = self.cfg
        sparse = mlm_positions is not None and cfg.runs_sparse_last_layer(
            mlm_positions.shape[1], inputs.input_ids.shape[1]
        )
        last_rows = None
        if sparse:  # [CLS] (the pooler's row) then the scored rows
            last_rows = jnp.concatenate(
                [jnp.zeros_like(mlm_positions[:, :1]), mlm_positions], axis=1
            )
        encoded = self.encoder.encode(inputs, deterministic, last_rows)
        hidden, pooled = encoded.last_hidden_state, encoded.pooled
        out = {}
        if cfg.head in ("mlm", "pretraining"):
            h = hidden
            if sparse:
                h = hidden[:, 1:]
            elif mlm_positions is not None:  # [b, n]: logits only where they are scored
                h = rows_at(hidden, mlm_positions)
            out["mlm_logits"] = self.mlm(h, self.encoder.attend)
        if cfg.head == "pretraining":
            out["pair_logits"] = self.pair_head(pooled, deterministic)
        if cfg.head == "rtd":
            out["rtd_logits"] = self.rtd(hidden)
        if cfg.head in ("sequence_classification", "token_classification"):
            out["logits"] = self.classifier(hidden, pooled, deterministic)
        if cfg.head == "question_answering":
            out["start_logits"], out["end_logits"] = self.qa(hidden)
        return EncoderOutput(last_hidden_state=hidden, pooled=pooled, **out)
