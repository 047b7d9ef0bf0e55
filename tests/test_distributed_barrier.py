"""distributed.barrier: a no-op on one process; with several, a coordination-service barrier
with a fresh id per call (a passed id would pass again at once) and the configured timeout,
and a one-line error naming the barrier when it times out. The two-process runs of
test_training_multihost.py go through the real service."""

import jax
import ml_collections
import pytest

from jaxformer.training import distributed


class _Client:
    def __init__(self, error=None):
        self.calls, self.error = [], error

    def wait_at_barrier(self, barrier_id, timeout_in_ms):
        self.calls.append((barrier_id, timeout_in_ms))
        if self.error:
            raise self.error


@pytest.fixture
def two_processes(monkeypatch):
    from jax._src import distributed as jax_distributed

    client = _Client()
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax_distributed.global_state, "client", client)
    monkeypatch.setattr(distributed, "_timeout_s", distributed.BARRIER_TIMEOUT_S)
    return client


def test_one_process_needs_no_barrier():
    assert jax.process_count() == 1
    assert distributed.barrier("first step") == 0.0


def test_each_call_is_a_new_barrier_with_the_configured_timeout(two_processes):
    cfg = ml_collections.ConfigDict(
        dict(coordinator_address="", num_processes=0, process_id=-1, auto=False)
    )
    cfg.barrier_timeout_s = 90.0
    assert not distributed.initialize(cfg)  # nothing to join, but the timeout is read
    distributed.barrier("first step")
    distributed.barrier("first step")
    (id1, ms1), (id2, ms2) = two_processes.calls
    assert id1 != id2 and id1.endswith("first step") and id2.endswith("first step")
    assert ms1 == ms2 == 90_000
    cfg.barrier_timeout_s = 0.0  # the default
    distributed.initialize(cfg)
    distributed.barrier("eval")
    assert two_processes.calls[-1][1] == distributed.BARRIER_TIMEOUT_S * 1000
    cfg.barrier_timeout_s = -1.0
    with pytest.raises(ValueError, match="barrier_timeout_s must be >= 0"):
        distributed.initialize(cfg)


def test_a_timed_out_barrier_is_one_clear_line(two_processes):
    two_processes.error = RuntimeError("DEADLINE_EXCEEDED: Barrier timed out. Id: x::0.\n...")
    with pytest.raises(TimeoutError) as e:
        distributed.barrier("first step")
    msg = str(e.value)
    assert "'first step'" in msg and "barrier_timeout_s" in msg and "\n" not in msg
    two_processes.error = RuntimeError("UNAVAILABLE: task 1 heartbeat timeout")
    with pytest.raises(RuntimeError, match="heartbeat"):  # a dead peer: passed on as is
        distributed.barrier("first step")
