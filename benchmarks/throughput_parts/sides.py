"""The timed sides: ours (the training system's train step, the jit'd forward pass), the
CPU matmul reference, and transformers in PyTorch as the peer."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from throughput_parts.data import ENCODERS
from throughput_parts.tasks import seq2seq_model

OPTIMIZER = {
    "name": "adamw",
    "lr": 1e-4,
    "schedule": "constant",
    "warmup_steps": 0,
    "end_lr": 0.0,
    "weight_decay": 0.01,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-6,
    "clip_norm": 1.0,
}


class Side:
    """One thing being timed. `build()` -> compile (or first-step) seconds; `step()` runs
    one synchronised step."""

    name = "?"
    flops_per_token = 0.0  # FLOPs actually computed per token
    extra: dict = {}

    def build(self) -> float:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError


class JaxTrain(Side):
    """The training system's sharded, jit-compiled train step (`jaxformer.training.step`):
    float32 master weights, AdamW, dropout on, state donated."""

    def __init__(self, name, task, batch, mesh_sizes, donate=True):
        self.name, self.task, self.batch_np = name, task, batch
        self.mesh_sizes, self.donate = mesh_sizes, donate

    def build(self):
        from jaxformer.training import optim, sharding as sh, state as state_lib
        from jaxformer.training import step as step_lib

        tx, _ = optim.make_optimizer(OPTIMIZER, total_steps=10_000)
        self.mesh = sh.make_mesh(dict(zip(sh.MESH_AXES, self.mesh_sizes)))
        self.state, state_sh, _ = state_lib.create_state(self.task, tx, self.mesh)
        self.n_params = sum(x.size for x in jax.tree.leaves(self.state.params))
        fn = step_lib.make_train_step(self.task, tx)
        if self.donate:
            jitted, batch_sh = step_lib.compile_train_step(fn, state_sh, self.batch_np, self.mesh)
        else:  # the same jit as compile_train_step, without donating the state
            batch_sh = sh.batch_shardings(self.mesh, self.batch_np)
            jitted = step_lib._with_context(
                jax.jit(
                    fn,
                    in_shardings=(state_sh, batch_sh),
                    out_shardings=(state_sh, state_lib.replicated(self.mesh)),
                ),
                self.mesh,
                sh.RULES,
            )
        self.batch = jax.device_put(self.batch_np, batch_sh)
        t0 = time.perf_counter()
        self.compiled = jitted.lower(self.state, self.batch).compile()
        compile_s = time.perf_counter() - t0
        self.extra = {"xla_buffers_bytes": _xla_bytes(self.compiled)}
        return compile_s

    def step(self):
        self.state, metrics = self.compiled(self.state, self.batch)
        jax.block_until_ready(metrics)
        self.last_loss = float(metrics["loss"])


class JaxInfer(Side):
    """jit'd forward pass: the encoder's last hidden state (BERT) or the seq2seq logits."""

    def __init__(self, name, kind, cfg, batch):
        self.name, self.kind, self.cfg, self.batch_np = name, kind, cfg, batch

    def build(self):
        if self.kind in ENCODERS:
            from jaxformer.models import encoder_model

            model = encoder_model(self.cfg)
            keys = ("input_ids", "attention_mask", "token_type_ids") + tuple(
                k for k in ("segment_ids", "position_ids") if k in self.batch_np
            )

            def fwd(params, b):  # packed rows carry segment ids and restarting positions
                return model.apply(
                    {"params": params},
                    b["input_ids"],
                    attention_mask=b["attention_mask"],
                    token_type_ids=b["token_type_ids"],
                    segment_ids=b.get("segment_ids"),
                    position_ids=b.get("position_ids"),
                ).last_hidden_state

            init_in = {"input_ids": jnp.zeros((1, self.batch_np["input_ids"].shape[1]), jnp.int32)}
        else:
            model = seq2seq_model(self.kind, self.cfg)
            keys = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")

            def fwd(params, b):
                return model.apply(
                    {"params": params},
                    b["input_ids"],
                    b["attention_mask"],
                    b["decoder_input_ids"],
                    b["decoder_attention_mask"],
                ).logits

            ids = jnp.zeros((1, self.batch_np["input_ids"].shape[1]), jnp.int32)
            init_in = {
                "input_ids": ids,
                "attention_mask": jnp.ones_like(ids),
                "decoder_input_ids": ids,
            }
        import flax.linen as nn

        self.params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), **init_in)["params"])
        self.n_params = sum(x.size for x in jax.tree.leaves(self.params))
        self.batch = jax.device_put({k: self.batch_np[k] for k in keys})
        t0 = time.perf_counter()
        self.compiled = jax.jit(fwd).lower(self.params, self.batch).compile()
        compile_s = time.perf_counter() - t0
        self.extra = {"xla_buffers_bytes": _xla_bytes(self.compiled)}
        return compile_s

    def step(self):
        self.compiled(self.params, self.batch).block_until_ready()


class MatmulSide(Side):
    """The CPU MFU reference: one n^3 float32 `jnp.dot` per step, timed in the same rounds
    as the model sides so that it sees the same load."""

    def __init__(self, n):
        self.name, self.n = f"matmul {n}^3 f32", n

    def build(self):
        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        self.a = jax.random.normal(k1, (self.n, self.n), jnp.float32)
        self.b = jax.random.normal(k2, (self.n, self.n), jnp.float32)
        self.f = jax.jit(jnp.dot)
        self.f(self.a, self.b).block_until_ready()
        return 0.0

    def step(self):
        self.f(self.a, self.b).block_until_ready()


def _xla_bytes(compiled):
    """Arguments + outputs + temporaries of XLA's buffer plan (aliased outputs not double
    counted): what the step needs resident, independent of other processes."""
    try:
        m = compiled.memory_analysis()
        return int(
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            - m.alias_size_in_bytes
            + m.temp_size_in_bytes
        )
    except Exception:
        return None


# -- peers: transformers in PyTorch --------------------------------------------------------
def hf_seq2seq_model(kind: str, cfg):
    """transformers' model of the same shape as our encoder-decoder, built from the config
    our converters write (`MarianMTModel` for the Transformer, `T5ForConditionalGeneration`
    for T5); random weights, train mode."""
    import transformers

    if kind == "t5":
        return transformers.T5ForConditionalGeneration(transformers.T5Config(**cfg.to_hf()))
    from jaxformer.convert.marian import marian_config_dict

    return transformers.MarianMTModel(transformers.MarianConfig(**marian_config_dict(cfg)))


class TorchSide(Side):
    """`transformers` in PyTorch, eager or `torch.compile`, on the same device as JAX."""

    def __init__(self, name, kind, cfg, batch, mode, dtype, compile_model=False, threads=None):
        self.name, self.kind, self.cfg, self.batch_np = name, kind, cfg, batch
        self.mode, self.dtype, self.compile_model = mode, dtype, compile_model
        self.threads = threads  # intra-op threads; None = torch's default (all cores)

    def build(self):
        import torch

        torch.manual_seed(0)
        self.default_threads = torch.get_num_threads()
        dev = "cuda" if torch.cuda.is_available() and jax.default_backend() == "gpu" else "cpu"
        self.torch, self.dev = torch, dev
        if self.kind == "bert":
            from transformers import BertConfig, BertForMaskedLM, BertModel

            c = self.cfg
            hf = BertConfig(
                vocab_size=c.vocab_size,
                hidden_size=c.hidden_size,
                num_hidden_layers=c.num_layers,
                num_attention_heads=c.num_heads,
                intermediate_size=c.intermediate_size,
                hidden_act="gelu",
                max_position_embeddings=c.max_position_embeddings,
                hidden_dropout_prob=c.hidden_dropout,
                attention_probs_dropout_prob=c.attention_dropout,
            )
            model = BertForMaskedLM(hf) if self.mode == "train" else BertModel(hf)
            keys = ("input_ids", "attention_mask", "token_type_ids") + (
                ("labels",) if self.mode == "train" else ()
            )
        elif self.kind == "modernbert":
            from transformers import ModernBertConfig, ModernBertForMaskedLM, ModernBertModel

            from jaxformer.convert.modernbert import hf_config_from_modernbert

            fields = hf_config_from_modernbert(self.cfg)
            for k in ("architectures", "dtype", "id2label", "label2id"):
                fields.pop(k)
            hf = ModernBertConfig(**fields)
            model = ModernBertForMaskedLM(hf) if self.mode == "train" else ModernBertModel(hf)
            keys = ("input_ids", "attention_mask") + (("labels",) if self.mode == "train" else ())
        else:
            model = hf_seq2seq_model(self.kind, self.cfg)
            keys = (
                "input_ids",
                "attention_mask",
                "decoder_input_ids",
                "decoder_attention_mask",
            ) + (("labels",) if self.mode == "train" else ())
        self.n_params = sum(p.numel() for p in model.parameters())
        model.to(dev)
        self.batch = {k: torch.as_tensor(np.asarray(self.batch_np[k])).long().to(dev) for k in keys}
        if self.mode == "train":
            model.train()
            decay = [
                p
                for n, p in model.named_parameters()
                if not ("bias" in n or "LayerNorm" in n or "layer_norm" in n)
            ]
            rest = [
                p
                for n, p in model.named_parameters()
                if "bias" in n or "LayerNorm" in n or "layer_norm" in n
            ]
            self.opt = torch.optim.AdamW(
                [
                    {"params": decay, "weight_decay": OPTIMIZER["weight_decay"]},
                    {"params": rest, "weight_decay": 0.0},
                ],
                lr=OPTIMIZER["lr"],
                betas=(OPTIMIZER["b1"], OPTIMIZER["b2"]),
                eps=OPTIMIZER["eps"],
            )
        else:
            model.eval()
        self.model = model
        self.fwd = torch.compile(model) if self.compile_model else model
        t0 = time.perf_counter()
        self.step()  # eager: the first step; compile: tracing + codegen
        return time.perf_counter() - t0

    def _autocast(self):
        import contextlib

        if self.dtype == "float32":
            return contextlib.nullcontext()
        return self.torch.autocast(self.dev, dtype=self.torch.bfloat16)

    def step(self):
        torch = self.torch
        want = self.threads or self.default_threads
        if torch.get_num_threads() != want:  # the thread count is per process
            torch.set_num_threads(want)
        if self.mode == "train":
            with self._autocast():
                loss = self.fwd(**self.batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), OPTIMIZER["clip_norm"])
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            self.last_loss = float(loss.detach())
        else:
            with torch.inference_mode(), self._autocast():
                out = self.fwd(**self.batch)
            (
                out.last_hidden_state if self.kind in ENCODERS else out.logits
            ).sum().item() if self.dev == "cpu" else None
        if self.dev == "cuda":
            torch.cuda.synchronize()
