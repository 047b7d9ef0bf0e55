"""Sharding for your own code: a mesh, the logical rules table, and parameter placement.

The models name every parameter dimension with a logical axis (`vocab`, `embed`, `heads`,
`kv`, `mlp`, `layers`) and constrain activations to (`batch`, `length`, `embed`). `RULES`
maps those names to the mesh axes `data` (data parallel), `fsdp` (parameters and the batch
split, ZeRO-3) and `tensor` (heads and the MLP width split)::

    import jaxformer as jf
    from jaxformer import sharding

    mesh = sharding.make_mesh(data=1, fsdp=-1)  # FSDP over every device
    model = jf.EncoderModel(jf.bert_config("base"))
    params = sharding.shard_params(model.init(key, **model.dummy_inputs()), mesh)
    with sharding.use_mesh(mesh):  # the rules the models' activation constraints read
        loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params, batch)

The models also run under a mesh made with plain `jax.make_mesh`, whose axes are Explicit by
default: the rules then apply to none of its axes (Explicit axes carry their shardings in
the array types), so such a mesh gives data parallelism through the batch's sharding. FSDP
and tensor parallelism need the Auto axes of `make_mesh` here.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import Mesh

from jaxformer.training.sharding import (
    BATCH_AXES,
    MESH_AXES,
    RULES,
    ShardingError,
    batch_shardings,
    logical_specs,
    mesh_rules,
    mesh_specs,
    param_shardings,
    shard_params,
    use_mesh,
)
from jaxformer.training.sharding import make_mesh as _make_mesh

__all__ = [
    "BATCH_AXES",
    "MESH_AXES",
    "RULES",
    "ShardingError",
    "batch_shardings",
    "logical_specs",
    "make_mesh",
    "mesh_rules",
    "mesh_specs",
    "param_shardings",
    "shard_params",
    "use_mesh",
]


def make_mesh(
    data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """A `(data, fsdp, tensor)` mesh with Auto axes over `devices` (default: all). One size
    may be -1, the devices left over; the sizes must multiply to the device count."""
    return _make_mesh({"data": data, "fsdp": fsdp, "tensor": tensor}, devices)
