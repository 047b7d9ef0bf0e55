"""Feeding: numpy batches, a background prefetch thread, placement onto a mesh, and an
iterator whose position can be saved and restored exactly.

Multi-host: every process builds the same dataset and reads only its own shard of each
global batch (`shard_for_process`); `make_global_batch` assembles the per-process pieces
into one global `jax.Array` with `jax.make_array_from_process_local_data`.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import grain
import jax
import numpy as np

__all__ = ["batch_dataset", "shard_for_process", "make_global_batch", "DataIterator"]


def batch_dataset(ds: grain.MapDataset, batch_size: int, *, drop_remainder: bool = True):
    """Stacks consecutive examples (dicts of numpy arrays) into batches [batch_size, ...]."""
    return ds.batch(batch_size, drop_remainder=drop_remainder)


def shard_for_process(
    ds: grain.MapDataset, process_index: int | None = None, process_count: int | None = None
) -> grain.MapDataset:
    """This process's share of the examples: every `process_count`-th, from `process_index`.

    Apply before `batch_dataset` with the per-process batch size (global / process_count).
    """
    i = jax.process_index() if process_index is None else process_index
    n = jax.process_count() if process_count is None else process_count
    return ds[i::n]


def make_global_batch(
    batch: dict[str, np.ndarray], sharding: jax.sharding.NamedSharding
) -> dict[str, jax.Array]:
    """Places this process's rows of the global batch onto the mesh (leading axis = batch)."""

    def place(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
        spec = sharding.spec[: x.ndim]  # scalars per row: keep only batch axes
        s = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec(*spec))
        return jax.make_array_from_process_local_data(s, x, global_shape)

    return {k: place(v) for k, v in batch.items()}


_DONE = object()


class DataIterator:
    """Iterates a grain dataset of batches; optional prefetch thread and mesh placement.

    `get_state()` is a small JSON-able dict naming the next batch to be *returned* (batches
    already prefetched but not yet returned are not counted), so `set_state(state)` resumes
    exactly there, also on a fresh iterator over the same dataset.
    """

    def __init__(
        self, ds, *, prefetch: int = 2, sharding: jax.sharding.NamedSharding | None = None
    ):
        if isinstance(ds, grain.MapDataset):
            ds = ds.to_iter_dataset()
        self._it = iter(ds)
        self._prefetch = prefetch
        self._sharding = sharding
        self._state = self._it.get_state()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # The producer runs ahead; each batch travels with the state *after* it was taken, which
    # becomes the iterator's state once the consumer receives that batch.
    def _produce(self, q: queue.Queue, stop: threading.Event):
        try:
            while not stop.is_set():
                try:
                    batch = next(self._it)
                except StopIteration:
                    q.put((_DONE, None))
                    return
                item = (self._place(batch), self._it.get_state())
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        pass
        except BaseException as e:  # surface errors in the consumer, not lost in a thread
            q.put((e, None))

    def _place(self, batch):
        return batch if self._sharding is None else make_global_batch(batch, self._sharding)

    def _start(self):
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self._prefetch)
        self._thread = threading.Thread(
            target=self._produce, args=(self._queue, self._stop), daemon=True
        )
        self._thread.start()

    def _halt(self):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = None

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, Any]:
        if self._prefetch <= 0:
            batch = self._place(next(self._it))
            self._state = self._it.get_state()
            return batch
        if self._thread is None:
            self._start()
        batch, state = self._queue.get()
        if batch is _DONE:
            self._halt()
            raise StopIteration
        if isinstance(batch, BaseException):
            self._halt()
            raise batch
        self._state = state
        return batch

    def get_state(self) -> dict:
        return dict(self._state)

    def set_state(self, state: dict) -> None:
        self._halt()  # drop batches prefetched from the old spot
        self._it.set_state(dict(state))
        self._state = self._it.get_state()

    def close(self) -> None:
        self._halt()
