"""`train.py --config.aot_only=true`: the train step compiled for a mesh of 8 fake CPU devices
without running, XLA's per-device memory analysis printed; FSDP divides the parameter and
optimizer bytes by the mesh, data parallelism does not; XLA's argument bytes equal our count."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _aot(tmp_path, name, config, *overrides):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=ROOT,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
    )
    workdir = tmp_path / name
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--config", config]
        + ["--workdir", str(workdir), "--config.aot_only=true", "--config.aot_hbm_gib=16"]
        + ["--config.data.source=synthetic", "--config.data.objective=none"]
        + list(overrides),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    assert "AOT memory, per device" in proc.stdout and "fits in 16 GiB" in proc.stdout
    assert not (workdir / "checkpoints").exists() or not any((workdir / "checkpoints").iterdir())
    return json.loads((workdir / "memory.json").read_text())


def _check_xla_matches_our_count(r):
    ours = r["params_bytes_per_device"] + r["opt_state_bytes_per_device"]
    ours += r["batch_bytes_per_device"]
    # The step's arguments: the state shard and the batch shard, plus a few scalars.
    assert ours <= r["xla_argument_bytes"] <= ours * 1.01 + 4096
    assert r["xla_alias_bytes"] >= r["params_bytes_per_device"] + r["opt_state_bytes_per_device"]


@pytest.mark.slow
def test_fsdp_divides_state_bytes_data_parallel_does_not(tmp_path):
    cfg = os.path.join(ROOT, "configs", "bert_tiny_mlm.py")
    dp = _aot(tmp_path, "dp", cfg, "--config.mesh.data=8", "--config.mesh.fsdp=1")
    fsdp = _aot(tmp_path, "fsdp", cfg, "--config.mesh.data=1", "--config.mesh.fsdp=8")
    total = dp["params_bytes_total"]
    assert total == 4 * dp["num_params"]  # float32 master weights
    assert dp["params_bytes_per_device"] == total  # replicated
    assert dp["opt_state_bytes_per_device"] >= 2 * total  # AdamW: two moments
    # FSDP: each device keeps ~1/8 (vectors over unsharded axes stay whole).
    assert total / 8 <= fsdp["params_bytes_per_device"] <= 1.1 * total / 8
    ratio = dp["opt_state_bytes_per_device"] / fsdp["opt_state_bytes_per_device"]
    assert 7 <= ratio <= 8.01
    for r in (dp, fsdp):
        _check_xla_matches_our_count(r)


@pytest.mark.slow
def test_bert_base_fsdp_on_8_fake_devices(tmp_path):
    r = _aot(
        tmp_path,
        "base",
        os.path.join(ROOT, "configs", "bert_base_pretrain.py"),
        "--config.model.head=mlm",
        "--config.model.scan_layers=true",
        "--config.batch_size=16",
        "--config.mesh.data=1",
        "--config.mesh.fsdp=8",
    )
    assert r["num_params"] > 100_000_000 and r["devices"] == 8
    assert r["params_bytes_per_device"] <= 1.1 * r["params_bytes_total"] / 8
    _check_xla_matches_our_count(r)
