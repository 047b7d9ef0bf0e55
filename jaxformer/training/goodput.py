"""Where a run's time goes (goodput), and the profiler hook.

`Goodput` adds up host wall time per category: `compile`, `data_wait` (the loop blocked on
the input iterator), `checkpoint`, `eval`, `profile` (starting and writing a trace). Step time
is the training loop's wall time less what was timed inside it, so the loop needs no device
sync to measure it. `summary(total_s)` gives goodput = step time / total wall time with the
rest broken out; `input_bound()` says when the loop waited on data for more than a fifth of
its time.

`Profiler` writes a `jax.profiler` trace of steps [start_step, start_step + num_steps) to
workdir/profile (config keys `profile.start_step`, `profile.num_steps`; num_steps 0 = off).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict

import jax

__all__ = ["Goodput", "Profiler", "INPUT_BOUND_FRACTION"]

INPUT_BOUND_FRACTION = 0.2  # data wait above this share of the loop's time: input-bound


class Goodput:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._loop_start = None
        self._loop_s = 0.0
        self._inside = defaultdict(float)  # categories timed inside the training loop

    def add(self, category: str, seconds: float) -> None:
        self.seconds[category] += seconds
        if self._loop_start is not None:
            self._inside[category] += seconds

    @contextlib.contextmanager
    def timed(self, category: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(category, time.perf_counter() - t0)

    @contextlib.contextmanager
    def loop(self):
        """Brackets the training loop: its time less what was timed inside is step time."""
        self._loop_start = time.perf_counter()
        try:
            yield
        finally:
            self._loop_s += time.perf_counter() - self._loop_start
            self._loop_start = None

    @property
    def step_s(self) -> float:
        return max(0.0, self._loop_s - sum(self._inside.values()))

    def input_bound(self) -> bool:
        return self._loop_s > 0 and self.seconds["data_wait"] > INPUT_BOUND_FRACTION * self._loop_s

    def summary(self, total_s: float) -> dict:
        """goodput (productive step time / wall time) and seconds per category."""
        known = ("compile", "data_wait", "checkpoint", "eval", "profile")
        out = {f"{k}_s": round(self.seconds.get(k, 0.0), 4) for k in known}
        out["step_s"] = round(self.step_s, 4)
        out["other_s"] = round(max(0.0, total_s - self.step_s - sum(self.seconds.values())), 4)
        out["total_s"] = round(total_s, 4)
        out["goodput"] = round(self.step_s / total_s, 4) if total_s > 0 else 0.0
        out["input_bound"] = self.input_bound()
        return out


class Profiler:
    """Starts a trace before step `start_step` runs and stops it after `num_steps` steps
    (`config.profile`; a key it lacks takes base_config's default: no trace)."""

    def __init__(self, config, workdir: str):
        from jaxformer.training.defaults import base_config

        profile = base_config({}).profile.to_dict()
        profile.update(dict(config or {}))
        self.start = int(profile["start_step"])
        self.num = int(profile["num_steps"])
        self.directory = os.path.join(workdir, "profile")
        self.active = False

    def before_step(self, step: int, wait_for=None) -> None:
        """`step`: the number of steps done so far (the step about to run is step + 1);
        `wait_for`: arrays the traced steps produce (the trace stops once they are ready)."""
        if self.num > 0 and not self.active and step == self.start:
            jax.profiler.start_trace(self.directory)
            self.active = True
        elif self.active and step >= self.start + self.num:
            self.stop(wait_for)

    def stop(self, wait_for=None) -> None:
        if self.active:
            if wait_for is not None:
                jax.block_until_ready(wait_for)  # the traced steps' device work included
            jax.profiler.stop_trace()
            self.active = False
