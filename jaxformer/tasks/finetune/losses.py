"""The fine-tuning heads' losses."""

from __future__ import annotations

import jax.numpy as jnp

from jaxformer.models import EncoderConfig
from jaxformer.objectives import losses

__all__ = ["task_loss"]


def task_loss(cfg: EncoderConfig, out, batch, normalizer=None):
    """(loss, metrics) for the fine-tuning heads. Classification: cross-entropy and
    accuracy; regression (num_labels=1): mean squared error; tokens: cross-entropy over
    labelled tokens; QA: mean of the start and end cross-entropies, exact span accuracy."""
    if cfg.head == "sequence_classification" and cfg.num_labels == 1:
        err = out.logits[:, 0].astype(jnp.float32) - batch["label"].astype(jnp.float32)
        n = normalizer if normalizer is not None else err.shape[0]
        mse = jnp.sum(err**2) / n
        return mse, {"loss": mse, "mse": mse}
    if cfg.head == "sequence_classification":
        loss, m = losses.weighted_cross_entropy(out.logits, batch["label"], normalizer=normalizer)
        return loss, {"loss": loss, "accuracy": m["accuracy"]}
    if cfg.head == "token_classification":
        labels = jnp.maximum(batch["labels"], 0)  # -100 slots carry weight 0
        loss, m = losses.weighted_cross_entropy(
            out.logits, labels, batch["label_weights"], normalizer=normalizer
        )
        return loss, {"loss": loss, "accuracy": m["accuracy"]}
    if cfg.head == "question_answering":
        ls, ms = losses.weighted_cross_entropy(
            out.start_logits, batch["start_positions"], normalizer=normalizer
        )
        le, me = losses.weighted_cross_entropy(
            out.end_logits, batch["end_positions"], normalizer=normalizer
        )
        both = (jnp.argmax(out.start_logits, -1) == batch["start_positions"]) & (
            jnp.argmax(out.end_logits, -1) == batch["end_positions"]
        )
        n = normalizer if normalizer is not None else both.shape[0]
        loss = (ls + le) / 2
        return loss, {
            "loss": loss,
            "start_accuracy": ms["accuracy"],
            "end_accuracy": me["accuracy"],
            "span_accuracy": both.sum() / n,
        }
    raise ValueError(f"no fine-tuning loss for head {cfg.head!r}.")
