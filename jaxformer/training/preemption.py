"""Agreeing on a host-local stop request across processes without a collective every step.

SIGTERM (a preemption notice) reaches processes at different times. Every process must stop
after the same step, or the ones still stepping wait forever in the next collective. Instead
of all-gathering the flag after every step (a host sync that stalls dispatch), `HostAgreement`
all-gathers it every `every` steps; all processes call it once per step, so they check at the
same steps and stop at the same one, at most `every - 1` steps after the signal. One process:
the flag is used as is, no collective at all.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["HostAgreement"]


class HostAgreement:
    """`agree(flag)` once per step -> whether any process has set its flag (decided every
    `every` calls; False in between). `syncs` counts the cross-host collectives made."""

    def __init__(self, every: int = 10):
        if every < 1:
            raise ValueError(f"preemption_check_every_steps must be >= 1, got {every}.")
        self.every, self.calls, self.syncs = int(every), 0, 0

    def __call__(self, flag: bool) -> bool:
        if jax.process_count() == 1:
            return flag
        self.calls += 1
        if self.calls % self.every:
            return False
        from jax.experimental import multihost_utils

        self.syncs += 1
        return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))
