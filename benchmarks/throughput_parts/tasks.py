"""The task adapter: a model and its loss in the training system's task interface
(`init_params`, `normalizers`, `loss_fn`)."""

from __future__ import annotations


import jax
import jax.numpy as jnp

from jaxformer.training.task import Task


class _SimpleTask(Task):
    """The training system's task interface for a model + loss (used for the seq2seq step,
    and for BERT when `--step own`)."""

    def __init__(self, model, init_inputs, loss):
        self.model, self._init_inputs, self._loss = model, init_inputs, loss

    def init_params(self, rng):
        p, d = jax.random.split(rng)
        return self.model.init({"params": p, "dropout": d}, **self._init_inputs)["params"]

    def normalizers(self, batch):
        return {}

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        return self._loss(params, batch, rng, deterministic)


def bert_task(cfg, seq: int, predictions: int, which: str):
    """The training system's PretrainTask (what `train.py` runs), or `_SimpleTask` with the
    same loss when `which == "own"` or the training package is unavailable."""
    if which == "system":
        try:
            from jaxformer.training.defaults import base_config
            from jaxformer.tasks.pretrain import PretrainTask

            conf = base_config(cfg.to_dict(), task="pretrain")
            conf.data.update(
                seq_len=seq, objective="none", label_smoothing=0.0, max_predictions=predictions
            )
            return PretrainTask(conf, "/tmp/jaxformer_bench"), "tasks.pretrain.PretrainTask"
        except ImportError as e:  # pragma: no cover
            print(f"[throughput] training system unavailable ({e}); using own task")
    from jaxformer.models import encoder_model
    from jaxformer.objectives import encoder_inputs, losses

    model = encoder_model(cfg)

    def loss(params, batch, rng, deterministic):
        out = model.apply(
            {"params": params},
            batch["input_ids"],
            mlm_positions=batch["mlm_positions"],
            position_ids=batch.get("position_ids"),
            rngs={"dropout": rng},
            **encoder_inputs(batch, deterministic),
        )
        return losses.weighted_cross_entropy(out.mlm_logits, batch["mlm_ids"], batch["mlm_weights"])

    return _SimpleTask(model, {"input_ids": jnp.zeros((1, seq), jnp.int32)}, loss), "own"


def seq2seq_model(kind: str, cfg):
    """Our encoder-decoder of `kind` ("transformer" or "t5")."""
    if kind == "t5":
        from jaxformer.models.t5 import T5

        return T5(cfg)
    from jaxformer.models.transformer import Transformer

    return Transformer(cfg)


def seq2seq_task(kind: str, cfg, seq: int):
    """A teacher-forced cross-entropy step of the encoder-decoder of `kind`."""
    from jaxformer.objectives import losses

    model = seq2seq_model(kind, cfg)

    def loss(params, batch, rng, deterministic):
        out = model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            batch["decoder_input_ids"],
            batch["decoder_attention_mask"],
            deterministic=deterministic,
            rngs={"dropout": rng},
        )
        return losses.weighted_cross_entropy(
            out.logits, batch["labels"], batch["decoder_attention_mask"]
        )

    ids = jnp.zeros((1, seq), jnp.int32)
    init = {"input_ids": ids, "attention_mask": jnp.ones_like(ids), "decoder_input_ids": ids}
    return _SimpleTask(model, init, loss)
