"""Two processes on 127.0.0.1: SIGTERM to one of them stops both after the same step and
both save, with one cross-host collective per `preemption_check_every_steps` steps instead
of one per step (counted by the loop: summary["preemption_syncs"])."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EVERY = 5

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _logged_step(workdir):
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return max((json.loads(ln).get("step", 0) for ln in f if '"loss"' in ln), default=0)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    port, run = _free_port(), tmp_path / "run"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JF_STEP_DELAY="0.3",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    extra = [
        "--config.num_train_steps=200",
        "--config.checkpoint.every_steps=1000",
        f"--config.preemption_check_every_steps={EVERY}",
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, os.path.join(HERE, "multidevice_multihost.py"), str(i), str(port)]
            + [str(run), str(tmp_path / f"out{i}.json")]
            + extra,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    t0 = time.time()
    while _logged_step(run) < 3:
        assert all(p.poll() is None for p in procs), [p.stdout.read() for p in procs]
        assert time.time() - t0 < 400, "timed out waiting for training to start"
        time.sleep(0.1)
    procs[1].send_signal(signal.SIGTERM)  # only the second process is told
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
    s = [json.load(open(tmp_path / f"out{i}.json"))["summary"] for i in range(2)]
    assert s[0]["preempted"] and s[1]["preempted"]
    step = s[0]["step"]
    assert s[1]["step"] == step and step % EVERY == 0 and step < 200
    # One all-gather per EVERY steps, not one per step.
    assert s[0]["preemption_syncs"] == s[1]["preemption_syncs"] == step // EVERY
    assert (run / "checkpoints" / str(step)).is_dir()  # saved, with both processes' shards
