"""Checkpoints through orbax's CheckpointManager.

A checkpoint holds the whole TrainState (params, optimizer state, step, PRNG key, the
non-finite counters) and, as JSON, every process's data iterator position
(`data_per_process`, gathered from all processes; each restores its own) plus a fingerprint
of the parameters. Saves are asynchronous and atomic (orbax writes into a temporary directory
and renames it when complete, so a crash mid-save leaves the previous checkpoint intact).
Kept: the latest `keep` and the best one by an eval metric. Restore places arrays with the
shardings of the *current* mesh, so a checkpoint saved on 8 devices restores on 1. A
checkpoint that fails to load or whose fingerprint does not match is reported in one line,
moved aside (`corrupt-STEP`), and the previous one is used.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import traceback
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

log = logging.getLogger("jaxformer.training")


class CorruptCheckpointError(RuntimeError):
    """A checkpoint's contents do not match what was saved."""


@jax.jit
def _leaf_sums(params):
    return jax.tree.map(lambda x: jnp.sum(jnp.abs(x.astype(jnp.float32))), params)


def fingerprint(params) -> list[float]:
    """One number per parameter (sum of |x|): cheap, and any corruption of the bytes shows."""
    return [float(x) for x in jax.tree.leaves(jax.device_get(_leaf_sums(params)))]


class Checkpointer:
    """Save / restore a TrainState and the data position under `directory`."""

    def __init__(
        self,
        directory: str,
        *,
        every_steps: int,
        keep: int = 3,
        best_metric: str = "",
        best_mode: str = "min",
        async_save: bool = True,
        report: Callable[[str], None] = print,
    ):
        from jaxformer.training.checks import absolute

        self.directory = absolute(directory)  # orbax needs absolute paths
        self.every_steps, self.keep = every_steps, keep
        self.best_metric, self.best_mode = best_metric, best_mode
        self.async_save, self.report = async_save, report
        self._open()

    def _open(self):
        policies = [pp.LatestN(n=self.keep)]
        if self.best_metric:
            sign = -1.0 if self.best_mode == "min" else 1.0
            name = self.best_metric
            policies.append(
                pp.BestN(
                    get_metric_fn=lambda m: sign * float(m[name]),
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=pp.AnyPreservationPolicy(policies),
            create=True,
            enable_async_checkpointing=self.async_save,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    # -- save ----------------------------------------------------------------------------
    def should_save(self, step: int) -> bool:
        return self.every_steps > 0 and step % self.every_steps == 0

    def save(
        self, state, data_state: dict | None, metrics: dict | None = None, wait: bool = False
    ) -> bool:
        """Starts saving `state` at its step (no-op if that step is already saved)."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return False
        per_process = gather_json(data_state)  # every process calls save: a collective
        meta = {
            "data": per_process[0],  # what checkpoints before per-process positions held
            "data_per_process": per_process,
            "fingerprint": fingerprint(state.params),
            "step": step,
        }
        best = None
        if metrics and self.best_metric in metrics:
            best = {self.best_metric: float(metrics[self.best_metric])}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            metrics=best,
            force=True,
        )
        if wait:
            self.wait()
        return True

    def wait(self):
        self.manager.wait_until_finished()

    # -- restore -------------------------------------------------------------------------
    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, abstract_state, shardings) -> tuple[Any, dict | None, int] | None:
        """The latest good checkpoint as (state, data_state, step), or None if there is none.
        Corrupt ones are reported and skipped (moved aside to `corrupt-STEP`)."""
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_state,
            shardings,
        )
        steps = self.steps()
        if steps:
            _quiet_closed_loop_callbacks()
        for i, step in enumerate(reversed(steps)):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                    ),
                )
                state, meta = restored["state"], restored["meta"]
                got = fingerprint(state.params)
                if not np.allclose(got, meta["fingerprint"], rtol=1e-4, atol=1e-6):
                    raise CorruptCheckpointError("parameter fingerprint mismatch")
                return state, self._data_state(meta, step), step
            except Exception as e:
                why = " ".join(str(e).split())
                why = why if len(why) <= 240 else why[:240] + "..."
                self.report(
                    f"checkpoint at step {step} ({os.path.join(self.directory, str(step))}) is "
                    f"corrupt or unreadable ({type(e).__name__}: {why}); moved aside to "
                    f"corrupt-{step}, "
                    + (
                        "falling back to the previous one."
                        if i + 1 < len(steps)
                        else "and there is no earlier one: starting from scratch."
                    )
                )
                self._quarantine(step)
        return None

    def _data_state(self, meta: dict, step: int) -> dict | None:
        """This process's data position in a checkpoint's metadata."""
        per_process = meta.get("data_per_process")
        if per_process is None:  # saved before positions were per process: process 0's
            return meta.get("data")
        pi, pc = jax.process_index(), jax.process_count()
        if len(per_process) != pc:
            if pi == 0:
                self.report(
                    f"warning: the checkpoint at step {step} was saved by {len(per_process)} "
                    f"process(es) and this run has {pc}: every process resumes from process "
                    "0's data position, so the data order is not exactly the saved run's."
                )
            return per_process[0]
        return per_process[pi]

    def _quarantine(self, step: int):
        """Moves a bad checkpoint out of the manager's sight so its step can be saved again."""
        self.wait()
        if jax.process_index() == 0:
            src = os.path.join(self.directory, str(step))
            dst = os.path.join(self.directory, f"corrupt-{step}")
            if os.path.exists(dst):
                shutil.rmtree(dst)
            if os.path.exists(src):
                os.rename(src, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"quarantine-{step}")
        self.manager.close()
        self._open()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


_quiet_hook_installed = False


def _quiet_closed_loop_callbacks():
    """A failed restore ends orbax's asyncio loop while tensorstore still has reads of the
    other arrays in flight; each read that completes later calls `loop.call_soon_threadsafe`
    on the closed loop, and Python prints that `RuntimeError: Event loop is closed` as an
    unraisable exception: one traceback per array, ~140 for a small model. Nobody waits for
    those reads, so exactly these are dropped; every other unraisable exception is passed on
    to the previous hook. Installed once per process."""
    global _quiet_hook_installed
    if _quiet_hook_installed:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        e, tb = unraisable.exc_value, unraisable.exc_traceback
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            frames = [f.f_code.co_name for f, _ in traceback.walk_tb(tb)]
            if "call_soon_threadsafe" in frames:
                return
        previous(unraisable)

    sys.unraisablehook = hook
    # The sibling reads that failed on the same damaged index end as asyncio tasks whose
    # exception nobody retrieves; asyncio logs each one with its traceback when the task is
    # collected. Only orbax's array reads are dropped, every other asyncio record is kept.
    logging.getLogger("asyncio").addFilter(_drop_unretrieved_array_reads)
    _quiet_hook_installed = True


def _drop_unretrieved_array_reads(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (
        message.startswith("Task exception was never retrieved") and "async_deserialize" in message
    )


def gather_json(obj) -> list:
    """`obj` (JSON-able) of every process, in process order; a list of one on one process."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.int32(raw.size))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: raw.size] = raw
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(r[: int(n)]).decode()) for r, n in zip(rows, np.ravel(sizes))]


def latest_step_dir(path: str) -> str:
    """`path` if it is one saved step, else the newest numbered step under `path` or under
    `path/checkpoints` (a training workdir). Raises FileNotFoundError when there is none."""
    for root in (path, os.path.join(path, "checkpoints")):
        if any(os.path.isdir(os.path.join(root, item)) for item in ("state", "params")):
            return root
        steps = [d for d in os.listdir(root) if d.isdigit()] if os.path.isdir(root) else []
        if steps:
            return os.path.join(root, max(steps, key=int))
    raise FileNotFoundError(f"no checkpoint (numbered step directory) under {path!r}.")


def load_params(path: str):
    """The params (host numpy arrays) of the newest checkpoint under `path`, without knowing
    the run's optimizer: a Checkpointer step (its `state` item) or a params-only export
    (`params` item)."""
    from jaxformer.training.checks import user_path

    step_dir = latest_step_dir(
        user_path(path, f"checkpoint {path!r}")
    )  # orbax needs absolute paths
    ckptr = ocp.StandardCheckpointer()
    for item in ("params", "state"):
        d = os.path.join(step_dir, item)
        if os.path.isdir(d):
            tree = ckptr.restore(d)
            return tree["params"] if item == "state" else tree
    raise FileNotFoundError(f"{step_dir!r} has neither a 'state' nor a 'params' item.")
