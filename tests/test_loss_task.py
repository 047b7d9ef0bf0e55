"""A researcher's own module trained through `training.LossTask`: no subclass, the loop's
checkpoints and exact resume, eval, and the rules' sharding of boxed params."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import training


class TinyRegressor(nn.Module):
    """Not one of ours: a 2-layer MLP with dropout, its kernels named for the rules."""

    @nn.compact
    def __call__(self, x, deterministic=True):
        init = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
        h = nn.gelu(nn.Dense(16, kernel_init=init)(x))
        h = nn.Dropout(0.1)(h, deterministic=deterministic)
        return nn.Dense(1)(h)[:, 0]


MODEL = TinyRegressor()


def loss_fn(params, batch, rng, deterministic):
    pred = MODEL.apply(
        {"params": params}, batch["x"], deterministic=deterministic, rngs={"dropout": rng}
    )
    err = pred - batch["y"]
    return jnp.mean(err**2), {"mae": jnp.mean(jnp.abs(err))}


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    return {"x": x, "y": np.sin(x[:, 0]) + x[:, 1] * x[:, 2]}


def _task():
    return training.LossTask(
        MODEL,
        loss_fn,
        _data(40, 0),  # 40 rows, batch 8: the run crosses an epoch (a reshuffle)
        eval_data=_data(12, 1),  # one full eval batch and a short one
        init_inputs={"x": jnp.zeros((1, 8))},
    )


def _config(**over):
    base = {
        "num_train_steps": 8,
        "batch_size": 8,
        "log.every_steps": 1,
        "log.eval_every_steps": 4,
        "log.progress": False,
        "log.tensorboard": False,
        "log.plot": False,
        "checkpoint.every_steps": 0,
        "checkpoint.async_save": False,
        "optimizer.lr": 1e-2,
        "optimizer.warmup_steps": 2,
    }
    return training.default_config(**{**base, **over})


def _losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["loss"] for r in rows if "loss" in r and "eval_loss" not in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("loss_task")
    whole, parted = str(root / "whole"), str(root / "parted")
    s_whole = training.train(_config(), whole, _task(), log=lambda _: None)
    s_stop = training.train(_config(stop_after_steps=3), parted, _task(), log=lambda _: None)
    s_resumed = training.train(_config(), parted, _task(), log=lambda _: None)
    return whole, parted, s_whole, s_stop, s_resumed


def test_stopped_and_resumed_run_equals_the_uninterrupted_one_step_for_step(runs):
    whole, parted, s_whole, s_stop, s_resumed = runs
    assert s_stop["step"] == 3 and s_resumed["step"] == 8
    a, b = _losses(whole), _losses(parted)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    np.testing.assert_array_equal([a[k] for k in a], [b[k] for k in a])
    assert a[8] < a[1]  # it learns
    # The eval of the final params is the same, and it is the loss on the held-out rows.
    assert s_resumed["eval_loss"] == s_whole["eval_loss"]


def test_eval_is_the_mean_over_every_held_out_row(runs):
    whole, _, s_whole, _, _ = runs
    from jaxformer.training.checkpoint import load_params

    params = load_params(whole)
    ev = _data(12, 1)
    pred = MODEL.apply({"params": params}, ev["x"], deterministic=True)
    want = float(np.mean((np.asarray(pred, np.float64) - ev["y"]) ** 2))
    assert s_whole["eval_loss"] == pytest.approx(want, rel=1e-5)


def test_boxed_params_are_sharded_by_the_rules_and_plain_ones_replicated():
    from jaxformer.training import sharding as sh, state as state_lib

    mesh = sh.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    tx, _ = training.make_optimizer(_config().optimizer, 8)
    _, specs = state_lib.state_specs(_task(), tx, mesh)
    assert specs.params["Dense_0"]["kernel"] == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert specs.params["Dense_1"]["kernel"] == jax.sharding.PartitionSpec()


def test_bad_arguments_are_one_line():
    with pytest.raises(ValueError, match="needs init_inputs"):
        training.LossTask(MODEL, loss_fn, _data(8, 0))
    with pytest.raises(ValueError, match="same, non-zero number of rows"):
        training.ArrayData({"x": np.zeros(3), "y": np.zeros(4)}, 2)
    with pytest.raises(KeyError, match="unknown key 'optimizer.lrr'"):
        training.default_config(**{"optimizer.lrr": 1.0})
