"""Run with N fake CPU devices (argv[1]): a forward and backward pass of every model family
under a plain `jax.make_mesh` mesh (Explicit axes), bare and inside `sharding.use_mesh`,
against one device. Writes {family: {context: max |grad difference|}} as JSON to argv[2]."""

import functools
import json
import os
import sys

N = int(sys.argv[1])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={N}"

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxformer as jf
from jaxformer import sharding

jax.config.update("jax_default_matmul_precision", "highest")
kw = dict(vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
MODELS = {
    "bert": jf.EncoderModel(jf.bert_config("tiny", head="mlm", max_position_embeddings=16, **kw)),
    "albert": jf.EncoderModel(
        jf.albert_config("tiny", head="mlm", max_position_embeddings=16, embedding_size=16, **kw)
    ),
    "electra": jf.EncoderModel(
        jf.electra_config("tiny", head="rtd", max_position_embeddings=16, **kw)
    ),
    "roberta": jf.EncoderModel(
        jf.roberta_config("tiny", head="mlm", max_position_embeddings=20, **kw)
    ),
    "modernbert": jf.ModernBertModel(jf.modernbert_config("tiny", head="mlm", **kw)),
    "transformer": jf.Transformer(jf.transformer_config("nano", vocab_size=64)),
}
ids = np.random.default_rng(0).integers(5, 60, (2 * N, 8)).astype(np.int32)


def loss(model, params, batch):
    out = model.apply({"params": params}, **batch)
    return sum(jnp.mean(v.astype(jnp.float32) ** 2) for v in jax.tree.leaves(out))


mesh = jax.make_mesh((N,), ("data",))
report = {}
for name, model in MODELS.items():
    batch = {k: jnp.asarray(ids) for k in model.dummy_inputs(2 * N, 8)}
    if "attention_mask" in batch:
        batch["attention_mask"] = jnp.ones_like(batch["attention_mask"])
    params = nn.unbox(model.init(jax.random.key(0), **batch))["params"]
    grad = jax.grad(functools.partial(loss, model))
    want = jax.jit(grad)(params, batch)
    report[name] = {}
    for context in ("bare", "use_mesh"):
        with jax.set_mesh(mesh) if context == "bare" else sharding.use_mesh(mesh):
            b = jax.device_put(batch, NamedSharding(mesh, P("data")))
            got = jax.jit(grad)(params, b)
        report[name][context] = max(
            float(jnp.max(jnp.abs(a - w)))
            for a, w in zip(jax.tree.leaves(got), jax.tree.leaves(want))
        )
with open(sys.argv[2], "w") as f:
    json.dump(report, f)
