"""Training building blocks on one CPU device: schedules, weight-decay mask, losses, config
overrides, mesh sizes and sharding errors, gradient accumulation, the non-finite guard."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformer.objectives import losses
from jaxformer.training import config_lib, optim, sharding as sh
from jaxformer.training import step as step_lib
from jaxformer.tasks import get_task
from training_tiny_config import step_setup, tiny_config

HERE = os.path.dirname(__file__)


# -- schedules --------------------------------------------------------------------------
@pytest.mark.parametrize("step", [0, 1, 5, 10, 11, 50, 99, 100])
def test_schedules_match_formulas(step):
    lr, w, total, end = 2e-3, 10, 100, 1e-4
    lin = optim.make_schedule("warmup_linear", lr, w, total, end)
    cos = optim.make_schedule("warmup_cosine", lr, w, total, end)
    rsq = optim.make_schedule("warmup_rsqrt", lr, w, total)
    const = optim.make_schedule("constant", lr, w, total)
    if step < w:
        want_lin = want_cos = lr * step / w
    else:
        t = (step - w) / (total - w)
        want_lin = lr + (end - lr) * t
        want_cos = end + (lr - end) * (1 + math.cos(math.pi * t)) / 2
    want_rsq = lr * min(step / w, math.sqrt(w / step)) if step else 0.0
    np.testing.assert_allclose(float(lin(step)), want_lin, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(cos(step)), want_cos, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(float(rsq(step)), want_rsq, rtol=1e-5, atol=1e-9)
    assert float(const(step)) == pytest.approx(lr)


def test_unknown_schedule_and_optimizer():
    with pytest.raises(ValueError, match="unknown schedule"):
        optim.make_schedule("linear", 1.0)
    cfg = tiny_config().optimizer
    cfg.name = "sgd"
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.make_optimizer(cfg, 10)


def test_make_optimizer_takes_missing_keys_from_the_base_config():
    """A partial optimizer dict behaves as base_config's optimizer with those keys changed:
    the default global-norm clip (1.0) applies, which a hand-computed AdamW step shows."""
    from jaxformer.training.defaults import base_config

    params = {"w": jnp.zeros((4,))}
    grads = {"w": jnp.array([30.0, 40.0, 0.0, 0.0])}  # global norm 50 -> clipped to 1
    partial, _ = optim.make_optimizer({"lr": 0.5, "schedule": "constant"}, 10)
    full = base_config({}).optimizer
    full.update(lr=0.5, schedule="constant")
    whole, _ = optim.make_optimizer(full, 10)
    u_partial, _ = partial.update(grads, partial.init(params), params)
    u_whole, _ = whole.update(grads, whole.init(params), params)
    np.testing.assert_allclose(u_partial["w"], u_whole["w"], rtol=1e-6)
    # AdamW's first step is -lr * g / (|g| + eps) (bias-corrected) whatever the clip, so
    # the clip shows in the second moment: clipped g = [0.6, 0.8, 0, 0], nu = (1 - b2) g^2.
    _, state = partial.update(grads, partial.init(params), params)
    nu = optax.tree_utils.tree_get(state, "nu")["w"]
    np.testing.assert_allclose(nu, (1 - 0.999) * np.array([0.36, 0.64, 0.0, 0.0]), rtol=1e-5)


@pytest.mark.parametrize("name", ["adamw", "lamb", "adafactor"])
def test_weight_decay_skips_biases_and_layernorm(name):
    task = get_task(tiny_config(), "/tmp/unused")
    params = jax.tree.map(
        lambda x: x + 1.0,  # nonzero everywhere so decay would show
        __import__("flax").linen.unbox(task.init_params(jax.random.PRNGKey(0))),
    )
    cfg = tiny_config().optimizer
    cfg.update(name=name, schedule="constant", lr=0.1, weight_decay=0.5, clip_norm=0.0)
    tx, _ = optim.make_optimizer(cfg, 10)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(zeros, jax.jit(tx.init)(params), params)
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    decayed, kept = 0, 0
    for path, u in flat:
        names = [str(getattr(k, "key", k)) for k in path]
        no_decay = names[-1] in ("bias", "scale") or any("norm" in n for n in names[:-1])
        if no_decay:
            assert float(jnp.abs(u).max()) == 0.0, names
            kept += 1
        else:
            assert float(jnp.abs(u).max()) > 0.0, names
            decayed += 1
    assert decayed and kept
    mask = optim.decay_mask(params)
    assert mask["encoder"]["attention_0"]["norm"]["scale"] is False
    assert mask["encoder"]["attention_0"]["attention"]["query"]["bias"] is False
    assert mask["encoder"]["attention_0"]["attention"]["query"]["kernel"] is True


# -- losses -----------------------------------------------------------------------------
def test_cross_entropy_label_smoothing_and_z_loss():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32)
    targets = rng.integers(0, 7, size=(3, 5))
    weights = (rng.random((3, 5)) > 0.3).astype(np.float32)
    s, z = 0.1, 1e-3
    logp = jax.nn.log_softmax(logits, -1)
    q = np.full((3, 5, 7), s / 6)
    np.put_along_axis(q, targets[..., None], 1 - s, -1)
    ent = -(q * np.log(q)).sum(-1)
    lse = jax.scipy.special.logsumexp(logits, -1)
    ref = -(q * logp).sum(-1) - ent + z * lse**2
    loss, m = losses.weighted_cross_entropy(
        jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights), label_smoothing=s, z_loss=z
    )
    np.testing.assert_allclose(loss, (ref * weights).sum() / weights.sum(), rtol=1e-5)
    acc = ((logits.argmax(-1) == targets) * weights).sum() / weights.sum()
    np.testing.assert_allclose(m["accuracy"], acc, rtol=1e-6)
    plain, _ = losses.weighted_cross_entropy(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(
        plain, -np.take_along_axis(np.asarray(logp), targets[..., None], -1).mean(), rtol=1e-5
    )


# -- config -----------------------------------------------------------------------------
def test_overrides_parse_types_and_reject_unknown_keys():
    c = tiny_config()
    c.lock()
    config_lib.apply_override(c, "optimizer.lr", "3e-4")
    config_lib.apply_override(c, "mesh.data", "2")
    config_lib.apply_override(c, "log.progress", "true")
    config_lib.apply_override(c, "optimizer.weight_decay", "0")  # int text into a float
    assert c.optimizer.lr == 3e-4 and c.mesh.data == 2 and c.log.progress is True
    assert isinstance(c.optimizer.weight_decay, float)
    with pytest.raises(config_lib.ConfigOverrideError, match="optimizer.lr"):
        config_lib.apply_override(c, "optimizer.learning_rate", "1")
    with pytest.raises(config_lib.ConfigOverrideError, match="Nearest valid keys"):
        config_lib.apply_override(c, "optimzer.lr", "1")
    with pytest.raises(config_lib.ConfigOverrideError, match="expected int"):
        config_lib.apply_override(c, "batch_size", "'big'")


def test_parse_args_cli_forms(tmp_path):
    path = os.path.join(HERE, "training_tiny_config.py")
    c, wd, _ = config_lib.parse_args(
        [
            "--config",
            path,
            "--workdir",
            str(tmp_path),
            "--config.batch_size=16",
            "--config.optimizer.name",
            "lamb",
        ]
    )
    assert c.batch_size == 16 and c.optimizer.name == "lamb" and wd == str(tmp_path)
    with pytest.raises(config_lib.ConfigOverrideError, match="unknown argument"):
        config_lib.parse_args(["--config", path, "--bogus=1"])


# -- mesh -------------------------------------------------------------------------------
def test_mesh_shape_rest_and_errors():
    assert sh.mesh_shape({"data": -1, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
    assert sh.mesh_shape({"data": 1, "fsdp": -1}, 8) == (1, 8, 1)
    with pytest.raises(sh.ShardingError, match="at most one"):
        sh.mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(sh.ShardingError, match="needs 6 devices"):
        sh.mesh_shape({"data": 3, "fsdp": 2}, 8)
    with pytest.raises(sh.ShardingError, match="unknown mesh axes"):
        sh.mesh_shape({"model": 2}, 8)


def test_indivisible_dimension_is_a_clear_error():
    """A fake 3-device tensor axis (abstract mesh) does not divide 2 heads / vocab 128."""
    task = get_task(tiny_config(), "/tmp/unused")
    mesh = jax.sharding.AbstractMesh((1, 1, 3), sh.MESH_AXES)
    boxed = jax.eval_shape(task.init_params, jax.random.PRNGKey(0))
    logical = sh.logical_specs(boxed)
    with pytest.raises(sh.ShardingError, match=r"logical 'heads'.*tensor"):
        sh.check_divisible(
            __import__("flax").linen.unbox(boxed), sh.mesh_specs(logical), mesh, logical=logical
        )


def test_batch_not_divisible_over_data_axes():
    mesh = jax.sharding.AbstractMesh((4, 2, 1), sh.MESH_AXES)
    with pytest.raises(sh.ShardingError, match="micro-batches"):
        sh.check_batch(12, mesh, 1)
    with pytest.raises(sh.ShardingError, match="grad_accum_steps=4"):
        sh.check_batch(16, mesh, 4)


# -- the step ---------------------------------------------------------------------------
def test_grad_accumulation_equals_one_big_step():
    """4 micro-batches of 8, summed inside the step == one step on the batch of 32 (dropout
    off: micro-batches draw their own dropout keys)."""
    config = tiny_config(
        batch_size=32, **{"model.hidden_dropout": 0.0, "model.attention_dropout": 0.0}
    )
    task, mesh, tx, sched, state, shardings = step_setup(config)
    batch = next(task.train_iterator(32, 0, 1))
    assert len(np.unique(batch["mlm_weights"].sum(1))) > 1  # uneven counts per micro-batch
    results = []
    for accum in (1, 4):
        fn, bsh = step_lib.compile_train_step(
            step_lib.make_train_step(task, tx, sched, accum), shardings, batch, mesh
        )
        s = jax.tree.map(jnp.copy, state)  # the step donates its input
        results.append(fn(s, sh.to_global(batch, bsh, 32)))
    (s1, m1), (s4, m4) = results
    for k in ("loss", "mlm_accuracy", "grad_norm"):
        np.testing.assert_allclose(m4[k], m1[k], rtol=1e-5, err_msg=k)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s4.params, s1.params
    )


class _NaNTask:
    """Wraps a task; the loss is multiplied by batch["scale"] (NaN for poisoned batches)."""

    def __init__(self, task):
        self.task = task

    def __getattr__(self, name):
        return getattr(self.task, name)

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        batch = dict(batch)
        scale = batch.pop("scale")
        loss, m = self.task.loss_fn(params, batch, rng, norms, deterministic)
        return loss * scale[0], m


def test_nonfinite_step_is_skipped_and_counted():
    config = tiny_config()
    task, mesh, tx, sched, state, shardings = step_setup(config)
    task = _NaNTask(task)
    batch = next(task.train_iterator(8, 0, 1))
    good = dict(batch, scale=np.ones(8, np.float32))
    bad = dict(batch, scale=np.full(8, np.nan, np.float32))
    fn, bsh = step_lib.compile_train_step(
        step_lib.make_train_step(task, tx, sched), shardings, good, mesh
    )
    s, m = fn(state, sh.to_global(good, bsh, 8))
    before = jax.device_get(s.params)
    opt_before = jax.device_get(s.opt_state)
    for i in range(2):
        s, m = fn(s, sh.to_global(bad, bsh, 8))
        assert int(m["nonfinite"]) == 1 and int(m["bad_streak"]) == i + 1
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(s.params), before)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(s.opt_state), opt_before)
    assert int(s.skipped) == 2 and int(s.step) == 3
    s, m = fn(s, sh.to_global(good, bsh, 8))
    assert int(m["bad_streak"]) == 0 and int(s.skipped) == 2
    assert np.isfinite(float(m["loss"]))


def test_too_many_nonfinite_steps_stop_with_a_checkpoint(tmp_path, monkeypatch):
    """The loop stops after max_bad_steps in a row, saving the last good state."""
    from jaxformer.tasks import pretrain as tasks
    from jaxformer.training import loop

    config = tiny_config(max_bad_steps=3, num_train_steps=20)
    config.optimizer.lr = 1e6  # diverges to inf within a few steps
    config.optimizer.clip_norm = 0.0
    config.optimizer.warmup_steps = 0
    config.optimizer.schedule = "constant"
    config.optimizer.name = "lamb"
    orig = tasks.PretrainTask.loss_fn

    def poisoned(self, params, batch, rng, norms, deterministic=False):
        loss, m = orig(self, params, batch, rng, norms, deterministic)
        return jnp.where(jnp.sum(batch["input_ids"]) >= 0, jnp.nan, 1.0) * loss, m

    monkeypatch.setattr(tasks.PretrainTask, "loss_fn", poisoned)
    with pytest.raises(loop.NonFiniteError, match="3 consecutive steps"):
        loop.train(config, str(tmp_path), get_task, log=lambda s: None)
    assert os.path.isdir(tmp_path / "checkpoints")
    assert any(d.isdigit() for d in os.listdir(tmp_path / "checkpoints"))


def test_failed_restore_reads_are_not_logged_but_other_asyncio_errors_are(caplog):
    """After a failed restore, orbax's abandoned array reads (coroutine `async_deserialize`)
    end as tasks whose exception nobody retrieves; asyncio would log each with a traceback."""
    import asyncio
    import gc

    from jaxformer.training import checkpoint

    checkpoint._quiet_closed_loop_callbacks()

    async def async_deserialize():
        raise ValueError("DATA_LOSS: damaged index")

    async def something_else():
        raise ValueError("a real bug")

    async def abandon():
        for coro in (async_deserialize(), something_else()):
            asyncio.ensure_future(coro)
        await asyncio.sleep(0.01)

    with caplog.at_level("ERROR", logger="asyncio"):
        asyncio.run(abandon())
        gc.collect()
    logged = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any("something_else" in m for m in logged), logged
    assert not any("async_deserialize" in m for m in logged), logged
