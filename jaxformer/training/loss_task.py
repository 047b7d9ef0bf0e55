"""The loop for your own module, without subclassing: `LossTask(init, loss_fn, data)`.

    task = training.LossTask(init_fn, loss_fn, {"x": xs, "y": ys}, eval_data=held_out)
    training.train(training.default_config(num_train_steps=100), "runs/mine", task)

gives a module of your own what `train.py` gives ours: sharding by the logical rules (boxed
params) or replication (plain ones), the compiled step with exact gradient accumulation and
the non-finite guard, checkpoints, exact resume (the data position is one integer),
metrics.jsonl / TensorBoard, eval and best-checkpoint keeping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.training.task import Task

__all__ = ["ArrayData", "LossTask"]


class ArrayData:
    """Batches of rows of equal-length numpy arrays, reshuffled each epoch by `seed`; batch
    k is a pure function of (seed, k), so the checkpointed position is one integer. Each of
    `process_count` processes takes its block of `batch_size // process_count` rows."""

    def __init__(
        self,
        arrays: Mapping[str, Any],
        batch_size: int,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        shuffle: bool = True,
    ):
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        sizes = {k: len(v) for k, v in self.arrays.items()}
        if len(set(sizes.values())) != 1 or not next(iter(sizes.values()), 0):
            raise ValueError(f"data arrays need the same, non-zero number of rows; got {sizes}.")
        self.n = next(iter(sizes.values()))
        self.b, self.seed, self.shuffle = batch_size, seed, shuffle
        self.pi, self.pc = process_index, process_count
        self.k = 0
        self._order = (-1, None)  # (epoch, permutation): one permutation per epoch

    def _row(self, r: int) -> int:
        epoch, i = divmod(r, self.n)
        if not self.shuffle:
            return i
        if self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return int(self._order[1][i])

    def batch(self, k: int) -> dict:
        per = self.b // self.pc
        start = k * self.b + self.pi * per
        rows = np.asarray([self._row(r) for r in range(start, start + per)])
        return {name: v[rows] for name, v in self.arrays.items()}

    def __iter__(self):
        return self

    def __next__(self):
        out = self.batch(self.k)
        self.k += 1
        return out

    def get_state(self):
        return {"batch": self.k}

    def set_state(self, state):
        self.k = int(state["batch"])


class LossTask(Task):
    """A task made of functions.

    `init`: `init(rng) -> params`, or a Flax module initialised with `init_inputs` (its
    `"params"` collection). Params boxed with logical axis names (`nn.with_logical_
    partitioning`, what `model.init` returns for our layers) are sharded by the rules; plain
    arrays are replicated.
    `loss_fn(params, batch, rng, deterministic) -> loss` or `(loss, metrics)`: the mean over
    the batch's rows (metrics likewise); `rng` is the step's dropout key.
    `data`: a dict of arrays with one row per example (shuffled each epoch by `seed`), or
    `data(batch_size, process_index, process_count)` returning an iterator of this
    process's rows of each batch with `get_state()` / `set_state()`.
    `eval_data`: a dict of arrays (all rows, in order, in batches of the training size), or
    `eval_data(batch_size, process_index, process_count)` returning batches; None: no eval.
    `tokens_per_example` and `flops_per_token` feed the throughput and MFU figures.
    """

    def __init__(
        self,
        init: Callable | nn.Module,
        loss_fn: Callable,
        data,
        *,
        eval_data=None,
        init_inputs: Mapping[str, Any] | None = None,
        seed: int = 0,
        tokens_per_example: int = 1,
        flops_per_token: float = 0.0,
    ):
        if isinstance(init, nn.Module):
            if init_inputs is None:
                raise ValueError(
                    "LossTask(module, ...) needs init_inputs={...}: example arguments of the "
                    "module's __call__ (shapes only matter); or pass an init(rng) function."
                )
            self.model = init
        elif not callable(init):
            raise ValueError("LossTask's init must be a Flax module or an init(rng) function.")
        self._init, self._init_inputs = init, dict(init_inputs or {})
        self._loss, self._data, self._eval = loss_fn, data, eval_data
        self.seed, self._tokens, self._flops = seed, tokens_per_example, flops_per_token

    def init_params(self, rng):
        if isinstance(self._init, nn.Module):
            p, d = jax.random.split(rng)
            return self._init.init({"params": p, "dropout": d}, **self._init_inputs)["params"]
        return self._init(rng)

    def normalizers(self, batch):
        return {"rows": jnp.asarray(jax.tree.leaves(batch)[0].shape[0], jnp.float32)}

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        """The user's mean over this (micro-)batch, weighted by its share of the whole batch:
        the step sums micro-batches, so accumulation equals one step on the full batch."""
        out = self._loss(params, batch, rng, deterministic)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        share = jax.tree.leaves(batch)[0].shape[0] / norms["rows"]
        return loss * share, {k: v * share for k, v in metrics.items()}

    def train_iterator(self, batch_size, process_index, process_count):
        if callable(self._data):
            return self._data(batch_size, process_index, process_count)
        return ArrayData(self._data, batch_size, self.seed, process_index, process_count)

    def eval_batches(self, batch_size, process_index, process_count):
        if self._eval is None:
            return None
        if callable(self._eval):
            return self._eval(batch_size, process_index, process_count)
        arrays = {k: np.asarray(v) for k, v in self._eval.items()}
        n = len(next(iter(arrays.values())))
        out = []
        for start in range(0, n, batch_size):  # in order; the last batch may be short
            rows = np.arange(start, min(start + batch_size, n))
            per = len(rows) // process_count
            rows = rows[process_index * per : (process_index + 1) * per]
            out.append({k: v[rows] for k, v in arrays.items()})
        return out

    def tokens_per_example(self):
        return self._tokens

    def flops_per_token(self, params):
        return self._flops
