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
