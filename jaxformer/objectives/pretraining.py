"""Pretraining objectives of the BERT family: pure functions of model outputs and the batch.

Batch keys (from `jaxformer.data`): `input_ids` [b, t] (already masked), `attention_mask`,
`token_type_ids`, `mlm_positions` [b, p], `mlm_ids` [b, p] (original ids), `mlm_weights`
[b, p] (1 real prediction, 0 padding), `pair_label` [b] (NSP: 1 = random next segment;
SOP: 1 = swapped order).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxformer.models.outputs import EncoderOutput
from jaxformer.objectives.losses import (
    sigmoid_binary_cross_entropy,
    weight_count,
    weighted_cross_entropy,
)


def encoder_inputs(batch, deterministic: bool) -> dict:
    """An encoder call's keyword inputs from a batch: `attention_mask`, `token_type_ids` and
    the `segment_ids` of packed rows (segments attend only within; each None where the batch
    has none) and `deterministic`."""
    return {
        "attention_mask": batch.get("attention_mask"),
        "token_type_ids": batch.get("token_type_ids"),
        "segment_ids": batch.get("segment_ids"),
        "deterministic": deterministic,
    }


def mlm_loss(out: EncoderOutput, batch, normalizer=None, label_smoothing: float = 0.0):
    """Cross-entropy over the masked positions only. Returns (loss, metrics)."""
    loss, m = weighted_cross_entropy(
        out.mlm_logits,
        batch["mlm_ids"],
        batch["mlm_weights"],
        label_smoothing=label_smoothing,
        normalizer=normalizer,
    )
    return loss, {"mlm_loss": m["loss"], "mlm_accuracy": m["accuracy"]}


def pair_loss(out: EncoderOutput, batch, normalizer=None):
    """NSP (BERT) or SOP (ALBERT) 2-way cross-entropy on the pooled first token."""
    loss, m = weighted_cross_entropy(out.pair_logits, batch["pair_label"], normalizer=normalizer)
    return loss, {"pair_loss": m["loss"], "pair_accuracy": m["accuracy"]}


def mlm_pair_loss(out: EncoderOutput, batch):
    """BERT (MLM + NSP) and ALBERT (MLM + SOP): the sum of both losses."""
    l1, m1 = mlm_loss(out, batch)
    l2, m2 = pair_loss(out, batch)
    return l1 + l2, {**m1, **m2, "loss": l1 + l2}


def mlm_only_loss(out: EncoderOutput, batch):
    """RoBERTa (and ELECTRA's generator): MLM alone."""
    loss, m = mlm_loss(out, batch)
    return loss, {**m, "loss": loss}


def restore_original(input_ids, positions, values, weights):
    """Writes `values` [b, p] at `positions` [b, p] where `weights` > 0; padding slots keep
    what is already there."""
    input_ids = jnp.asarray(input_ids)
    current = jnp.take_along_axis(input_ids, positions, axis=1)
    vals = jnp.where(weights > 0, values, current).astype(input_ids.dtype)
    rows = jnp.arange(input_ids.shape[0])[:, None]
    return input_ids.at[rows, positions].set(vals)


def share_embeddings(generator_params, discriminator_params):
    """ELECTRA ties the generator's token/position/type embeddings to the discriminator's:
    the generator's embedding subtree is replaced by the discriminator's (one set of
    weights, trained by both losses)."""
    gen = dict(generator_params)
    gen["encoder"] = {**gen["encoder"], "embeddings": discriminator_params["encoder"]["embeddings"]}
    return gen


def electra_loss(
    generator: nn.Module,
    discriminator: nn.Module,
    params,
    batch,
    rng,
    *,
    rtd_weight: float = 50.0,
    deterministic: bool = True,
    temperature: float = 1.0,
    norms: dict | None = None,
):
    """ELECTRA replaced-token detection.

    params: {"generator": ..., "discriminator": ...}; the generator's embeddings are taken
    from the discriminator (`share_embeddings`), so its own embedding entry is ignored.
    1. The generator (MLM head) predicts the masked tokens; MLM loss on them.
    2. Samples from its softmax (no gradient through sampling) replace the masked tokens.
    3. The discriminator labels every real token: 1 where the token now differs from the
       original, 0 elsewhere (a sample equal to the original counts as original).
    Loss = mlm + rtd_weight * rtd (λ = 50 in the paper). Returns (loss, metrics).
    norms: optional whole-batch denominators {"mlm", "rtd"} (see `electra_normalizers`), so
    micro-batch losses add up to the full-batch loss under gradient accumulation.
    """
    norms = norms or {}
    k_sample, k_gen, k_disc = jax.random.split(rng, 3)
    gen_params = share_embeddings(params["generator"], params["discriminator"])
    inputs = encoder_inputs(batch, deterministic)
    gen_out = generator.apply(
        {"params": gen_params},
        batch["input_ids"],
        mlm_positions=batch["mlm_positions"],
        rngs={"dropout": k_gen},
        **inputs,
    )
    g_loss, g_metrics = mlm_loss(gen_out, batch, normalizer=norms.get("mlm"))

    corrupted, labels = corrupt(gen_out.mlm_logits, batch, k_sample, temperature)

    disc_out = discriminator.apply(
        {"params": params["discriminator"]}, corrupted, rngs={"dropout": k_disc}, **inputs
    )
    real = (
        jnp.ones_like(labels, jnp.float32)
        if batch.get("attention_mask") is None
        else batch["attention_mask"].astype(jnp.float32)
    )
    d_loss, d_metrics = sigmoid_binary_cross_entropy(
        disc_out.rtd_logits, labels, real, normalizer=norms.get("rtd")
    )
    pred = (disc_out.rtd_logits > 0).astype(jnp.float32)
    lab = labels.astype(jnp.float32)
    tp = (pred * lab * real).sum()
    total = g_loss + rtd_weight * d_loss
    metrics = {
        **g_metrics,
        "loss": total,
        "rtd_loss": d_loss,
        "rtd_accuracy": d_metrics["accuracy"],
        "rtd_precision": tp / jnp.maximum((pred * real).sum(), 1.0),
        "rtd_recall": tp / jnp.maximum((lab * real).sum(), 1.0),
        "replaced_fraction": (lab * real).sum() / jnp.maximum(real.sum(), 1.0),
    }
    return total, metrics


def electra_normalizers(batch) -> dict:
    """Whole-batch denominators for `electra_loss`: predicted tokens and real tokens."""
    real = (
        jnp.asarray(batch["attention_mask"], jnp.float32)
        if "attention_mask" in batch
        else jnp.ones(jnp.shape(batch["input_ids"]), jnp.float32)
    )
    return {
        "mlm": weight_count(batch["mlm_weights"]),
        "rtd": weight_count(real),
    }


def corrupt(mlm_logits, batch, rng, temperature: float = 1.0):
    """Samples the generator's softmax at the masked positions and writes the samples there.

    Returns (corrupted ids [b, t], labels [b, t]: 1 where the token differs from the
    original). No gradient flows through the sampling.
    """
    logits = jax.lax.stop_gradient(mlm_logits).astype(jnp.float32) / temperature
    sampled = jax.random.categorical(rng, logits, axis=-1)  # [b, p]
    original = restore_original(
        batch["input_ids"], batch["mlm_positions"], batch["mlm_ids"], batch["mlm_weights"]
    )
    corrupted = restore_original(
        batch["input_ids"], batch["mlm_positions"], sampled, batch["mlm_weights"]
    )
    return corrupted, (corrupted != original).astype(jnp.int32)
