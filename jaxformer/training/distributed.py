"""Multi-host start-up: `jax.distributed.initialize` from config flags or the cluster's
environment (SLURM, Open MPI, TPU pods are detected by jax itself), and `barrier`, which
lines the processes up before collectives that follow process-local work of any length.

Why the barrier: the first collective over a group of devices sets up a communicator, and
that set-up has a deadline for the peers to arrive (gloo, jax's CPU collectives, waits a fixed
30 s, and jax exposes no option to change it). When one host compiles, restores or prepares
data more slowly than another, the first to reach the collective gives up with
`Gloo context initialization failed: DEADLINE_EXCEEDED`. The coordination service's barrier
is a remote call to the coordinator, not a device collective: it waits as long as it is told
to (`config.distributed.barrier_timeout_s`), and the collective that follows starts with every
process present. Once set up, a communicator waits for late peers without that deadline.
"""

from __future__ import annotations

import itertools
import os
import time

import jax

__all__ = ["barrier", "initialize"]

BARRIER_TIMEOUT_S = 1800.0  # a slow host's compile or restore of a large model fits in this
_timeout_s = BARRIER_TIMEOUT_S
_count = itertools.count()  # barrier ids must be unique: a passed id passes again at once

_ENV_HINTS = (
    "SLURM_JOB_ID",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_COORDINATOR_ADDRESS",
)


def initialize(cfg) -> bool:
    """Joins the processes of a multi-host run. Returns True if jax.distributed was set up.

    cfg: config.distributed with coordinator_address ("" = from the environment),
    num_processes (0 = from the environment), process_id (-1 = from the environment),
    cpu_collectives ("gloo" for multi-process CPU runs), auto (join a cluster found in the
    environment), barrier_timeout_s (how long
    `barrier` waits for the slowest process; 0 = BARRIER_TIMEOUT_S). Environment variables
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID fill unset flags.
    """
    global _timeout_s
    timeout = float(cfg.barrier_timeout_s)
    if timeout < 0:
        raise ValueError(
            f"distributed.barrier_timeout_s must be >= 0 (0 = {BARRIER_TIMEOUT_S:.0f} s), got "
            f"{timeout}."
        )
    _timeout_s = timeout or BARRIER_TIMEOUT_S
    addr = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    n = cfg.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
    pid = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1"))
    explicit = bool(addr) and n > 1
    cluster = any(k in os.environ for k in _ENV_HINTS) and cfg.auto
    if not (explicit or cluster):
        return False
    if cfg.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    kwargs = {}
    if explicit:
        kwargs = dict(
            coordinator_address=addr, num_processes=n, process_id=pid if pid >= 0 else None
        )
    jax.distributed.initialize(**kwargs)
    return True


def barrier(name: str) -> float:
    """Waits until every process of the run has called `barrier(name)`, through the
    coordination service (no device collective); returns the seconds waited. No-op on one
    process. Every process must call it at the same points, in the same order."""
    if jax.process_count() == 1:
        return 0.0
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    t0 = time.perf_counter()
    if client is None:  # joined without the coordination service: a collective barrier
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxformer {name}")
        return time.perf_counter() - t0
    try:
        client.wait_at_barrier(f"jaxformer/{next(_count)}/{name}", int(_timeout_s * 1000))
    except Exception as e:
        if "DEADLINE_EXCEEDED" not in str(e):
            raise
        raise TimeoutError(
            f"process {jax.process_index()} waited {_timeout_s:.0f} s at {name!r} for the "
            "other processes of the run: one is stuck or much slower (see its log); raise "
            "config.distributed.barrier_timeout_s if it only needs longer."
        ) from None
    return time.perf_counter() - t0
