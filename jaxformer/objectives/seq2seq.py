"""Sequence-to-sequence objective: teacher forcing and label-smoothed token cross-entropy.

Pure functions. A batch is a dict of `[batch, length]` int arrays:
  input_ids, attention_mask (source, 1 = real token), labels (target ids ending in EOS,
  padded), labels_mask (1 = real target token; weights the loss); packed rows add
  decoder_input_ids, segment_ids and decoder_segment_ids.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxformer.objectives.losses import cross_entropy_with_logits, top1_correct

__all__ = [
    "compute_loss",
    "seq2seq_loss",
    "shift_right",
    "smoothed_cross_entropy",
    "token_metrics",
]


def shift_right(labels, start_id: int, pad_id: int | None = None):
    """Decoder inputs for teacher forcing: `[start, y_0, ..., y_{n-2}]` per row.

    Negative label ids (ignored positions, e.g. -100) become `pad_id` (default: start_id).
    """
    pad_id = start_id if pad_id is None else pad_id
    shifted = jnp.concatenate([jnp.full_like(labels[:, :1], start_id), labels[:, :-1]], axis=1)
    return jnp.where(shifted < 0, pad_id, shifted)


def smoothed_cross_entropy(logits, labels, label_smoothing: float = 0.1):
    """Per-token cross-entropy [batch, length] against the label-smoothed target
    (`losses.cross_entropy_with_logits`: 1 - eps on the label, eps / (V - 1) elsewhere, the
    target's entropy subtracted). Negative (ignored) labels score label 0; weight them out."""
    return cross_entropy_with_logits(logits, jnp.maximum(labels, 0), label_smoothing)[0]


def token_metrics(logits, labels, weights, label_smoothing: float = 0.1) -> dict:
    """Sums over real tokens: smoothed loss, NLL, correct argmax, token count (scalars)."""
    w = weights.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
    return {
        "loss_sum": jnp.sum(smoothed_cross_entropy(logits, labels, label_smoothing) * w),
        "nll_sum": jnp.sum(nll * w),
        "correct": jnp.sum(top1_correct(logits, labels) * w),
        "num_tokens": jnp.sum(w),
    }


def seq2seq_loss(logits, labels, weights, label_smoothing: float = 0.1):
    """(loss, metrics): loss is the smoothed cross-entropy per real token; metrics add
    accuracy and perplexity (exp of the unsmoothed NLL) per real token, and the sums."""
    m = token_metrics(logits, labels, weights, label_smoothing)
    n = jnp.maximum(m["num_tokens"], 1.0)
    loss = m["loss_sum"] / n
    return loss, {
        **m,
        "loss": loss,
        "nll": m["nll_sum"] / n,
        "accuracy": m["correct"] / n,
        "perplexity": jnp.exp(m["nll_sum"] / n),
    }


def compute_loss(
    model,
    params,
    batch: dict,
    *,
    rng=None,
    deterministic: bool = True,
    label_smoothing: float = 0.1,
):
    """Teacher-forced forward pass + `seq2seq_loss` for a batch dict (see module doc).

    `rng` is the dropout key (needed when `deterministic=False`). A packed batch
    (`jaxformer.data.pairs.pack_pairs`) brings its own `decoder_input_ids` (the start token
    opens every packed pair) and its `segment_ids` / `decoder_segment_ids`.
    """
    cfg = model.cfg
    dec_in = batch.get("decoder_input_ids")
    if dec_in is None:
        dec_in = shift_right(batch["labels"], cfg.decoder_start_token_id, cfg.pad_token_id)
    packed = {k: batch[k] for k in ("segment_ids", "decoder_segment_ids") if k in batch}
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["attention_mask"],
        dec_in,
        deterministic=deterministic,
        rngs=None if deterministic else {"dropout": rng},
        **packed,
    )
    return seq2seq_loss(out.logits, batch["labels"], batch["labels_mask"], label_smoothing)
