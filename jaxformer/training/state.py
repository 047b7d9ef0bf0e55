"""TrainState (a plain pytree of arrays, so orbax saves all of it) and sharded creation."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxformer.training import sharding as sh


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray  # int32 scalar: optimizer steps taken (skipped ones included)
    params: Any  # float32 master weights
    opt_state: Any
    rng: jnp.ndarray  # the run's base key (raw uint32[2]); step keys are folded from it
    bad_streak: jnp.ndarray  # int32: consecutive non-finite steps (0 after a good one)
    skipped: jnp.ndarray  # int32: non-finite steps skipped in total


def _is_spec(x):
    return isinstance(x, P)


def state_specs(task, tx, mesh, rules=sh.RULES, seed: int = 0):
    """(abstract state, mesh PartitionSpecs of the state). Raises ShardingError early when a
    parameter dimension does not divide its mesh axes."""
    rng = jax.random.PRNGKey(seed)
    boxed = jax.eval_shape(task.init_params, rng)
    logical = sh.logical_specs(boxed)
    params_abs = nn.unbox(boxed)
    pspecs = sh.mesh_specs(logical, rules)
    sh.check_divisible(params_abs, pspecs, mesh, logical=logical)
    opt_abs = jax.eval_shape(tx.init, params_abs)
    # Masked optimizers (e.g. a frozen encoder) hold MaskedNode where a parameter is left out:
    # it has no arrays, so it keeps no spec.
    masked = lambda x: isinstance(x, optax.MaskedNode)
    ospecs = optax.tree_map_params(
        tx,
        lambda p, s: p if masked(p) else s,
        opt_abs,
        pspecs,
        transform_non_params=lambda _: P(),
        is_leaf=lambda x: _is_spec(x) or masked(x),
    )
    # Statistics shaped unlike their parameter (Adafactor's factored moments) get a fitted spec.
    ospecs = jax.tree.map(
        lambda s, a: sh.fit_spec(s, a.shape, mesh), ospecs, opt_abs, is_leaf=_is_spec
    )
    abstract = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params_abs,
        opt_state=opt_abs,
        rng=jax.ShapeDtypeStruct((2,), jnp.uint32),
        bad_streak=jax.ShapeDtypeStruct((), jnp.int32),
        skipped=jax.ShapeDtypeStruct((), jnp.int32),
    )
    specs = TrainState(
        step=P(), params=pspecs, opt_state=ospecs, rng=P(), bad_streak=P(), skipped=P()
    )
    return abstract, specs


def create_state(task, tx, mesh, rules=sh.RULES, seed: int = 0):
    """Initialises the state already sharded (eval_shape -> specs -> jit(init, out_shardings)).

    Returns (state, state shardings, abstract state).
    """
    abstract, specs = state_specs(task, tx, mesh, rules, seed)
    shardings = sh.named(mesh, specs)

    def init(rng):
        params_rng, run_rng = jax.random.split(rng)
        params = nn.unbox(task.init_params(params_rng))
        zero = jnp.zeros((), jnp.int32)
        return TrainState(
            step=zero,
            params=params,
            opt_state=tx.init(params),
            rng=run_rng,
            bad_streak=zero,
            skipped=zero,
        )

    # out_shardings place the result; activations need no constraints at init.
    state = jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))
    return state, shardings, abstract


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())
