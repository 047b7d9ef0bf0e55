"""Run with 8 fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8):
three training steps of a tiny BERT under DP 8x1x1, FSDP 1x8x1, TP 1x1x8, TP 2x1x4 and mix
2x2x2 against one device; writes a JSON report to argv[1] and, from the 2x2x2 run, a
checkpoint plus its params (npz) under argv[2] for the restore-on-1-device test."""

import json
import os
import sys

import jax
import numpy as np
from suite_env import configure_jax

configure_jax()

from jaxformer.models import bert_config
from jaxformer.training import checkpoint, optim, sharding as sh, state as state_lib
from jaxformer.training import step as step_lib
from jaxformer.training.defaults import base_config
from jaxformer.tasks import get_task


def config():
    model = bert_config(
        "tiny",
        head="mlm",
        vocab_size=128,
        hidden_size=64,
        num_layers=2,
        num_heads=8,
        intermediate_size=128,
        max_position_embeddings=16,
        dtype="float32",
    )
    c = base_config(model.to_dict())
    c.data.source, c.data.seq_len, c.data.max_predictions = "synthetic", 16, 4
    c.data.synthetic_examples = 256
    c.batch_size, c.num_train_steps = 16, 10
    c.optimizer.update(lr=1e-2, warmup_steps=2)
    return c


def run(mesh_sizes, devices, batches, cfg):
    task = get_task(cfg, "/tmp/unused")
    mesh = sh.make_mesh(mesh_sizes, devices)
    tx, sched = optim.make_optimizer(cfg.optimizer, cfg.num_train_steps)
    state, shardings, abstract = state_lib.create_state(task, tx, mesh, seed=0)
    fn, bsh = step_lib.compile_train_step(
        step_lib.make_train_step(task, tx, sched), shardings, batches[0], mesh
    )
    losses = []
    for b in batches:
        state, m = fn(state, sh.to_global(b, bsh, cfg.batch_size))
        losses.append(float(m["loss"]))
    return state, losses, mesh, abstract, shardings


def main(report_path, ckpt_dir):
    assert jax.device_count() == 8, jax.devices()
    cfg = config()
    it = get_task(cfg, "/tmp/unused").train_iterator(cfg.batch_size, 0, 1)
    batches = [next(it) for _ in range(3)]
    ref_state, ref_losses, _, _, _ = run({"data": 1}, jax.devices()[:1], batches, cfg)
    ref_params = jax.device_get(ref_state.params)
    report = {"reference": ref_losses, "runs": {}}
    for name, sizes in [
        ("dp", dict(data=8, fsdp=1, tensor=1)),
        ("fsdp", dict(data=1, fsdp=8, tensor=1)),
        ("tp", dict(data=1, fsdp=1, tensor=8)),
        ("mix", dict(data=2, fsdp=2, tensor=2)),
    ]:
        state, losses, mesh, abstract, shardings = run(sizes, None, batches, cfg)
        params = jax.device_get(state.params)
        # Per parameter: |a - b| / |b| (norms over the whole array).
        diffs = {
            jax.tree_util.keystr(k): float(np.linalg.norm(a - b) / (np.linalg.norm(b) + 1e-12))
            for (k, a), b in zip(
                jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(ref_params)
            )
        }
        elem = jax.tree.leaves(
            jax.tree.map(
                lambda a, b: float(np.max(np.abs(a - b) / (np.abs(b) + 1e-3))), params, ref_params
            )
        )
        p = state.params

        def spec(x):  # the spec with size-1 mesh axes dropped: what is really split
            out = []
            for e in tuple(x.sharding.spec) + (None,) * (x.ndim - len(x.sharding.spec)):
                names = [
                    n
                    for n in ((e,) if isinstance(e, str) else (e or ()))
                    if mesh.shape[n] > 1  # noqa: B023
                ]
                out.append(names[0] if len(names) == 1 else (tuple(names) or None))
            return out

        att = p["encoder"]["attention_0"]["attention"]
        specs = {
            "word": spec(p["encoder"]["embeddings"]["word"]["embedding"]),
            "query": spec(att["query"]["kernel"]),
            "out": spec(att["out"]["kernel"]),
            "wi": spec(p["encoder"]["mlp_0"]["mlp"]["wi"]["kernel"]),
            "norm": spec(p["encoder"]["attention_0"]["norm"]["scale"]),
            "mu_wi": None,
        }
        mu = state.opt_state[1][0].mu["encoder"]["mlp_0"]["mlp"]["wi"]["kernel"]
        specs["mu_wi"] = spec(mu)
        shard_shape = list(
            p["encoder"]["mlp_0"]["mlp"]["wi"]["kernel"].addressable_shards[0].data.shape
        )
        report["runs"][name] = {
            "losses": losses,
            "param_diffs": diffs,
            "max_elementwise_diff": max(elem),
            "specs": specs,
            "wi_shard_shape": shard_shape,
            "mesh": dict(mesh.shape),
        }
        if name == "mix":
            ck = checkpoint.Checkpointer(ckpt_dir, every_steps=1, keep=1, async_save=True)
            ck.save(state, {"pos": 3}, wait=True)
            ck.close()
            np.savez(
                os.path.join(ckpt_dir, "params.npz"),
                **{
                    jax.tree_util.keystr(k): v
                    for k, v in jax.tree_util.tree_flatten_with_path(params)[0]
                },
            )
    with open(report_path, "w") as f:
        json.dump(report, f, default=lambda x: list(x) if isinstance(x, tuple) else str(x))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
