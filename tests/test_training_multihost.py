"""Two processes on 127.0.0.1 joined by jax.distributed (CPU gloo collectives, 2 fake devices
each, mesh data=2 x fsdp=2 across them) train the tiny model and agree on the loss."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_on_the_loss(tmp_path):
    port = _free_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "multidevice_multihost.py"),
                str(i),
                str(port),
                str(tmp_path / "run"),
                str(tmp_path / f"out{i}.json"),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o
    r = [json.load(open(tmp_path / f"out{i}.json")) for i in range(2)]
    assert r[0]["devices"] == r[1]["devices"] == 4 and r[0]["local"] == 2
    s0, s1 = r[0]["summary"], r[1]["summary"]
    assert s0["step"] == s1["step"] == 4
    np.testing.assert_allclose(s0["first_loss"], s1["first_loss"], rtol=1e-6)
    np.testing.assert_allclose(s0["last_loss"], s1["last_loss"], rtol=1e-6)
    assert len(r[0]["losses"]) == 4 and np.isfinite(r[0]["losses"]).all()
    # Only process 0 writes metrics; both wrote their checkpoint shards into one directory.
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    assert (tmp_path / "run" / "checkpoints" / "4").is_dir()


def _launch(tmp_path, name, port, *extra, delay=0.0):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JF_STEP_DELAY=str(delay),
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    return [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(HERE, "multidevice_multihost.py"),
                str(i),
                str(port),
                str(tmp_path / name),
                str(tmp_path / f"{name}{i}.json"),
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def _finish(procs):
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o


def _losses(workdir):
    rows = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
    train = [r["step"] for r in rows if "loss" in r]
    assert train == sorted(set(train)), train  # one row per step, none replayed twice
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.xfail(
    strict=False,
    reason="unresolved: on the shared 2-core machine this run timed out in gloo's fixed 30 s "
    "rendezvous (GetKeyValue cpu:gloo/0,1,2048,2049/2) at its first steps in 3 of 4 tries",
)
def test_two_processes_with_different_data_positions_resume_exactly_after_sigkill(tmp_path):
    """Each process's data position is saved and restored: process 1 has read twice as far
    into its share as process 0 (UnevenSharesTask), so restoring process 0's position on
    both would change process 1's batches and the loss."""
    import time

    extra = [
        "--config.task=multidevice_multihost:UnevenSharesTask",
        "--config.num_train_steps=12",
        "--config.checkpoint.every_steps=4",
        # Process 0 alone would import TensorBoard between two collectives; on a loaded
        # machine that can outlast gloo's fixed 30 s rendezvous.
        "--config.log.tensorboard=False",
    ]
    # One two-process run at a time: on a loaded machine, gloo's connect can time out.
    _finish(_launch(tmp_path, "full", _free_port(), *extra))
    killed = _launch(tmp_path, "kill", _free_port(), *extra, delay=0.5)
    ckpt4 = tmp_path / "kill" / "checkpoints" / "4"
    t0 = time.time()
    while not (ckpt4.is_dir() and max(_steps_logged(tmp_path / "kill"), default=0) >= 6):
        assert all(p.poll() is None for p in killed), [p.stdout.read() for p in killed]
        assert time.time() - t0 < 500, "timed out"
        time.sleep(0.05)
    for p in killed:
        p.kill()
    for p in killed:
        p.wait()
    assert max(_steps_logged(tmp_path / "kill")) < 12
    meta = json.load(open(tmp_path / "full" / "checkpoints" / "12" / "meta" / "metadata"))
    positions = meta["data_per_process"]
    assert len(positions) == 2 and positions[0] != positions[1], positions

    _finish(_launch(tmp_path, "kill", _free_port(), *extra))
    ref, got = _losses(tmp_path / "full"), _losses(tmp_path / "kill")
    assert sorted(ref) == sorted(got) == list(range(1, 13))
    np.testing.assert_allclose(
        [got[s] for s in range(1, 13)], [ref[s] for s in range(1, 13)], rtol=1e-6
    )


def _steps_logged(workdir):
    try:
        return [json.loads(l)["step"] for l in open(workdir / "metrics.jsonl") if '"loss"' in l]
    except (FileNotFoundError, json.JSONDecodeError):
        return []
