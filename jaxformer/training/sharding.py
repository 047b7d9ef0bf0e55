"""Mesh, the logical->mesh rules table, and parameter / batch shardings.

Mesh axes: `data` (pure data parallel: params replicated), `fsdp` (ZeRO-3: the batch *and*
the parameters / optimizer state are split over it), `tensor` (Megatron: attention heads
and the MLP width are split over it). All three come from the same model code through
`RULES`: the model names each parameter dimension with a logical axis, this table says
which mesh axis that dimension is split over.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any
from collections.abc import Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# The one rules table. A logical axis maps to a mesh axis (or a tuple of them, or None =
# replicated); flax drops a mesh axis already used by an earlier dimension of the same array,
# so activations [batch, length, embed] shard only the batch.
RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
)


class ShardingError(ValueError):
    """A mesh or a dimension that cannot be sharded as configured."""


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """Resolves {data, fsdp, tensor} sizes (one may be -1 = the remaining devices)."""
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ShardingError(f"unknown mesh axes {sorted(unknown)}; the axes are {MESH_AXES}.")
    shape = [int(sizes.get(a, 1)) for a in MESH_AXES]
    if shape.count(-1) > 1:
        raise ShardingError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, shape))}.")
    if any(s == 0 or s < -1 for s in shape):
        raise ShardingError(f"mesh sizes must be positive or -1, got {shape}.")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ShardingError(
                f"{num_devices} devices do not divide by the fixed mesh axes "
                f"{dict(zip(MESH_AXES, shape))} (product {known})."
            )
        shape[shape.index(-1)] = num_devices // known
    if math.prod(shape) != num_devices:
        raise ShardingError(
            f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} "
            f"devices but {num_devices} are available."
        )
    return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh over `devices` (default: all, every process) with Auto axis types, which
    Linen's logical constraints need."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def logical_specs(tree):
    """PartitionSpecs (logical names) of a tree of boxed parameters; unboxed leaves -> P()."""
    return nn.get_partition_spec(tree)


def _axis_size(mesh: Mesh, entry) -> int:
    if entry is None:
        return 1
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(mesh.shape[n] for n in names)


def mesh_specs(logical, rules=RULES):
    """Logical PartitionSpecs -> mesh PartitionSpecs (same tree)."""
    return jax.tree.map(
        lambda s: nn.logical_to_mesh_axes(tuple(s), rules),
        logical,
        is_leaf=lambda x: isinstance(x, P),
    )


def check_divisible(abstract, specs, mesh: Mesh, what: str = "parameter", logical=None):
    """Raises ShardingError naming every leaf whose dimension does not divide its mesh axes."""
    problems = []
    flat, _ = jax.tree_util.tree_flatten_with_path(abstract)
    flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
    flat_logical = (
        jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, P))
        if logical is not None
        else [None] * len(flat)
    )
    for (path, leaf), spec, names in zip(flat, flat_specs, flat_logical):
        for dim, (size, entry) in enumerate(zip(leaf.shape, tuple(spec))):
            n = _axis_size(mesh, entry)
            if size % n:
                logical_name = f" (logical {names[dim]!r})" if names is not None else ""
                problems.append(
                    f"  {jax.tree_util.keystr(path)} shape {tuple(leaf.shape)}: dim "
                    f"{dim} = {size}{logical_name} does not divide mesh axes "
                    f"{entry} of size {n}"
                )
    if problems:
        raise ShardingError(
            f"{len(problems)} {what} dimension(s) cannot be sharded on mesh "
            f"{dict(mesh.shape)}:\n"
            + "\n".join(problems)
            + "\nChange the mesh sizes (config.mesh) or the model dimensions so they divide."
        )


def fit_spec(spec: P, shape: tuple, mesh: Mesh) -> P:
    """A spec truncated to the array's rank with non-dividing entries replicated (used for
    optimizer statistics whose shapes differ from their parameter's, e.g. Adafactor's)."""
    entries = list(tuple(spec))[: len(shape)]
    entries = [e if s % _axis_size(mesh, e) == 0 else None for e, s in zip(entries, shape)]
    return P(*entries)


def mesh_rules(mesh: Mesh, rules=RULES) -> tuple[tuple[str, Any], ...]:
    """`rules` restricted to the mesh's Auto axes: a mesh axis the mesh lacks, or one of
    Explicit type (the default of `jax.make_mesh`, whose shardings the arrays carry in their
    types instead), maps to nothing. On this module's `make_mesh` meshes the rules are
    unchanged."""
    auto = {
        name
        for name, kind in zip(mesh.axis_names, mesh.axis_types)
        if kind == jax.sharding.AxisType.Auto
    }

    def keep(entry):
        if entry is None:
            return None
        names = tuple(n for n in (entry if isinstance(entry, tuple) else (entry,)) if n in auto)
        if not names:
            return None
        return names if isinstance(entry, tuple) else names[0]

    return tuple((logical, keep(entry)) for logical, entry in rules)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules=RULES) -> Iterator[Mesh]:
    """Sets `mesh` and the logical rules (restricted by `mesh_rules`) that the models'
    activation constraints read at trace time; trace, jit and lower inside it."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(mesh_rules(mesh, rules)):
        yield mesh


def param_shardings(params, mesh: Mesh, rules=RULES):
    """NamedShardings for a tree of boxed parameters (what `model.init` returns, or its
    `jax.eval_shape`), from the logical axis names through `rules` on `mesh`'s Auto axes.
    Raises ShardingError naming every dimension that does not divide its mesh axes."""
    logical = logical_specs(params)
    if params and all(s == P() for s in jax.tree.leaves(logical, is_leaf=_is_spec)):
        raise ShardingError(
            "the parameters carry no logical axis names; pass the tree model.init returns "
            "(before nn.unbox), or jax.eval_shape(model.init, ...)."
        )
    specs = mesh_specs(logical, mesh_rules(mesh, rules))
    check_divisible(nn.unbox(params), specs, mesh, logical=logical)
    return named(mesh, specs)


def shard_params(params, mesh: Mesh, rules=RULES):
    """Boxed parameters -> plain arrays placed on `mesh` by `param_shardings`."""
    return jax.device_put(nn.unbox(params), param_shardings(params, mesh, rules))


def _is_spec(x) -> bool:
    return isinstance(x, P)


def named(mesh: Mesh, specs):
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, P))


def batch_spec(ndim: int) -> P:
    return P(BATCH_AXES, *([None] * (ndim - 1)))


def batch_shardings(mesh: Mesh, batch):
    """Every batch array is split over data x fsdp along its first (batch) dimension."""
    return jax.tree.map(lambda x: NamedSharding(mesh, batch_spec(np.ndim(x))), batch)


def check_batch(global_batch: int, mesh: Mesh, micro_steps: int = 1) -> None:
    n = _axis_size(mesh, BATCH_AXES)
    if global_batch % micro_steps or (global_batch // micro_steps) % n:
        raise ShardingError(
            f"batch_size={global_batch} with grad_accum_steps={micro_steps} gives micro-batches "
            f"of {global_batch / micro_steps:g}, which do not divide over data x fsdp = {n} "
            "devices; make batch_size a multiple of grad_accum_steps * data * fsdp."
        )
    if global_batch % jax.process_count():
        raise ShardingError(
            f"batch_size={global_batch} does not divide over {jax.process_count()} processes."
        )


def to_global(batch, shardings, global_batch: int):
    """Process-local numpy rows -> global jax.Arrays (each process passes its own rows)."""

    def put(x, s):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(s, x, (global_batch,) + x.shape[1:])

    return jax.tree.map(put, batch, shardings)
