"""The README's research snippet, run with N fake CPU devices (argv[1]; set XLA_FLAGS before
jax is imported): a BERT encoder with a custom Flax head, trained with optax in our own loop,
once on one device, once data parallel under a plain `jax.make_mesh` mesh (Explicit axes) and
once under FSDP through `jaxformer.sharding`. Only public imports. Writes JSON to argv[2]."""

import json
import os
import sys

N = int(sys.argv[1])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={N}"

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxformer as jf
from jaxformer import objectives, sharding
from jaxformer.training import decay_mask

jax.config.update("jax_default_matmul_precision", "highest")


class Classifier(nn.Module):
    """A BERT encoder under our own name, with our own two-layer head."""

    cfg: jf.EncoderConfig
    num_labels: int = 3

    @nn.compact
    def __call__(self, input_ids, attention_mask):
        out = jf.Encoder(self.cfg, name="backbone")(input_ids, attention_mask)
        h = nn.Dense(16)(out.last_hidden_state[:, 0])
        return nn.Dense(self.num_labels)(nn.gelu(h))


cfg = jf.bert_config(
    "tiny", vocab_size=64, hidden_size=32, num_layers=2, num_heads=4,
    intermediate_size=64, max_position_embeddings=16,
)  # fmt: skip
model = Classifier(cfg)
rng = np.random.default_rng(0)
batch = {
    "input_ids": rng.integers(5, 64, (8, 12)).astype(np.int32),
    "attention_mask": np.ones((8, 12), np.int32),
    "labels": rng.integers(0, 3, (8,)).astype(np.int32),
}
batch["labels"] = (batch["input_ids"][:, 1] % 3).astype(np.int32)  # learnable
tx = optax.adamw(3e-3, weight_decay=0.01, mask=decay_mask)
boxed = model.init(jax.random.key(0), batch["input_ids"], batch["attention_mask"])


def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"])
    return objectives.cross_entropy_with_logits(logits, batch["labels"])[0].mean()


@jax.jit
def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def train(params, batch, steps=8):
    opt_state = tx.init(params)
    losses = []
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(float(loss))
    return losses, params


def worst_relative_diff(params, ref):
    """max over parameters of |a - b| / |b| (norms over each array) and its path. The
    attention key biases are left out: their gradient is exactly zero in exact arithmetic
    (softmax ignores a per-query constant), so they take Adam steps of rounding noise."""
    flat = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
    diffs = {
        jax.tree_util.keystr(k): float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))
        for (k, a), b in zip(flat, jax.tree.leaves(jax.device_get(ref)))
        if "['key']['bias']" not in jax.tree_util.keystr(k)
    }
    worst = max(diffs, key=diffs.get)
    return [worst, diffs[worst]]


report = {}
# One device.
ref_losses, ref_params = train(nn.unbox(boxed)["params"], batch)
report["single"] = {"losses": ref_losses}

# Data parallel under the idiomatic mesh: jax.make_mesh's axes are Explicit by default.
mesh = jax.make_mesh((N,), ("data",))
with jax.set_mesh(mesh):
    b = jax.device_put(batch, NamedSharding(mesh, P("data")))
    losses, params = train(nn.unbox(boxed)["params"], b)
report["dp_explicit"] = {
    "losses": losses,
    "axis_types": [str(t) for t in mesh.axis_types],
    "batch_spec": str(b["input_ids"].sharding.spec),
    "param_diff": worst_relative_diff(params, ref_params),
}

# FSDP through the public rules: parameters split over `fsdp`, the batch too.
mesh = sharding.make_mesh(data=1, fsdp=-1)
params = sharding.shard_params(boxed, mesh)["params"]
with sharding.use_mesh(mesh):
    b = jax.device_put(batch, sharding.batch_shardings(mesh, batch))
    losses, out = train(params, b)
emb = out["backbone"]["embeddings"]["word"]["embedding"]
report["fsdp"] = {
    "losses": losses,
    "embedding_spec": str(emb.sharding.spec),
    "embedding_shards": len({str(s.index) for s in emb.addressable_shards}),
    "param_diff": worst_relative_diff(out, ref_params),
}
with open(sys.argv[2], "w") as f:
    json.dump(report, f)
