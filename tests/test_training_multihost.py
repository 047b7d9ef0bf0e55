"""Two processes on 127.0.0.1 joined by jax.distributed (CPU gloo collectives, 2 fake devices
each, mesh data=2 x fsdp=2 across them) train the tiny model: they agree on the loss, and
after SIGKILL, or SIGTERM to one of them, a restart of both continues exactly.

Every run here has one configuration, so one uninterrupted run (module-scoped) is the
reference for both interrupted ones. Each process reads its own share at its own pace
(UnevenSharesTask: process 1 skips a batch after each one), so a resume that restored process
0's data position on both would train on other rows and change the loss."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS, SAVE_EVERY, CHECK_EVERY = 16, 4, 4
EXTRA = [
    "--config.task=multidevice_multihost:UnevenSharesTask",
    f"--config.num_train_steps={STEPS}",
    f"--config.checkpoint.every_steps={SAVE_EVERY}",
    f"--config.preemption_check_every_steps={CHECK_EVERY}",
    "--config.log.tensorboard=False",  # its import costs seconds and nothing here reads it
]

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir, delay=0.0):
    """Both processes of one run in `workdir` (process i's result in workdir/../NAMEi.json)."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JF_STEP_DELAY=str(delay),
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        # The tests' compilation cache (conftest.py), so a restart loads instead of compiling.
        JAX_COMPILATION_CACHE_DIR=os.environ.get(
            "JAX_COMPILATION_CACHE_DIR",
            os.path.join(os.path.expanduser("~"), ".cache", "jaxformer-jax"),
        ),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    port = _free_port()
    return [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "multidevice_multihost.py"), str(i), str(port)]
            + [str(workdir), f"{workdir}{i}.json", *EXTRA],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def _finish(procs) -> list[dict]:
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
    return [json.load(open(p.args[5])) for p in procs]


def _losses(workdir) -> dict[int, float]:
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    train = [r["step"] for r in rows if "loss" in r]
    assert train == sorted(set(train)), train  # one row per step, none replayed twice
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _steps_logged(workdir) -> list[int]:
    try:
        return [json.loads(ln)["step"] for ln in open(workdir / "metrics.jsonl") if '"loss"' in ln]
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def _wait_until(procs, done, what):
    t0 = time.time()
    while not done():
        assert all(p.poll() is None for p in procs), [p.stdout.read() for p in procs]
        assert time.time() - t0 < 500, f"timed out waiting for {what}"
        time.sleep(0.05)


def _assert_exact(reference, workdir):
    ref, got = _losses(reference), _losses(workdir)
    steps = list(range(1, STEPS + 1))
    assert sorted(ref) == sorted(got) == steps
    np.testing.assert_allclose([got[s] for s in steps], [ref[s] for s in steps], rtol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted two-process run: (workdir, both processes' results)."""
    workdir = tmp_path_factory.mktemp("multihost") / "full"
    return workdir, _finish(_launch(workdir))


def test_two_processes_agree_on_the_loss(reference):
    workdir, r = reference
    assert r[0]["devices"] == r[1]["devices"] == 4 and r[0]["local"] == 2
    s0, s1 = r[0]["summary"], r[1]["summary"]
    assert s0["step"] == s1["step"] == STEPS and not s0["preempted"]
    np.testing.assert_allclose(s0["first_loss"], s1["first_loss"], rtol=1e-6)
    np.testing.assert_allclose(s0["last_loss"], s1["last_loss"], rtol=1e-6)
    assert len(r[0]["losses"]) == STEPS and np.isfinite(r[0]["losses"]).all()
    # One all-gather per CHECK_EVERY steps, none on the steps between.
    assert s0["preemption_syncs"] == s1["preemption_syncs"] == STEPS // CHECK_EVERY
    # Only process 0 writes metrics; both processes' positions are in the checkpoint.
    meta = json.load(open(workdir / "checkpoints" / str(STEPS) / "meta" / "metadata"))
    positions = meta["data_per_process"]
    assert len(positions) == 2 and positions[0] != positions[1], positions


def test_two_processes_with_different_data_positions_resume_exactly_after_sigkill(
    reference, tmp_path
):
    run = tmp_path / "kill"
    killed = _launch(run, delay=0.5)
    ckpt4 = run / "checkpoints" / str(SAVE_EVERY)
    _wait_until(
        killed,
        lambda: ckpt4.is_dir() and max(_steps_logged(run), default=0) >= SAVE_EVERY + 2,
        "the first checkpoint",
    )
    for p in killed:
        p.kill()
    for p in killed:
        p.wait()
    assert max(_steps_logged(run)) < STEPS
    _finish(_launch(run))
    _assert_exact(reference[0], run)


def test_sigterm_to_one_process_stops_both_saves_and_resumes_exactly(reference, tmp_path):
    """SIGTERM to process 1 only: both stop after the same step (the next multiple of
    CHECK_EVERY, with one all-gather per CHECK_EVERY steps), both write their shards of the
    checkpoint, and a restart of both continues to the same losses as the reference."""
    run = tmp_path / "term"
    procs = _launch(run, delay=0.5)
    _wait_until(procs, lambda: max(_steps_logged(run), default=0) >= 3, "training to start")
    procs[1].send_signal(signal.SIGTERM)  # only the second process is told
    s = [r["summary"] for r in _finish(procs)]
    assert s[0]["preempted"] and s[1]["preempted"]
    step = s[0]["step"]
    assert s[1]["step"] == step and step % CHECK_EVERY == 0 and step < STEPS
    assert s[0]["preemption_syncs"] == s[1]["preemption_syncs"] == step // CHECK_EVERY
    saved = run / "checkpoints" / str(step)
    assert sorted(p.name for p in (saved / "state").glob("ocdbt.process_*")) == [
        "ocdbt.process_0",
        "ocdbt.process_1",
    ]
    resumed = [r["summary"] for r in _finish(_launch(run))]
    assert resumed[0]["step"] == resumed[1]["step"] == STEPS and not resumed[0]["preempted"]
    _assert_exact(reference[0], run)
