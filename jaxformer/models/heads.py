"""Task heads on top of the encoder, and pooling for sentence embeddings."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxformer.layers.attention import zeros_init
from jaxformer.layers.dropout import Dropout
from jaxformer.layers.feedforward import activation, dense, layer_norm
from jaxformer.models.common import dtypes
from jaxformer.models.configs import EncoderConfig


def _dense(cfg: EncoderConfig, features: int, axes: tuple, name: str) -> nn.Module:
    """A dense layer at `cfg`'s dtypes and initializer_range."""
    return dense(features, axes, cfg.initializer_range, *dtypes(cfg), name=name)


def _classifier_dropout(cfg: EncoderConfig) -> float:
    return cfg.hidden_dropout if cfg.classifier_dropout is None else cfg.classifier_dropout


class MLMHead(nn.Module):
    """transform (H->E) + activation + LayerNorm, then the tied word-embedding decoder + bias."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, hidden, attend):
        cfg = self.cfg
        dt, pdt = dtypes(cfg)
        # RoBERTa's and ELECTRA's generator heads use GELU whatever hidden_act says.
        act = cfg.hidden_act if cfg.family in ("bert", "albert") else "gelu"
        h = _dense(cfg, cfg.emb_size, ("embed", None), "transform")(hidden)
        h = layer_norm(cfg.layer_norm_eps, dt, pdt, name="norm", axis_name=None)(activation(act)(h))
        bias = self.param("bias", zeros_init(("vocab",)), (cfg.vocab_size,), pdt)
        return attend(h) + jnp.asarray(bias, dt)  # [..., vocab]


class PairHead(nn.Module):
    """NSP (BERT) or SOP (ALBERT): 2-way classifier on the pooled [CLS]."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, pooled, deterministic=True):
        cfg = self.cfg
        if cfg.family == "albert":  # ALBERT's SOP head has dropout; BERT's NSP head has none
            pooled = Dropout(_classifier_dropout(cfg))(pooled, deterministic=deterministic)
        return _dense(cfg, 2, ("embed", None), "dense")(pooled)


class RTDHead(nn.Module):
    """ELECTRA discriminator: one logit per token, > 0 meaning "replaced"."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, hidden):
        cfg = self.cfg
        h = activation(cfg.hidden_act)(
            _dense(cfg, cfg.hidden_size, ("embed", None), "dense")(hidden)
        )
        return _dense(cfg, 1, (None, None), "prediction")(h)[..., 0]


class SequenceClassificationHead(nn.Module):
    """[batch, num_labels] from the pooler (BERT, ALBERT) or a small MLP on the first token
    (RoBERTa with tanh, ELECTRA with GELU). num_labels=1 is regression."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, hidden, pooled, deterministic=True):
        cfg = self.cfg
        drop = Dropout(_classifier_dropout(cfg))
        if cfg.classifier_style == "pooler":
            if pooled is None:
                raise ValueError("classifier_style='pooler' needs with_pooler=True.")
            return _dense(cfg, cfg.num_labels, ("embed", None), "out_proj")(
                drop(pooled, deterministic=deterministic)
            )
        x = drop(hidden[:, 0], deterministic=deterministic)
        x = _dense(cfg, cfg.hidden_size, ("embed", None), "dense")(x)
        x = activation("gelu" if cfg.family == "electra" else "tanh")(x)
        x = drop(x, deterministic=deterministic)
        return _dense(cfg, cfg.num_labels, (None, None), "out_proj")(x)


class TokenClassificationHead(nn.Module):
    """[batch, length, num_labels] per token."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, hidden, pooled=None, deterministic=True):
        cfg = self.cfg
        x = Dropout(_classifier_dropout(cfg))(hidden, deterministic=deterministic)
        return _dense(cfg, cfg.num_labels, ("embed", None), "out_proj")(x)


class QAHead(nn.Module):
    """Extractive QA: start and end logits per token, [batch, length] each."""

    cfg: EncoderConfig

    @nn.compact
    def __call__(self, hidden):
        logits = _dense(self.cfg, 2, ("embed", None), "out_proj")(hidden)
        return logits[..., 0], logits[..., 1]


def pool(hidden: jnp.ndarray, attention_mask=None, method: str = "mean") -> jnp.ndarray:
    """Sentence vectors `[batch, hidden]` from `[batch, length, hidden]`.

    cls: the first token. mean: average over real tokens. max: max over real tokens.
    """
    if attention_mask is None:
        attention_mask = jnp.ones(hidden.shape[:2], hidden.dtype)
    m = attention_mask.astype(hidden.dtype)[..., None]  # [b, t, 1]
    if method == "cls":
        return hidden[:, 0]
    if method == "mean":
        return (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    if method == "max":
        return jnp.where(m > 0, hidden, jnp.finfo(hidden.dtype).min).max(1)
    raise ValueError(f"unknown pooling {method!r}; use 'cls', 'mean' or 'max'.")


def l2_normalize(x: jnp.ndarray, eps: float = 1e-12) -> jnp.ndarray:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class Pooler(nn.Module):
    """Parameter-free pooling module (wraps `pool`), optionally L2-normalised."""

    method: str = "mean"
    normalize: bool = True

    def __call__(self, hidden, attention_mask=None):
        v = pool(hidden, attention_mask, self.method)
        return l2_normalize(v) if self.normalize else v
