"""Feeding: batching, prefetch, saved/restored positions, per-process shards, mesh placement."""

import json

import grain
import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxformer.data.feeding import DataIterator, batch_dataset, make_global_batch, shard_for_process


def _dataset(n=64, epochs=3):
    """Examples whose content names their index; random_map makes them epoch-dependent."""
    src = [{"x": np.full(4, i, np.int32), "y": np.int32(i)} for i in range(n)]
    ds = (
        grain.MapDataset.source(src)
        .seed(0)
        .shuffle()
        .random_map(lambda e, rng: dict(e, noise=rng.integers(1 << 30, size=()).astype(np.int64)))
    )
    return ds.repeat(epochs)


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("prefetch", [0, 3])
def test_state_save_and_restore_is_exact(prefetch):
    ds = batch_dataset(_dataset(), 8)
    reference = list(DataIterator(ds, prefetch=0))
    assert len(reference) == 24
    it = DataIterator(ds, prefetch=prefetch)
    for k in range(10):
        assert _same(next(it), reference[k])
    state = json.loads(json.dumps(it.get_state()))  # JSON-able and small
    assert len(json.dumps(state)) < 200
    rest = [next(it) for _ in range(5)]  # the thread has run further ahead
    fresh = DataIterator(ds, prefetch=prefetch)
    fresh.set_state(state)
    for k, batch in enumerate(fresh):
        assert _same(batch, reference[10 + k])
    assert k == 13
    it.set_state(state)  # rewinding a running iterator
    assert all(_same(next(it), r) for r in rest)
    it.close()


def test_epochs_differ_and_cover_the_data():
    batches = list(DataIterator(batch_dataset(_dataset(epochs=2), 8), prefetch=2))
    ys = [np.concatenate([b["y"] for b in batches[e * 8 : (e + 1) * 8]]) for e in range(2)]
    assert sorted(ys[0]) == sorted(ys[1]) == list(range(64)) and not np.array_equal(*ys)


def test_errors_in_the_pipeline_reach_the_consumer():
    def boom(e):
        if int(e["y"]) == 5:
            raise RuntimeError("bad example 5")
        return e

    ds = grain.MapDataset.source([{"y": np.int32(i)} for i in range(8)]).map(boom).batch(2)
    it = DataIterator(ds, prefetch=2)
    with pytest.raises(RuntimeError, match="bad example 5"):
        list(it)


def test_process_shards_are_disjoint_and_cover_the_batch():
    ds = _dataset(epochs=1)
    shards = [shard_for_process(ds, i, 4) for i in range(4)]
    ys = [sorted(int(shards[i][j]["y"]) for j in range(len(shards[i]))) for i in range(4)]
    assert sum(map(len, ys)) == 64 and sorted(sum(ys, [])) == list(range(64))
    assert len(shard_for_process(ds)) == 64 // jax.process_count()


def test_batches_are_placed_on_the_mesh():
    devices = np.array(jax.devices())
    mesh = Mesh(devices, ("data",))
    sharding = NamedSharding(mesh, P("data"))
    ds = batch_dataset(_dataset(epochs=1), 2 * len(devices))
    reference = list(DataIterator(ds, prefetch=0))
    placed = list(DataIterator(ds, prefetch=2, sharding=sharding))
    for ref, got in zip(reference, placed):
        for k in ref:
            assert isinstance(got[k], jax.Array) and got[k].shape == ref[k].shape
            assert got[k].sharding.spec[0] == "data"
            np.testing.assert_array_equal(np.asarray(got[k]), ref[k])
    batch = make_global_batch({"x": np.zeros((len(devices), 3, 2))}, sharding)
    assert batch["x"].shape == (len(devices) * jax.process_count(), 3, 2)
    assert len(batch["x"].addressable_shards) == len(devices)
