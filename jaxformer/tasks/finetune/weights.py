"""Weight surgery for fine-tuning and continued pretraining: a run's params and model
config, the model config file the pipelines read, and the encoder / head split."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from jaxformer.convert.surgery import merge_encoder
from jaxformer.models import EncoderConfig, encoder_config_from_dict
from jaxformer.training.checks import init_path

__all__ = [
    "MODEL_CONFIG_FILE",
    "encoder_mask",
    "frozen_encoder_unchanged",
    "load_run_params",
    "merge_encoder",
    "save_model_config",
]

MODEL_CONFIG_FILE = "model_config.json"


def save_model_config(workdir: str, cfg: EncoderConfig) -> None:
    """Writes the model the task trains (head, classes, the encoder it started from) to
    `workdir/model_config.json`, which the pipelines read to load the run's checkpoints;
    `config.json`'s `model` section is only the config file's starting point."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, MODEL_CONFIG_FILE), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2, default=str)


def load_run_params(workdir: str):
    """(EncoderConfig of the run, its latest params as numpy) from one of our training runs
    (`workdir` may be relative to the current directory)."""
    from jaxformer.training.checkpoint import load_params

    _, workdir = init_path(f"run:{workdir}")
    with open(os.path.join(workdir, "config.json")) as f:
        run = json.load(f)
    return encoder_config_from_dict(run["model"]), load_params(workdir)


def encoder_mask(params, trainable: bool):
    """A tree of booleans: True on the encoder's parameters when `trainable`, else False."""
    return {
        k: jax.tree.map(lambda _, t=(k == "encoder") == trainable: t, v) for k, v in params.items()
    }


def frozen_encoder_unchanged(before, after) -> bool:
    """True when every encoder parameter is bit-for-bit equal in both trees."""
    a, b = jax.tree.leaves(before["encoder"]), jax.tree.leaves(after["encoder"])
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
