"""One of two processes of a multi-host run on 127.0.0.1 (CPU, gloo collectives), each with
2 fake devices: `python multidevice_multihost.py PROCESS_ID PORT WORKDIR OUT.json [--config.K=V ...]`.
Trains the tiny config (4 steps unless overridden) through the CLI's distributed start-up and
writes this process's summary and process 0's per-step losses to OUT.json. JF_STEP_DELAY
(seconds) slows each step so a test can kill the run mid-way."""

import json
import os
import sys
import time

import jax

jax.config.update("jax_default_matmul_precision", "highest")

from jaxformer.tasks.pretrain import PretrainTask

HERE = os.path.dirname(os.path.abspath(__file__))


class UnevenSharesTask(PretrainTask):
    """The tiny synthetic MLM task, except that process i skips i batches of its share after
    each one it returns: the processes' data positions differ, as with real per-host shards,
    so a resume that gave every process process 0's position would train on other rows."""

    def train_iterator(self, batch_size, process_index, process_count):
        it = super().train_iterator(batch_size, process_index, process_count)
        return _Skipping(it, process_index)


class _Skipping:
    def __init__(self, it, skip):
        self.it, self.skip = it, skip

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        for _ in range(self.skip):
            next(self.it)
        return batch

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)

    def close(self):
        self.it.close()


def main(pid: int, port: int, workdir: str, out: str, extra: list[str]):
    from jaxformer.tasks import get_task
    from jaxformer.training import config_lib, distributed, loop, sharding

    delay = float(os.environ.get("JF_STEP_DELAY", "0"))
    if delay:
        to_global = sharding.to_global

        def slow(*args, **kwargs):
            time.sleep(delay)
            return to_global(*args, **kwargs)

        sharding.to_global = slow

    config, _, _ = config_lib.parse_args(
        [
            "--config",
            os.path.join(HERE, "training_tiny_config.py"),
            f"--config.distributed.coordinator_address=127.0.0.1:{port}",
            "--config.distributed.num_processes=2",
            f"--config.distributed.process_id={pid}",
            "--config.distributed.cpu_collectives=gloo",
            "--config.num_train_steps=4",
            "--config.checkpoint.every_steps=2",
            "--config.mesh.fsdp=2",
            *extra,
        ]
    )
    assert distributed.initialize(config.distributed)
    assert jax.process_count() == 2 and jax.device_count() == 4
    losses = []
    summary = loop.train(config, workdir, get_task, log=lambda s: None)
    with open(os.path.join(workdir, "metrics.jsonl")) if pid == 0 else open(os.devnull) as f:
        losses = [json.loads(l)["loss"] for l in f if '"loss"' in l]
    with open(out, "w") as f:
        json.dump(
            {
                "summary": summary,
                "losses": losses,
                "devices": jax.device_count(),
                "local": jax.local_device_count(),
            },
            f,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])
