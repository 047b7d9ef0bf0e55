"""Optimizers (AdamW, StableAdamW, LAMB, Adafactor) and learning-rate schedules on optax.

Weight decay is masked off biases and LayerNorm parameters (BERT's rule); gradients are
clipped to a global norm before the optimizer sees them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxformer.training.defaults import base_config

SCHEDULES = ("constant", "warmup_linear", "warmup_rsqrt", "warmup_cosine", "warmup_stable_decay")
OPTIMIZERS = ("adamw", "stable_adamw", "lamb", "adafactor")
NO_DECAY_NAMES = ("bias", "scale")  # Dense/attention biases, the MLM bias, LayerNorm scale+bias


def make_schedule(
    name: str,
    lr: float,
    warmup_steps: int = 0,
    total_steps: int = 1,
    end_lr: float = 0.0,
    decay_fraction: float = 0.1,
) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """lr(step) for step = 0, 1, ...

    constant:       lr
    warmup_linear:  lr * step / warmup, then linear to end_lr at total_steps (BERT, RoBERTa)
    warmup_rsqrt:   lr * min(step / warmup, sqrt(warmup / step)) (Transformer, peak lr at warmup)
    warmup_cosine:  lr * step / warmup, then end_lr + (lr - end_lr) * (1 + cos(pi * t)) / 2,
                    t = (step - warmup) / (total_steps - warmup)
    warmup_stable_decay (trapezoidal, ModernBERT): lr * step / warmup, then lr until the last
                    D = decay_fraction * total_steps steps, then the 1-sqrt decay
                    end_lr + (lr - end_lr) * (1 - sqrt(t)), t = (step - (total - D)) / D
    """
    w = int(warmup_steps)
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "warmup_rsqrt":

        def rsqrt(step):
            s = jnp.maximum(jnp.asarray(step, jnp.float32), 1e-9)
            if w == 0:
                return lr * jax.lax.rsqrt(jnp.maximum(s, 1.0))
            return lr * jnp.minimum(s / w, jnp.sqrt(w / s))

        return rsqrt
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; use one of {SCHEDULES}.")
    if name == "warmup_stable_decay":
        if not 0.0 < decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction={decay_fraction} must be in (0, 1].")
        d = max(int(round(decay_fraction * total_steps)), 1)
        start = max(int(total_steps) - d, w)

        def wsd(step):
            s = jnp.asarray(step, jnp.float32)
            t = jnp.clip((s - start) / d, 0.0, 1.0)
            stable = jnp.where(s < w, lr * s / max(w, 1), lr)
            return jnp.where(s < start, stable, end_lr + (lr - end_lr) * (1.0 - jnp.sqrt(t)))

        return wsd
    decay_steps = max(int(total_steps) - w, 1)
    if name == "warmup_linear":
        decay = optax.linear_schedule(lr, end_lr, decay_steps)
    else:
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end_lr / lr if lr else 0.0)
    if w == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, w), decay], [w])


def decay_mask(params):
    """True where weight decay applies: every parameter except biases and LayerNorm ones."""

    def keep(path, _):
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        leaf = names[-1] if names else ""
        in_norm = any("norm" in n.lower() for n in names[:-1])
        return not (leaf in NO_DECAY_NAMES or in_norm)

    return jax.tree_util.tree_map_with_path(keep, params)


class StableAdamState(NamedTuple):
    count: jnp.ndarray
    mu: optax.Updates
    nu: optax.Updates


def stable_adamw(
    learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, mask=None
) -> optax.GradientTransformation:
    """StableAdamW (Wortsman et al. 2023), ModernBERT's optimizer: AdamW whose step size per
    tensor is divided by max(1, RMS(g^2 / max(v_hat, eps^2))), Adafactor's update clipping,
    which damps the update when the second moment lags a gradient spike. The decoupled
    weight decay is scaled by the same clipped step size. `mask(params)`: where to decay."""

    def init(params):
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)
        return StableAdamState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update(grads, state, params=None):
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)
        c1 = 1 - b1 ** count.astype(jnp.float32)
        c2 = 1 - b2 ** count.astype(jnp.float32)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        decay = mask(params) if mask is not None else jax.tree.map(lambda _: True, params)

        def leaf(g, m, v, p, wd_on):
            v_hat = v / c2
            rms = jnp.sqrt(jnp.mean(g * g / jnp.maximum(v_hat, eps * eps)))
            step = lr / jnp.maximum(1.0, rms)
            u = (m / c1) / (jnp.sqrt(v_hat) + eps)
            if weight_decay and wd_on:
                u = u + weight_decay * p
            return -step * u

        updates = jax.tree.map(leaf, grads, mu, nu, params, decay)
        return updates, StableAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(cfg: Mapping, total_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """(tx, schedule) from config.optimizer: name, lr, schedule, warmup_steps, end_lr,
    decay_fraction (warmup_stable_decay), weight_decay, b1, b2, eps, clip_norm. A key that
    `cfg` lacks takes its default from `training.defaults.base_config`."""
    cfg = {**base_config({}).optimizer.to_dict(), **dict(cfg)}
    name = cfg["name"]
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {OPTIMIZERS}.")
    sched = make_schedule(
        cfg["schedule"],
        cfg["lr"],
        cfg["warmup_steps"],
        total_steps,
        cfg["end_lr"],
        cfg["decay_fraction"],
    )
    wd = cfg["weight_decay"]
    if name == "adamw":
        opt = optax.adamw(
            sched, b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"], weight_decay=wd, mask=decay_mask
        )
    elif name == "stable_adamw":
        opt = stable_adamw(
            sched, b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"], weight_decay=wd, mask=decay_mask
        )
    elif name == "lamb":
        opt = optax.lamb(
            sched, b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"], weight_decay=wd, mask=decay_mask
        )
    else:
        opt = optax.adafactor(
            sched, weight_decay_rate=wd or None, weight_decay_mask=decay_mask if wd else None
        )
    chain = []
    if (cfg["clip_norm"] or 0.0) > 0 and math.isfinite(cfg["clip_norm"]):
        chain.append(optax.clip_by_global_norm(cfg["clip_norm"]))
    chain.append(opt)
    return optax.chain(*chain), sched
