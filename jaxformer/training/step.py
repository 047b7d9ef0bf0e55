"""The pure train and eval steps, and their jit-compiled, sharded forms.

`train_step(state, batch) -> (state, metrics)`:
  * the dropout key is `fold_in(state.rng, state.step)`, so a resumed run draws the same keys;
  * `task.device_batch(batch, key)` first completes the whole global batch on the device
    (e.g. draws MLM masks), with a key of its own stream (`DEVICE_BATCH_STREAM`): the same
    for any `grad_accum_steps`, and the same after a resume;
  * the batch is split into `grad_accum_steps` micro-batches summed by `lax.scan` inside the
    compiled step; each micro-batch loss is normalised by the whole batch's totals
    (`task.normalizers`), so accumulation equals one step on the full batch;
  * compute runs in the model's dtype (bf16) on float32 master weights, so gradients and
    optimizer state stay float32;
  * a step whose loss or gradient norm is NaN/inf leaves params and optimizer state unchanged
    and is counted (`bad_streak`, `skipped`); the loop decides when to stop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxformer.training import sharding as sh
from jaxformer.training.state import TrainState, replicated


# Folded into the step key for `task.device_batch`: a stream apart from the dropout keys
# (those are the step key itself and its folds by micro-batch index 0, 1, ...).
DEVICE_BATCH_STREAM = 0x6D61736B


def _split_micro(batch, n: int):
    """[B, ...] -> [n, B/n, ...] with micro-batch i = rows i, i+n, ...: each device keeps its
    own rows (the batch dim is sharded in contiguous blocks), so no data moves."""

    def split(x):
        b = x.shape[0]
        return jnp.swapaxes(x.reshape((b // n, n) + x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_train_step(
    task, tx: optax.GradientTransformation, schedule=None, grad_accum_steps: int = 1
):
    """The pure `(state, batch) -> (state, metrics)` function."""

    def train_step(state: TrainState, batch):
        rng = jax.random.fold_in(state.rng, state.step)
        batch = task.device_batch(batch, jax.random.fold_in(rng, DEVICE_BATCH_STREAM))
        norms = task.normalizers(batch)

        def loss_fn(params, micro, key):
            return task.loss_fn(params, micro, key, norms, deterministic=False)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        if grad_accum_steps == 1:
            (loss, metrics), grads = grad_fn(state.params, batch, rng)
        else:
            micro = _split_micro(batch, grad_accum_steps)

            def body(carry, xs):
                i, mb = xs
                (l, m), g = grad_fn(state.params, mb, jax.random.fold_in(rng, i))
                acc_l, acc_m, acc_g = carry
                return (
                    acc_l + l,
                    jax.tree.map(jnp.add, acc_m, m),
                    jax.tree.map(jnp.add, acc_g, g),
                ), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            _, m_shape = jax.eval_shape(
                loss_fn, state.params, jax.tree.map(lambda x: x[0], micro), rng
            )
            m0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), m_shape)
            (loss, metrics, grads), _ = jax.lax.scan(
                body, (jnp.zeros((), jnp.float32), m0, zeros), (jnp.arange(grad_accum_steps), micro)
            )

        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def update(_):
            updates, new_opt = tx.update(grads, state.opt_state, state.params)
            return optax.apply_updates(state.params, updates), new_opt

        # A branch, not a select: a good step updates in place and never reads the old
        # params and moments a second time; a non-finite step keeps them untouched.
        new_params, new_opt = jax.lax.cond(
            ok, update, lambda _: (state.params, state.opt_state), None
        )
        bad = jnp.where(ok, 0, state.bad_streak + 1).astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=new_params,
            opt_state=new_opt,
            bad_streak=bad,
            skipped=state.skipped + (~ok).astype(jnp.int32),
        )
        # The parameter norm is read by the loop at log steps only: here it would be one
        # more pass over every parameter in every step.
        metrics = dict(
            metrics,
            loss=loss,
            grad_norm=grad_norm,
            nonfinite=(~ok).astype(jnp.int32),
            bad_streak=bad,
        )
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        return new_state, metrics

    return train_step


def make_eval_step(task):
    """`(params, batch) -> metrics` with dropout off. Eval batches come complete from the
    host (masked once, the same every eval), so `device_batch` passes them through; a fixed
    key keeps any it does complete the same every eval."""

    def eval_step(params, batch):
        batch = task.device_batch(batch, jax.random.PRNGKey(DEVICE_BATCH_STREAM))
        norms = task.normalizers(batch)
        loss, metrics = task.loss_fn(
            params, batch, jax.random.PRNGKey(0), norms, deterministic=True
        )
        return dict(metrics, loss=loss)

    return eval_step


def compile_train_step(train_step, state_shardings, batch_example, mesh, rules=sh.RULES):
    """jit with explicit shardings (batch over data x fsdp, metrics replicated) and the
    state donated. Returns (jitted fn, batch shardings)."""
    batch_sh = sh.batch_shardings(mesh, batch_example)
    fn = jax.jit(
        train_step,
        in_shardings=(state_shardings, batch_sh),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=(0,),
    )
    return _with_context(fn, mesh, rules), batch_sh


def compile_eval_step(eval_step, param_shardings, batch_example, mesh, rules=sh.RULES):
    batch_sh = sh.batch_shardings(mesh, batch_example)
    fn = jax.jit(
        eval_step, in_shardings=(param_shardings, batch_sh), out_shardings=replicated(mesh)
    )
    return _with_context(fn, mesh, rules)


class _with_context:
    """Calls (and lowers) a jitted function under the mesh and the logical rules, which
    Linen's activation constraints read at trace time."""

    def __init__(self, fn, mesh, rules):
        self.fn, self.mesh, self.rules = fn, mesh, rules

    def _run(self, method, *args):
        with sh.use_mesh(self.mesh, self.rules):
            return method(*args)

    def __call__(self, *args):
        return self._run(self.fn, *args)

    def lower(self, *args):
        return self._run(self.fn.lower, *args)
