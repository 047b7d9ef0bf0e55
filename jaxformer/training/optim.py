"""Optimizers (AdamW, LAMB, Adafactor) and learning-rate schedules, all from optax.

Weight decay is masked off biases and LayerNorm parameters (BERT's rule); gradients are
clipped to a global norm before the optimizer sees them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("constant", "warmup_linear", "warmup_rsqrt", "warmup_cosine")
OPTIMIZERS = ("adamw", "lamb", "adafactor")
NO_DECAY_NAMES = ("bias", "scale")  # Dense/attention biases, the MLM bias, LayerNorm scale+bias


def make_schedule(
    name: str, lr: float, warmup_steps: int = 0, total_steps: int = 1, end_lr: float = 0.0
) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """lr(step) for step = 0, 1, ...

    constant:       lr
    warmup_linear:  lr * step / warmup, then linear to end_lr at total_steps (BERT, RoBERTa)
    warmup_rsqrt:   lr * min(step / warmup, sqrt(warmup / step)) (Transformer, peak lr at warmup)
    warmup_cosine:  lr * step / warmup, then end_lr + (lr - end_lr) * (1 + cos(pi * t)) / 2,
                    t = (step - warmup) / (total_steps - warmup)
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


def make_optimizer(cfg: Mapping, total_steps: int) -> tuple[optax.GradientTransformation, Callable]:
    """(tx, schedule) from config.optimizer:
    name, lr, schedule, warmup_steps, end_lr, weight_decay, b1, b2, eps, clip_norm."""
    name = cfg["name"]
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; use one of {OPTIMIZERS}.")
    sched = make_schedule(
        cfg["schedule"], cfg["lr"], cfg["warmup_steps"], total_steps, cfg.get("end_lr", 0.0)
    )
    wd = cfg["weight_decay"]
    if name == "adamw":
        opt = optax.adamw(
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
    if cfg.get("clip_norm", 0.0) and cfg["clip_norm"] > 0 and math.isfinite(cfg["clip_norm"]):
        chain.append(optax.clip_by_global_norm(cfg["clip_norm"]))
    chain.append(opt)
    return optax.chain(*chain), sched
