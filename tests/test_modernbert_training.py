"""ModernBERT training: the warmup-stable-decay schedule and StableAdamW against their
formulas, the model factory, and the tiny recipe end to end through train.py."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformer.models import EncoderModel, ModernBertModel, build_encoder
from jaxformer.training.optim import make_optimizer, make_schedule, stable_adamw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_warmup_stable_decay_against_its_formula():
    f = make_schedule("warmup_stable_decay", 2.0, 10, 100, end_lr=0.2, decay_fraction=0.2)
    # warmup 0..10, flat to step 80, then 0.2 + 1.8 * (1 - sqrt((s - 80) / 20))
    want = {0: 0.0, 5: 1.0, 10: 2.0, 50: 2.0, 80: 2.0, 85: 0.2 + 1.8 * 0.5, 100: 0.2, 120: 0.2}
    for step, lr in want.items():
        assert float(f(step)) == pytest.approx(lr, abs=1e-6), step
    assert float(f(95)) == pytest.approx(0.2 + 1.8 * (1 - np.sqrt(0.75)), abs=1e-6)
    with pytest.raises(ValueError, match="decay_fraction=0.0"):
        make_schedule("warmup_stable_decay", 1.0, 1, 10, decay_fraction=0.0)


def _reference_stable_adamw(grads, params, lr, b1, b2, eps, wd, decay):
    """numpy float64: AdamW whose step per tensor is lr / max(1, RMS(g^2 / max(v_hat, eps^2)))."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t, g in enumerate(grads, start=1):
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mh, vh = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            rms = np.sqrt(np.mean(g[k] ** 2 / np.maximum(vh, eps**2)))
            step = lr / max(1.0, rms)
            p[k] = p[k] - step * (mh / (np.sqrt(vh) + eps) + (wd * p[k] if decay[k] else 0.0))
    return p


def test_stable_adamw_against_numpy():
    rng = np.random.default_rng(0)
    params = {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=(3,))}
    params = {k: v.astype(np.float32) for k, v in params.items()}
    grads = [{k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}]
    grads.append({k: g * 50.0 for k, g in grads[0].items()})  # a spike: v_hat lags, clipping acts
    grads.append({k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()})
    decay = {"kernel": True, "bias": False}
    tx = stable_adamw(0.1, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01, mask=lambda p: decay)
    state, p = tx.init(params), {k: jnp.asarray(v) for k, v in params.items()}
    for g in grads:
        u, state = tx.update({k: jnp.asarray(x) for k, x in g.items()}, state, p)
        p = optax.apply_updates(p, u)
    want = _reference_stable_adamw(grads, params, 0.1, 0.9, 0.98, 1e-6, 0.01, decay)
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=1e-5, atol=1e-6)
    # the spike was clipped: plain AdamW moves further
    adamw = optax.adamw(0.1, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.0)
    s, q = adamw.init(params), dict(params)
    for g in grads[:2]:
        u, s = adamw.update(g, s, q)
        q = optax.apply_updates(q, u)
    tx0 = stable_adamw(0.1, b1=0.9, b2=0.98, eps=1e-6)
    s0, r = tx0.init(params), dict(params)
    for g in grads[:2]:
        u, s0 = tx0.update(g, s0, r)
        r = optax.apply_updates(r, u)
    moved = lambda x: np.abs(np.asarray(x["kernel"]) - params["kernel"]).sum()
    assert moved(r) < moved(q)


def test_make_optimizer_builds_stable_adamw():
    cfg = dict(name="stable_adamw", lr=1e-3, schedule="warmup_stable_decay", warmup_steps=2,
               weight_decay=1e-5, b1=0.9, b2=0.98, eps=1e-6, clip_norm=0.0, decay_fraction=0.5)  # fmt: skip
    tx, sched = make_optimizer(cfg, total_steps=10)
    params = {"w": jnp.ones((2, 2))}
    u, _ = tx.update({"w": jnp.ones((2, 2))}, tx.init(params), params)
    assert float(sched(1)) == pytest.approx(5e-4) and np.isfinite(np.asarray(u["w"])).all()


def test_build_encoder_routes_by_family():
    from jaxformer.models import bert_config, modernbert_config

    cfg, model = build_encoder(modernbert_config("tiny").to_dict())
    assert isinstance(model, ModernBertModel) and cfg.family == "modernbert"
    _, model = build_encoder(bert_config("tiny").to_dict())
    assert isinstance(model, EncoderModel)


@pytest.mark.slow
def test_tiny_recipe_trains_through_train_py_and_overfits(tmp_path):
    """train.py with configs/modernbert_tiny_pretrain.py: a few steps with a checkpoint,
    then the same task overfits one fixed batch (loss below half)."""
    from test_recipes_e2e import configure, overfit

    from jaxformer.tasks import get_task

    overrides = {
        "data.source": "synthetic",
        "num_train_steps": 4,
        "checkpoint.every_steps": 4,
        "log.eval_every_steps": 4,
        "log.every_steps": 2,
        "log.progress": False,
        "log.tensorboard": False,
        "log.plot": False,
    }
    cmd = [sys.executable, "train.py", "--config", "configs/modernbert_tiny_pretrain.py"]
    cmd += ["--workdir", str(tmp_path)] + [f"--config.{k}={v}" for k, v in overrides.items()]
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "summary.json") as f:
        s = json.load(f)
    assert s["step"] == 4 and np.isfinite(s["last_loss"]), s
    assert os.path.isdir(tmp_path / "checkpoints" / "4")
    c = configure("modernbert_tiny_pretrain", **{"data.source": "synthetic"})
    first, last = overfit(get_task(c, str(tmp_path / "overfit")))
    assert last < 0.5 * first, (first, last)
    jax.clear_caches()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_throughput_benchmark_runs_modernbert(tmp_path, mode):
    """benchmarks/throughput.py times ModernBERT padded and packed beside transformers'."""
    from test_benchmarks import _load

    out = tmp_path / "out.json"
    _load("throughput").main(
        [
            "--model",
            "modernbert-tiny",
            "--seq",
            "32",
            "--batch",
            "2",
            "--mode",
            mode,
            "--lengths",
            "uniform:8",
            "--pack",
            "--peers",
            "torch",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--matmul-n",
            "128",
            "--json",
            str(out),
        ]  # fmt: skip
    )
    rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert {"jaxformer (padded)", "jaxformer (packed)", "transformers (torch eager)"} <= set(rows)
    for r in rows.values():
        assert r["tokens_per_s"] > 0 and r["flops_per_token"] > 0
