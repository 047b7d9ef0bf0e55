"""Checkpoints through orbax's CheckpointManager.

A checkpoint holds the whole TrainState (params, optimizer state, step, PRNG key, the
non-finite counters) and, as JSON, the data iterator's position plus a fingerprint of the
parameters. Saves are asynchronous and atomic (orbax writes into a temporary directory and
renames it when complete, so a crash mid-save leaves the previous checkpoint intact). Kept:
the latest `keep` and the best one by an eval metric. Restore places arrays with the shardings
of the *current* mesh, so a checkpoint saved on 8 devices restores on 1. A checkpoint that
fails to load or whose fingerprint does not match is reported, moved aside
(`corrupt-STEP`), and the previous one is used.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Optional
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
        self.directory = os.path.abspath(directory)
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
        self, state, data_state: Optional[dict], metrics: Optional[dict] = None, wait: bool = False
    ) -> bool:
        """Starts saving `state` at its step (no-op if that step is already saved)."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return False
        meta = {"data": data_state, "fingerprint": fingerprint(state.params), "step": step}
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

    def restore(self, abstract_state, shardings) -> Optional[tuple[Any, Optional[dict], int]]:
        """The latest good checkpoint as (state, data_state, step), or None if there is none.
        Corrupt ones are reported and skipped (moved aside to `corrupt-STEP`)."""
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_state,
            shardings,
        )
        for step in reversed(self.steps()):
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
                return state, meta.get("data"), step
            except Exception as e:
                self.report(
                    f"checkpoint at step {step} in {self.directory} is corrupt or "
                    f"unreadable ({type(e).__name__}: {str(e)[:300]}); moving it "
                    "aside and falling back to the previous one."
                )
                self._quarantine(step)
        return None

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
