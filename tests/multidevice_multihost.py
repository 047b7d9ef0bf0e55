"""One of two processes of a multi-host run on 127.0.0.1 (CPU, gloo collectives), each with
2 fake devices: `python multidevice_multihost.py PROCESS_ID PORT WORKDIR OUT.json [--config.K=V]`.
Trains the tiny config for a few steps through the CLI's distributed start-up and writes
this process's per-step losses to OUT.json. JF_STEP_DELAY (seconds) slows each step so that a
test can signal the run while it trains."""

import json
import os
import sys
import time

import jax

jax.config.update("jax_default_matmul_precision", "highest")

HERE = os.path.dirname(os.path.abspath(__file__))


def main(pid: int, port: int, workdir: str, out: str, extra: list):
    from jaxformer.training import config_lib, distributed, loop, sharding

    delay = float(os.environ.get("JF_STEP_DELAY", "0"))
    if delay:
        to_global = sharding.to_global
        sharding.to_global = lambda *a, **k: time.sleep(delay) or to_global(*a, **k)

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
        ]
        + extra
    )
    assert distributed.initialize(config.distributed)
    assert jax.process_count() == 2 and jax.device_count() == 4
    losses = []
    summary = loop.train(config, workdir, log=lambda s: None)
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
