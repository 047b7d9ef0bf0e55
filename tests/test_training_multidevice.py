"""On 8 fake CPU devices (a subprocess, so this suite keeps one device): 3 steps under
DP 8x1x1, FSDP 1x8x1, TP 1x1x8 and 2x1x4, and 2x2x2 equal one device within 1e-5 relative
(float32), parameters are sharded as the rules say, and a checkpoint saved on the 2x2x2 mesh
restores onto this process's single device."""

import json
import os
import sys

import jax
import numpy as np
import pytest

from suite_env import HERE, run_python

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    d = tmp_path_factory.mktemp("multidevice")
    script = os.path.join(HERE, "multidevice_parity.py")
    run_python([script, str(d / "report.json"), str(d / "ckpt")], devices=8)
    with open(d / "report.json") as f:
        return json.load(f), d / "ckpt"


@pytest.mark.parametrize("name", ["dp", "fsdp", "tp", "mix"])
def test_same_losses_and_params_as_one_device(report, name):
    r, _ = report
    run = r["runs"][name]
    np.testing.assert_allclose(run["losses"], r["reference"], rtol=1e-5)
    # Per parameter, |a - b| / |b| over the array. The attention *key* biases are exempt:
    # their gradient is exactly zero in exact arithmetic (softmax ignores a per-query
    # constant), so what they receive is rounding noise, which Adam's 1/sqrt(v) scales up to
    # full-size steps of arbitrary sign on every mesh alike.
    diffs = {k: v for k, v in run["param_diffs"].items() if "['key']['bias']" not in k}
    assert len(diffs) >= len(run["param_diffs"]) - 2
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < 1e-5, (worst, diffs[worst])
    assert r["reference"][2] < r["reference"][0]  # it does train


def test_params_are_sharded_per_the_rules(report):
    r, _ = report
    runs = r["runs"]
    # DP: everything replicated.
    assert all(all(a is None for a in s) for s in runs["dp"]["specs"].values())
    assert runs["dp"]["wi_shard_shape"] == [64, 128]
    # FSDP: the embed dimension over fsdp (params and Adam moments); LayerNorm over fsdp too.
    f = runs["fsdp"]["specs"]
    assert f["word"] == [None, "fsdp"] and f["query"][0] == "fsdp" and f["wi"] == ["fsdp", None]
    assert f["mu_wi"] == ["fsdp", None] and f["norm"] == ["fsdp"]
    assert runs["fsdp"]["wi_shard_shape"] == [8, 128]
    # TP: heads, mlp and vocab over tensor (Megatron split), embed unsharded.
    t = runs["tp"]["specs"]
    assert t["query"] == [None, "tensor", None] and t["out"] == ["tensor", None, None]
    assert t["wi"] == [None, "tensor"] and t["word"] == ["tensor", None]
    assert runs["tp"]["wi_shard_shape"] == [64, 16]
    # Mix 2x2x2: both at once.
    m = runs["mix"]["specs"]
    assert m["wi"] == ["fsdp", "tensor"] and m["query"] == ["fsdp", "tensor", None]
    assert runs["mix"]["wi_shard_shape"] == [32, 64]


def test_checkpoint_from_8_devices_restores_on_1(report):
    sys.path.insert(0, HERE)
    from multidevice_parity import config
    from jaxformer.training import checkpoint, optim, sharding as sh, state as state_lib
    from jaxformer.tasks import get_task

    _, ckpt_dir = report
    cfg = config()
    task = get_task(cfg, "/tmp/unused")
    tx, _ = optim.make_optimizer(cfg.optimizer, cfg.num_train_steps)
    mesh = sh.make_mesh({"data": -1})
    abstract, specs = state_lib.state_specs(task, tx, mesh)
    ck = checkpoint.Checkpointer(str(ckpt_dir), every_steps=1, keep=1)
    state, data_state, step = ck.restore(abstract, sh.named(mesh, specs))
    ck.close()
    assert step == 3 and data_state == {"pos": 3} and len(jax.devices()) == 1
    saved = np.load(os.path.join(ckpt_dir, "params.npz"))
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
    assert len(flat) == len(saved.files)
    for path, v in flat:
        np.testing.assert_array_equal(v, saved[jax.tree_util.keystr(path)])
