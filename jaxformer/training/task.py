"""The task interface: what the training loop needs from a model, its loss and its data.

A task owns its model, its loss and its data; the loop owns everything else (sharding,
steps, checkpoints, logging). The loop and the step call only the methods below; every
optional one has a default here, so a task overrides what it needs and nothing is probed.
The tasks themselves live in `jaxformer.tasks` (one registry: `config.task` names one);
`jaxformer.training.LossTask` builds one from plain functions.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Iterable

import jax
import jax.numpy as jnp

__all__ = ["Task"]


class Task:
    """Base class. Subclasses set `self.model` (or override `init_params`) and implement
    `loss_fn`, `train_iterator` and, for eval, `eval_batches`."""

    model: Any
    seq_len: int

    def __init__(self, config, workdir: str):
        self.config, self.workdir = config, workdir

    # -- model ---------------------------------------------------------------------------
    def init_inputs(self) -> dict:
        """Small dummy inputs for `model.init` (shapes only matter)."""
        return {"input_ids": jnp.zeros((1, self.seq_len), jnp.int32)}

    def init_params(self, rng):
        """Boxed params (nn.Partitioned leaves carrying logical axis names) or plain arrays
        (replicated)."""
        p, d = jax.random.split(rng)
        return self.model.init({"params": p, "dropout": d}, **self.init_inputs())["params"]

    def pretrained_params(self, fresh) -> Any | None:
        """Params to start from instead of `fresh` (host numpy, unboxed) on a run without a
        checkpoint, or None to keep `fresh` (fine-tuning: a pretrained encoder)."""
        return None

    def wrap_optimizer(self, tx):
        """The optimizer the step applies (e.g. zero updates for a frozen encoder)."""
        return tx

    # -- loss ----------------------------------------------------------------------------
    def device_batch(self, batch, rng):
        """The batch the loss reads, built inside the compiled step from the whole global
        batch (before `normalizers` and the micro-batch split) with a key of its own per
        step (e.g. MLM masks drawn on the device). Must be jittable with static shapes, and
        must return complete batches (eval batches) unchanged."""
        return batch

    def normalizers(self, batch) -> dict:
        """Whole-batch denominators, computed before the batch is split into micro-batches."""
        return {}

    def loss_fn(self, params, batch, rng, norms, deterministic: bool = False):
        """-> (scalar loss, metrics dict of scalars normalised like the loss)."""
        raise NotImplementedError

    # -- data ----------------------------------------------------------------------------
    def train_iterator(self, batch_size: int, process_index: int, process_count: int):
        """This process's rows of each global batch (numpy dicts), forever, with
        `get_state()` / `set_state()` for checkpoints."""
        raise NotImplementedError

    def eval_batches(
        self, batch_size: int, process_index: int, process_count: int
    ) -> Iterable[dict] | None:
        """This process's rows of each held-out batch, or None (no eval)."""
        return None

    # -- eval and reporting --------------------------------------------------------------
    def eval_metrics(self, params) -> dict:
        """Metrics that need more than the loss step (e.g. BLEU of decoded text), computed
        at every eval on every process; the loop logs them as `eval_<name>`, so
        `checkpoint.best_metric` can name one."""
        return {}

    def task_metrics(self, params) -> dict:
        """The task's own metric on the eval split, once at the end (`eval_task_<name>`)."""
        return {}

    def baseline_metrics(self, eval_batches) -> dict:
        """Reference figures for the summary (e.g. the most-frequent-token accuracy)."""
        return {}

    def data_summary(self) -> dict:
        """What the task's data did that the run should record (e.g. pairs dropped as too
        long): logged at the start and merged into summary.json."""
        return {}

    def tokens_per_example(self) -> int:
        return self.seq_len

    def flops_per_token(self, params) -> float:
        return 0.0

    def finish(self, params, workdir: str) -> str:
        """Runs at the end on process 0; returns text to print (e.g. predictions)."""
        return ""
