"""Multi-host start-up: `jax.distributed.initialize` from config flags or the cluster's
environment (SLURM, Open MPI, TPU pods are detected by jax itself)."""

from __future__ import annotations

import os

import jax

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
    cpu_collectives ("gloo" for multi-process CPU runs). Environment variables
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID fill unset flags.
    """
    addr = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    n = cfg.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
    pid = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1"))
    explicit = bool(addr) and n > 1
    cluster = any(k in os.environ for k in _ENV_HINTS) and cfg.get("auto", True)
    if not (explicit or cluster):
        return False
    if cfg.get("cpu_collectives"):
        jax.config.update("jax_cpu_collectives_implementation", cfg.cpu_collectives)
    kwargs = {}
    if explicit:
        kwargs = dict(
            coordinator_address=addr, num_processes=n, process_id=pid if pid >= 0 else None
        )
    jax.distributed.initialize(**kwargs)
    return True
