"""Pure loss functions: weighted cross-entropy with label smoothing and optional z-loss.

All reductions are in float32 whatever the logits' dtype (bf16 logits lose the small
probabilities that cross-entropy needs).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def weight_count(weights):
    """sum(weights) as float32, at least 1: a whole-batch loss denominator (normalizer) that
    stays finite on a batch with nothing to score."""
    return jnp.maximum(jnp.asarray(weights, jnp.float32).sum(), 1.0)


def row_count(ids):
    """The rows of `ids` [b, ...] as a float32 denominator (per-example losses)."""
    return jnp.asarray(jnp.shape(ids)[0], jnp.float32)


def _xlogx(p: float) -> float:
    return p * math.log(p) if p > 0 else 0.0


def cross_entropy_with_logits(logits, targets, label_smoothing: float = 0.0, z_loss: float = 0.0):
    """Per-position loss. logits [..., V], targets [...] int -> (loss [...], z [...]).

    With label smoothing the target distribution puts 1 - s on the target and s / (V - 1)
    on every other class; its entropy is subtracted so a perfect prediction scores 0.
    z = z_loss * logsumexp(logits)^2 (PaLM's auxiliary term), included in `loss`.
    """
    logits = logits.astype(jnp.float32)
    v = logits.shape[-1]
    lse = jax.nn.logsumexp(logits, axis=-1)  # [...]
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    if label_smoothing:
        on, off = 1.0 - label_smoothing, label_smoothing / (v - 1)
        # -sum_k q_k log p_k with q = off everywhere plus (on - off) at the target.
        ce = lse - (on - off) * target_logit - off * logits.sum(-1)
        entropy = -(_xlogx(on) + (v - 1) * _xlogx(off))
        ce = ce - entropy
    else:
        ce = lse - target_logit
    z = z_loss * jnp.square(lse)
    return ce + z, z


def top1_correct(logits, targets):
    """1.0 where the target's logit is the largest (argmax == target but for exact ties),
    else 0.0. A max-reduce and a gather: XLA:CPU's argmax (a variadic reduce) over a large
    vocabulary costs as much as a layer of a small model."""
    logits = logits.astype(jnp.float32)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), -1)[..., 0]
    return (target_logit >= logits.max(-1)).astype(jnp.float32)


def weighted_cross_entropy(
    logits,
    targets,
    weights=None,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    normalizer: jnp.ndarray | None = None,
):
    """Weighted mean cross-entropy and its metrics.

    weights [...] (None = all ones); normalizer: what the weighted sum is divided by (default
    sum(weights)). Pass the whole batch's weight total when a batch is split into
    micro-batches, so the micro-batch losses add up to the full-batch loss exactly.
    Returns (loss, {"loss", "z_loss", "accuracy", "weight"}) with the same normalisation.
    """
    w = jnp.ones(targets.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    if normalizer is None:
        normalizer = jnp.maximum(w.sum(), 1.0)
    loss, z = cross_entropy_with_logits(logits, targets, label_smoothing, z_loss)
    correct = top1_correct(logits, targets)
    total = (loss * w).sum() / normalizer
    metrics = {
        "loss": total,
        "z_loss": (z * w).sum() / normalizer,
        "accuracy": (correct * w).sum() / normalizer,
    }
    return total, metrics


def sigmoid_binary_cross_entropy(
    logits, labels, weights=None, *, normalizer: jnp.ndarray | None = None
):
    """Weighted mean binary cross-entropy (e.g. ELECTRA's replaced-token detection)."""
    logits = logits.astype(jnp.float32)
    labels = labels.astype(jnp.float32)
    w = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    if normalizer is None:
        normalizer = jnp.maximum(w.sum(), 1.0)
    loss = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    correct = ((logits > 0).astype(jnp.float32) == labels).astype(jnp.float32)
    return (loss * w).sum() / normalizer, {
        "loss": (loss * w).sum() / normalizer,
        "accuracy": (correct * w).sum() / normalizer,
    }
