"""Profiling and goodput on a tiny run: a jax.profiler trace in workdir/profile, and the
goodput line in summary.json where a deliberately slow input iterator shows up as data wait."""

import glob
import json
import os
import time

import pytest

from jaxformer.training import goodput as goodput_lib
from jaxformer.training import loop
from jaxformer.tasks import get_task

from test_training_units import tiny_config

DELAY = 1.0  # seconds each batch takes to arrive


class _SlowIterator:
    def __init__(self, it):
        self._it = it

    def __next__(self):
        time.sleep(DELAY)
        return next(self._it)

    def __iter__(self):
        return self

    def __getattr__(self, name):  # get_state / set_state / close
        return getattr(self._it, name)


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("goodput"))
    config = tiny_config(
        num_train_steps=8,
        **{"checkpoint.every_steps": 4, "profile.start_step": 2, "profile.num_steps": 2},
    )

    def slow_task(config, workdir):
        task = get_task(config, workdir)
        make = task.train_iterator
        task.train_iterator = lambda *a, **k: _SlowIterator(make(*a, **k))
        return task

    summary = loop.train(config, workdir, slow_task, log=lambda _: None)
    return workdir, summary


def test_profile_trace_written(slow_run):
    workdir, _ = slow_run
    traces = glob.glob(os.path.join(workdir, "profile", "**", "*.xplane.pb"), recursive=True)
    assert traces and all(os.path.getsize(t) > 0 for t in traces)


def test_goodput_line_counts_data_wait(slow_run):
    workdir, summary = slow_run
    g = json.load(open(os.path.join(workdir, "summary.json")))["goodput"]
    assert g == summary["goodput"]
    # 7 batches are fetched inside the loop (the first one before it), DELAY s each.
    assert g["data_wait_s"] >= 7 * DELAY
    assert g["input_bound"] is True
    assert g["compile_s"] > 0 and g["checkpoint_s"] > 0 and g["step_s"] > 0
    parts = sum(g[k] for k in ("step_s", "compile_s", "data_wait_s", "checkpoint_s", "eval_s"))
    parts += g["profile_s"]
    assert parts + g["other_s"] == pytest.approx(g["total_s"], abs=1e-3)
    assert g["goodput"] == pytest.approx(g["step_s"] / g["total_s"], abs=1e-3)
    rows = [json.loads(ln) for ln in open(os.path.join(workdir, "metrics.jsonl"))]
    assert any("goodput_data_wait_s" in r for r in rows)


def test_goodput_arithmetic():
    gp = goodput_lib.Goodput()
    gp.add("compile", 2.0)  # outside the loop: not subtracted from step time
    with gp.loop():
        gp.add("data_wait", 0.5)
        time.sleep(0.6)
    assert 0.0 < gp.step_s <= 0.1 + 0.05
    s = gp.summary(total_s=10.0)
    assert s["compile_s"] == 2.0 and s["data_wait_s"] == 0.5 and s["input_bound"]
