"""Ahead-of-time memory check: compile the train step for the configured mesh, run nothing.

`python train.py --config ... --config.aot_only=true [--config.aot_hbm_gib=80]` lowers and
compiles the sharded train step from abstract shapes (no parameters are initialised, no step
runs) and prints, per device, XLA's memory analysis (arguments, outputs, temporaries) beside
our own count of the parameter and optimizer bytes each device holds, and whether the total
fits the given HBM size. The report is also written to workdir/memory.json.

To check a GPU or TPU topology before renting it, compile on CPU with as many fake devices as
the target has (`XLA_FLAGS=--xla_force_host_platform_device_count=N`): the sharded shapes and
hence the per-device parameter, optimizer and batch bytes are the target's; XLA's temporaries
are the CPU compiler's plan, an estimate of the accelerator's (its fusion differs). See
docs/accelerators.md.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

__all__ = ["per_device_bytes", "aot_report", "format_report", "run_aot"]

GiB = 2**30


def per_device_bytes(abstract, shardings) -> int:
    """Bytes one device holds of a pytree of ShapeDtypeStructs under these shardings (the
    largest shard, i.e. device 0's, where a dimension does not split evenly)."""
    total = 0
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        shape = s.shard_shape(a.shape) if a.shape else ()
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
    return total


def _total_bytes(abstract) -> int:
    return sum(int(np.prod(a.shape, dtype=np.int64)) * a.dtype.itemsize for a in abstract)


def aot_report(train_fn, abstract, state_sh, batch, batch_sh, mesh, hbm_gib: float = 0.0):
    """Compiles `train_fn` (a `step.compile_train_step` result) for abstract inputs and
    returns the per-device memory report (a dict of ints and floats)."""
    as_input = lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
    state_in = jax.tree.map(as_input, abstract, state_sh)
    batch_in = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sh[k]) for k, v in batch.items()
    }
    t0 = time.perf_counter()
    compiled = train_fn.lower(state_in, batch_in).compile()
    compile_s = time.perf_counter() - t0
    m = compiled.memory_analysis()
    params = per_device_bytes(abstract.params, state_sh.params)
    opt = per_device_bytes(abstract.opt_state, state_sh.opt_state)
    report = {
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "devices": int(mesh.size),
        "platform": jax.devices()[0].platform,
        "compile_s": compile_s,
        "num_params": sum(int(np.prod(a.shape)) for a in jax.tree.leaves(abstract.params)),
        "params_bytes_total": _total_bytes(jax.tree.leaves(abstract.params)),
        "params_bytes_per_device": params,
        "opt_state_bytes_per_device": opt,
        "batch_bytes_per_device": per_device_bytes(
            [batch_in[k] for k in sorted(batch_in)], [batch_sh[k] for k in sorted(batch_in)]
        ),
        "xla_argument_bytes": int(m.argument_size_in_bytes),
        "xla_output_bytes": int(m.output_size_in_bytes),
        "xla_alias_bytes": int(m.alias_size_in_bytes),
        "xla_temp_bytes": int(m.temp_size_in_bytes),
        "xla_generated_code_bytes": int(m.generated_code_size_in_bytes),
    }
    # Donated state: outputs alias the arguments, so they are not counted twice.
    report["xla_total_bytes_per_device"] = (
        report["xla_argument_bytes"]
        + report["xla_output_bytes"]
        - report["xla_alias_bytes"]
        + report["xla_temp_bytes"]
    )
    if hbm_gib:
        report["hbm_gib"] = float(hbm_gib)
        report["fits"] = report["xla_total_bytes_per_device"] <= hbm_gib * GiB
    return report


def format_report(r: dict) -> str:
    g = lambda b: f"{b / GiB:.3f} GiB"
    lines = [
        f"AOT memory, per device, mesh {r['mesh']} ({r['devices']} {r['platform']} devices), "
        f"{r['num_params']:,} parameters, compiled in {r['compile_s']:.1f} s:",
        f"  parameters      {g(r['params_bytes_per_device'])}"
        f"  (of {g(r['params_bytes_total'])} in all)",
        f"  optimizer state {g(r['opt_state_bytes_per_device'])}",
        f"  batch           {g(r['batch_bytes_per_device'])}",
        f"  XLA: arguments {g(r['xla_argument_bytes'])}, outputs {g(r['xla_output_bytes'])}"
        f" (aliased {g(r['xla_alias_bytes'])}), temporaries {g(r['xla_temp_bytes'])}",
        f"  total           {g(r['xla_total_bytes_per_device'])}",
    ]
    if "fits" in r:
        verdict = "fits" if r["fits"] else "does NOT fit"
        lines.append(f"  {verdict} in {r['hbm_gib']:g} GiB of device memory")
    return "\n".join(lines)


def run_aot(config, workdir, task, tx, schedule, abstract, state_sh, first, mesh, say) -> dict:
    """The `aot_only` branch of the training loop: report, write memory.json, return it."""
    from jaxformer.training import step as step_lib

    train_fn, batch_sh = step_lib.compile_train_step(
        step_lib.make_train_step(task, tx, schedule, config.grad_accum_steps),
        state_sh,
        first,
        mesh,
    )
    scale = config.batch_size // next(iter(first.values())).shape[0]  # per process -> global
    batch = {
        k: jax.ShapeDtypeStruct((v.shape[0] * scale,) + v.shape[1:], v.dtype)
        for k, v in ((k, np.asarray(v)) for k, v in first.items())
    }
    report = aot_report(train_fn, abstract, state_sh, batch, batch_sh, mesh, config.aot_hbm_gib)
    say(format_report(report))
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "memory.json"), "w") as f:
            json.dump(report, f, indent=2)
    return report
