"""Training / inference throughput of jaxformer beside `transformers` (PyTorch), in one run.

    python benchmarks/throughput.py --model bert-base --seq 128 --batch 8 --mode train \
        --peers torch [--equal-work] [--steps 5] [--json out.json]

Every side is built and warmed up first; then the timed steps are interleaved in blocks
(ours `--block` steps, each peer `--block` steps, repeat) so that load drift on a shared
machine hits all sides alike. Each step is synchronised (`block_until_ready`, or
`torch.cuda.synchronize`). Reported per side: step time median and IQR, tokens/s, sequences/s,
compile (or first-step) time, peak memory (device memory stats on GPU/TPU; the process RSS
during that side's steps on CPU, plus XLA's own buffer plan for ours), model FLOPs per token
(`jaxformer.benchmarking`), achieved FLOP/s and MFU: against the bf16 peak table on
accelerators, against a 2048^3 float32 `jnp.dot` measured in this run on CPU.

Models: `bert-<size>` (tiny mini small medium base large; mini is H=256 L=4),
`modernbert-<size>` (tiny mini base large; peer: ModernBertForMaskedLM / ModernBertModel
with transformers' default attention) and `transformer-<size>` (nano tiny small base big;
peer: MarianMTModel of the same shape).
Train mode is an MLM step (AdamW, clip 1.0, dropout on) for BERT and a teacher-forced
cross-entropy step for the encoder-decoder; infer mode is the forward pass (the encoder for
BERT, encoder + teacher-forced decoder for the encoder-decoder).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# On a GPU, JAX would otherwise take 75% of its memory up front and starve the torch peer;
# peak_bytes_in_use still reports what our step actually used.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax
import jax.numpy as jnp

from jaxformer import benchmarking as B
from jaxformer.training.task import Task

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
ENCODERS = ("bert", "modernbert")  # model kinds fed MLM batches (`bert_batch`)
SPECIAL = 5  # ids 0..4 are pad unk cls sep mask in our tokenizers; data ids start after them
MASK_ID = 4


# -- configs and data ----------------------------------------------------------------------
def model_config(args):
    """(kind, config) for `--model`."""
    from jaxformer.models import bert_config

    family, _, size = args.model.partition("-")
    dtype = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32"}[
        args.dtype
    ]
    if family == "bert":
        head = "mlm" if args.mode == "train" else None
        # BertForMaskedLM has no pooler; the plain encoder (BertModel) has one.
        drop = (
            {}
            if args.dropout is None
            else dict(hidden_dropout=args.dropout, attention_dropout=args.dropout)
        )
        cfg = bert_config(
            size,
            head=head,
            with_pooler=head is None,
            dtype=dtype,
            **drop,
            attention_kernel=args.attention,
            remat_policy=args.remat,
            scan_layers=args.scan,
            sparse_last_layer=args.sparse_last,
        )
        return "bert", cfg
    if family == "modernbert":
        from jaxformer.models import modernbert_config

        drop = {} if args.dropout is None else dict(attention_dropout=args.dropout)
        cfg = modernbert_config(
            size,
            head="mlm" if args.mode == "train" else None,
            dtype=dtype,
            **drop,
            attention_kernel=args.attention,
            remat_policy=args.remat,
        )
        return "modernbert", cfg
    if family == "transformer":
        from jaxformer.models.seq2seq_configs import transformer_config

        # Marian's shape: shared vocab, tied output, sinusoidal positions; swish as Marian.
        drop = {} if args.dropout is None else dict(dropout=args.dropout)
        cfg = transformer_config(
            size,
            vocab_size=args.vocab or 32000,
            dtype=dtype,
            **drop,
            attention_kernel=args.attention,
            activation="swish",
            remat_policy=args.remat,
            position_layout="halves",
            max_len=max(512, args.seq),
        )
        return "transformer", cfg
    raise SystemExit(
        f"unknown --model {args.model!r}; use bert-<size>, modernbert-<size> or transformer-<size>."
    )


def predictions_per_row(seq: int) -> int:
    """BERT's budget: 20 predictions per 128 tokens (80 at 512)."""
    return max(1, math.ceil(seq * 20 / 128))


def bert_batch(cfg, batch: int, seq: int, seed: int = 0) -> dict:
    """Full-length rows, ~15% of positions masked (80% [MASK]), as our data pipeline emits
    them (gathered `mlm_positions`/`mlm_ids`/`mlm_weights`) plus HF's dense `labels`."""
    rng = np.random.default_rng(seed)
    p = predictions_per_row(seq)
    ids = rng.integers(SPECIAL, cfg.vocab_size, (batch, seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    n_pred = min(p, max(1, round(0.15 * (seq - 2))))
    pos = np.zeros((batch, p), np.int32)
    w = np.zeros((batch, p), np.float32)
    for r in range(batch):
        pos[r, :n_pred] = np.sort(rng.choice(np.arange(1, seq - 1), n_pred, replace=False))
        w[r, :n_pred] = 1.0
    mlm_ids = np.take_along_axis(ids, pos, 1) * (w > 0)
    labels = np.full((batch, seq), -100, np.int64)
    for r in range(batch):
        labels[r, pos[r, :n_pred]] = mlm_ids[r, :n_pred]
    masked = ids.copy()
    for r in range(batch):
        sel = pos[r, :n_pred][rng.random(n_pred) < 0.8]
        masked[r, sel] = MASK_ID
    return {
        "input_ids": masked,
        "attention_mask": np.ones((batch, seq), np.int32),
        "token_type_ids": np.zeros((batch, seq), np.int32),
        "mlm_positions": pos,
        "mlm_ids": mlm_ids.astype(np.int32),
        "mlm_weights": w,
        "labels": labels,
    }


def variable_length_batches(cfg, batch: int, seq: int, lo: int, seed: int = 0):
    """Examples of lengths uniform in [lo, seq], masked like `bert_batch`: (padded batch, a
    row per example; packed batch, rows filled by `jaxformer.data.packing.Packer` from a
    larger pool; padding fraction of each)."""
    from jaxformer.data.packing import Packer

    rng = np.random.default_rng(seed)
    p = predictions_per_row(seq)
    full = bert_batch(cfg, batch * 4, seq, seed)
    lengths = rng.integers(lo, seq + 1, batch * 4)
    examples = []
    for r, n in enumerate(lengths):
        ids = full["input_ids"][r, :n].copy()
        ids[-1] = 3
        k = min(p, max(1, round(0.15 * (n - 2))))
        pos = np.sort(rng.choice(np.arange(1, n - 1), k, replace=False)).astype(np.int32)
        examples.append(
            {
                "input_ids": ids,
                "token_type_ids": np.zeros(n, np.int32),
                "mlm_positions": pos,
                "mlm_ids": ids[pos].copy(),
                "mlm_weights": np.ones(k, np.float32),
            }
        )

    def pad(ex):
        n = len(ex["input_ids"])
        z = lambda a, size, dt: np.concatenate([a, np.zeros(size - len(a), dt)])
        return {
            "input_ids": z(ex["input_ids"], seq, np.int32),
            "attention_mask": z(np.ones(n, np.int32), seq, np.int32),
            "token_type_ids": np.zeros(seq, np.int32),
            "mlm_positions": z(ex["mlm_positions"], p, np.int32),
            "mlm_ids": z(ex["mlm_ids"], p, np.int32),
            "mlm_weights": z(ex["mlm_weights"], p, np.float32),
        }

    stack = lambda rows: {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    padded = stack([pad(e) for e in examples[:batch]])
    packer = Packer(seq, 0, max_predictions=p)
    plan = packer.plan(
        [len(e["input_ids"]) for e in examples], [len(e["mlm_positions"]) for e in examples]
    )[:batch]
    packed = stack([packer([examples[i] for i in row]) for row in plan])
    fill = lambda b: float(b["attention_mask"].mean())
    return padded, packed, 1 - fill(padded), 1 - fill(packed)


def _dense_labels(b: dict, seq: int) -> np.ndarray:
    labels = np.full(b["input_ids"].shape, -100, np.int64)
    for r in range(labels.shape[0]):
        real = b["mlm_weights"][r] > 0
        labels[r, b["mlm_positions"][r][real]] = b["mlm_ids"][r][real]
    return labels


def equal_work_batch(b: dict) -> dict:
    """The same batch with the MLM head at every position (weights still only on the masked
    ones), i.e. the work a model that scores every position does."""
    bsz, seq = b["input_ids"].shape
    labels = b["labels"]
    return dict(
        b,
        mlm_positions=np.broadcast_to(np.arange(seq, dtype=np.int32), (bsz, seq)).copy(),
        mlm_ids=np.where(labels >= 0, labels, 0).astype(np.int32),
        mlm_weights=(labels >= 0).astype(np.float32),
    )


def seq2seq_batch(cfg, batch: int, seq: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    v = cfg.tgt_vocab_size
    src = rng.integers(SPECIAL, cfg.vocab_size, (batch, seq)).astype(np.int32)
    tgt = rng.integers(SPECIAL, v, (batch, seq)).astype(np.int32)
    src[:, -1], tgt[:, -1] = cfg.eos_token_id, cfg.eos_token_id
    dec_in = np.concatenate(
        [np.full((batch, 1), cfg.decoder_start_token_id, np.int32), tgt[:, :-1]], 1
    )
    ones = np.ones((batch, seq), np.int32)
    return {
        "input_ids": src,
        "attention_mask": ones,
        "decoder_input_ids": dec_in,
        "decoder_attention_mask": ones,
        "labels": tgt,
    }


# -- our sides -----------------------------------------------------------------------------
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


class _SimpleTask(Task):
    """The training system's task interface for a model + loss (used for the seq2seq step,
    and for BERT when `--step own`)."""

    def __init__(self, model, init_inputs, loss):
        self.model, self._init_inputs, self._loss = model, init_inputs, loss

    def init_params(self, rng):
        p, d = jax.random.split(rng)
        return self.model.init({"params": p, "dropout": d}, **self._init_inputs)["params"]

    def normalizers(self, batch):
        return {}

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        return self._loss(params, batch, rng, deterministic)


def bert_task(cfg, seq: int, predictions: int, which: str):
    """The training system's PretrainTask (what `train.py` runs), or `_SimpleTask` with the
    same loss when `which == "own"` or the training package is unavailable."""
    if which == "system":
        try:
            from jaxformer.training.defaults import base_config
            from jaxformer.tasks.pretrain import PretrainTask

            conf = base_config(cfg.to_dict(), task="pretrain")
            conf.data.update(
                seq_len=seq, objective="none", label_smoothing=0.0, max_predictions=predictions
            )
            return PretrainTask(conf, "/tmp/jaxformer_bench"), "tasks.pretrain.PretrainTask"
        except ImportError as e:  # pragma: no cover
            print(f"[throughput] training system unavailable ({e}); using own task")
    from jaxformer.models import encoder_model
    from jaxformer.objectives import losses

    model = encoder_model(cfg)

    def loss(params, batch, rng, deterministic):
        out = model.apply(
            {"params": params},
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            mlm_positions=batch["mlm_positions"],
            deterministic=deterministic,
            segment_ids=batch.get("segment_ids"),
            position_ids=batch.get("position_ids"),
            rngs={"dropout": rng},
        )
        return losses.weighted_cross_entropy(out.mlm_logits, batch["mlm_ids"], batch["mlm_weights"])

    return _SimpleTask(model, {"input_ids": jnp.zeros((1, seq), jnp.int32)}, loss), "own"


def seq2seq_task(cfg, seq: int):
    from jaxformer.models.transformer import Transformer
    from jaxformer.objectives import losses

    model = Transformer(cfg)

    def loss(params, batch, rng, deterministic):
        out = model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            batch["decoder_input_ids"],
            batch["decoder_attention_mask"],
            deterministic=deterministic,
            rngs={"dropout": rng},
        )
        return losses.weighted_cross_entropy(
            out.logits, batch["labels"], batch["decoder_attention_mask"]
        )

    ids = jnp.zeros((1, seq), jnp.int32)
    init = {"input_ids": ids, "attention_mask": jnp.ones_like(ids), "decoder_input_ids": ids}
    return _SimpleTask(model, init, loss)


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
            from jaxformer.models.transformer import Transformer

            model = Transformer(self.cfg)
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
            from transformers import MarianConfig, MarianMTModel

            c = self.cfg
            hf = MarianConfig(
                vocab_size=c.vocab_size,
                d_model=c.d_model,
                encoder_layers=c.num_encoder_layers,
                decoder_layers=c.num_decoder_layers,
                encoder_attention_heads=c.num_heads,
                decoder_attention_heads=c.num_heads,
                encoder_ffn_dim=c.d_ff,
                decoder_ffn_dim=c.d_ff,
                activation_function="swish",
                dropout=c.dropout,
                max_position_embeddings=c.max_len,
                pad_token_id=c.pad_token_id,
                eos_token_id=c.eos_token_id,
                decoder_start_token_id=c.decoder_start_token_id,
                scale_embedding=True,
            )
            model = MarianMTModel(hf)
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


# -- driver --------------------------------------------------------------------------------
def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    versions = {}
    for mod in ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    info["versions"] = versions
    return info


def build_sides(args):
    kind, cfg = model_config(args)
    mesh = tuple(int(x) for x in args.mesh.split(","))
    sides = []
    b_tokens = args.batch * args.seq
    if kind in ENCODERS:
        batch = bert_batch(cfg, args.batch, args.seq, args.seed)
        p = predictions_per_row(args.seq)
        useful = B.encoder_flops(cfg, args.seq, args.mode, p if args.mode == "train" else None)
        equal = B.encoder_flops(
            cfg, args.seq, args.mode, args.seq if args.mode == "train" else None
        )
        if args.lengths != "full":
            # Padding vs packing: the same examples, a row each or packed; tokens/s counts
            # real tokens only. PretrainTask does not pass segment ids, so both use ours.
            lo = int(args.lengths.split(":")[1])
            padded, packed, f_pad, f_pack = variable_length_batches(
                cfg, args.batch, args.seq, lo, args.seed
            )
            batch = dict(padded, labels=_dense_labels(padded, args.seq))
            if args.mode == "train":
                task, which = bert_task(cfg, args.seq, p, "own")
                side = lambda name, b: JaxTrain(name, task, b, mesh, not args.no_donate)
            else:
                side = lambda name, b: JaxInfer(name, kind, cfg, b)
            ours = side("jaxformer (padded)", padded)
            ours.tokens, ours.extra_meta = (
                int(padded["attention_mask"].sum()),
                {"padding_fraction": f_pad},
            )
            sides.append(ours)
            if args.pack:
                s = side("jaxformer (packed)", packed)
                s.tokens, s.extra_meta = (
                    int(packed["attention_mask"].sum()),
                    {"padding_fraction": f_pack},
                )
                sides.append(s)
            for s in sides:
                s.flops_per_token = useful["total"] * b_tokens / s.tokens
        elif args.mode == "train":
            task, which = bert_task(cfg, args.seq, p, args.step)
            ours = JaxTrain(
                "jaxformer",
                task,
                {k: v for k, v in batch.items() if k != "labels"},
                mesh,
                donate=not args.no_donate,
            )
            ours.flops_per_token, ours.extra_meta = useful["total"], {"task": which}
            sides.append(ours)
            if args.equal_work:
                eq_task, _ = bert_task(cfg, args.seq, args.seq, args.step)
                eb = equal_work_batch(batch)
                s = JaxTrain(
                    "jaxformer (equal work)",
                    eq_task,
                    {k: v for k, v in eb.items() if k != "labels"},
                    mesh,
                    donate=not args.no_donate,
                )
                s.flops_per_token = equal["total"]
                sides.append(s)
        else:
            ours = JaxInfer("jaxformer", kind, cfg, batch)
            ours.flops_per_token = useful["total"]
            sides.append(ours)
        flops = {"useful": useful, "equal_work": equal, "predictions_per_row": p}
    else:
        batch = seq2seq_batch(cfg, args.batch, args.seq, args.seed)
        per_row = B.transformer_flops(cfg, args.seq, args.seq, args.mode)
        b_tokens = 2 * args.batch * args.seq  # source + target tokens
        per_tok = {k: v / (2 * args.seq) for k, v in per_row.items()}
        if args.mode == "train":
            ours = JaxTrain(
                "jaxformer", seq2seq_task(cfg, args.seq), batch, mesh, donate=not args.no_donate
            )
        else:
            ours = JaxInfer("jaxformer", kind, cfg, batch)
        ours.flops_per_token = per_tok["total"]
        sides.append(ours)
        flops = {"useful": per_tok, "equal_work": per_tok}
    names = {
        "torch": "transformers (torch eager)",
        "torch-1t": "transformers (eager, 1 thread)",
        "torch-compile": "transformers (torch.compile)",
    }
    for peer in [p for p in args.peers.split(",") if p]:
        if peer not in names:
            raise SystemExit(f"unknown peer {peer!r}; use {', '.join(names)}.")
        s = TorchSide(
            names[peer],
            kind,
            cfg,
            batch,
            args.mode,
            cfg.dtype,
            compile_model=peer == "torch-compile",
            threads=1 if peer == "torch-1t" else None,
        )
        s.flops_per_token = flops["equal_work"]["total"]
        if args.lengths != "full":
            s.tokens = sides[0].tokens
            s.flops_per_token = (
                sides[0].flops_per_token * flops["equal_work"]["total"] / flops["useful"]["total"]
            )
        sides.append(s)
    return kind, cfg, sides, b_tokens, flops


COMPARE = {
    "remat": str,
    "scan": lambda v: v in ("1", "true", "on"),
    "dtype": str,
    "attention": str,
    "dropout": float,
    "no_donate": lambda v: v in ("1", "true", "on"),
    "sparse_last": lambda v: v in ("1", "true", "on"),
}


def compare_sides(args):
    """`--compare remat=none,full`: one side of ours per value, everything else equal; the
    `--peers` run once, beside them, with the first value."""
    key, _, values = args.compare.partition("=")
    if key not in COMPARE:
        raise SystemExit(f"--compare: unknown key {key!r}; use one of {list(COMPARE)}.")
    sides, first, peers = [], None, []
    for v in values.split(","):
        a = argparse.Namespace(
            **{
                **vars(args),
                key: COMPARE[key](v),
                "compare": None,
                "peers": "",
                "equal_work": False,
            }
        )
        if first is None:
            a.peers = args.peers
        kind, cfg, ss, tokens, flops = build_sides(a)
        ss[0].name = f"jaxformer ({key}={v})"
        sides.append(ss[0])
        peers = peers if first else ss[1:]
        first = first or (kind, cfg, tokens, flops)
    kind, cfg, tokens, flops = first
    return kind, cfg, sides + peers, tokens, flops


def run_decode(args) -> dict:
    """Greedy and beam-4 decoding of the encoder-decoder (KV cache on), ours through
    `benchmarks/decoding.py`'s timer, beside `MarianMTModel.generate` of the same shape.
    EOS is suppressed on both sides so every call decodes exactly `--seq` positions;
    the sides alternate per repeat. tokens/s = batch x seq / seconds (best of repeats)."""
    import flax.linen as nn
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from decoding import bench as jax_decode  # the inference engineer's timer
    from jaxformer.models.transformer import Transformer

    kind, cfg = model_config(args)
    if kind != "transformer":
        raise SystemExit("--mode decode is for transformer-<size>.")
    cfg = cfg.replace(final_logits_bias=True)
    src_len, n = max(8, args.seq // 2), args.seq
    model = Transformer(cfg)
    rs = np.random.RandomState(args.seed)
    ids = rs.randint(SPECIAL, cfg.vocab_size, (args.batch, src_len)).astype(np.int32)
    mask = np.ones_like(ids)
    params = nn.unbox(
        jax.jit(model.init)(jax.random.PRNGKey(0), ids[:1], mask[:1], ids[:1])["params"]
    )
    params["final_logits_bias"] = params["final_logits_bias"].at[cfg.eos_token_id].set(-1e9)
    from transformers import MarianConfig, MarianMTModel

    hf = MarianMTModel(
        MarianConfig(
            vocab_size=cfg.vocab_size,
            d_model=cfg.d_model,
            encoder_layers=cfg.num_encoder_layers,
            decoder_layers=cfg.num_decoder_layers,
            encoder_attention_heads=cfg.num_heads,
            decoder_attention_heads=cfg.num_heads,
            encoder_ffn_dim=cfg.d_ff,
            decoder_ffn_dim=cfg.d_ff,
            activation_function="swish",
            max_position_embeddings=cfg.max_len,
            pad_token_id=cfg.pad_token_id,
            eos_token_id=cfg.eos_token_id,
            decoder_start_token_id=cfg.decoder_start_token_id,
            scale_embedding=True,
        )
    ).eval()
    tids, tmask = torch.as_tensor(ids).long(), torch.as_tensor(mask).long()
    rows = []
    for beams in (1, 4):
        kw = dict(max_length=n, num_beams=beams, use_cache=True)
        ours_s, torch_times = float("inf"), {}
        for _ in range(args.steps):
            # bench(): one untimed call (compiles the first time), then one timed call.
            ours_s = min(ours_s, jax_decode(model, params, ids, mask, 1, **kw))
            for label, th in (("torch eager", None), ("eager, 1 thread", 1)):
                torch.set_num_threads(th or peer_threads())
                t0 = time.perf_counter()
                with torch.inference_mode():
                    hf.generate(
                        tids,
                        attention_mask=tmask,
                        max_new_tokens=n,
                        min_new_tokens=n,
                        num_beams=beams,
                        do_sample=False,
                        early_stopping=False,
                    )
                torch_times.setdefault(label, []).append(time.perf_counter() - t0)
        torch.set_num_threads(peer_threads())
        name = "greedy" if beams == 1 else f"beam{beams}"
        row = {"strategy": name, "jaxformer_tokens_per_s": args.batch * n / ours_s}
        for label, ts in torch_times.items():
            row[f"transformers ({label})_tokens_per_s"] = args.batch * n / min(ts)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
        "args": vars(args),
        "config": cfg.to_dict(),
        "decode": rows,
    }


_DEFAULT_THREADS = []


def peer_threads() -> int:
    import torch

    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(torch.get_num_threads())
    return _DEFAULT_THREADS[0]


def run(args) -> dict:
    if args.compare:
        kind, cfg, sides, tokens_per_step, flops = compare_sides(args)
    else:
        kind, cfg, sides, tokens_per_step, flops = build_sides(args)
    backend = jax.default_backend()
    dev = jax.devices()[0]
    matmul = [B.matmul_rate(args.matmul_n)] if backend == "cpu" else []
    peak = None if backend == "cpu" else B.device_peak_tflops(dev.device_kind)
    mm_side = MatmulSide(args.matmul_n) if backend == "cpu" else None
    built = []
    for s in sides + ([mm_side] if mm_side else []):
        print(f"[throughput] building {s.name} ...", flush=True)
        try:
            s.compile_s = s.build()
            for _ in range(args.warmup):
                s.step()
            s.times, s.rss_peak = [], 0
            built.append(s)
        except Exception as e:
            if s is sides[0]:
                raise
            print(f"[throughput] {s.name} failed: {type(e).__name__}: {str(e)[:300]}")
            s.error = f"{type(e).__name__}: {str(e)[:300]}"
    rounds = math.ceil(args.steps / args.block)
    for r in range(rounds):
        for s in built:
            n = min(args.block, args.steps - r * args.block)
            sampler = B.RSSSampler() if backend == "cpu" else None
            if sampler:
                sampler.__enter__()
            for _ in range(n):
                t0 = time.perf_counter()
                s.step()
                s.times.append(time.perf_counter() - t0)
            if sampler:
                sampler.__exit__(None, None, None)
                s.rss_peak = max(s.rss_peak, sampler.peak)
        print(
            f"[throughput] round {r + 1}/{rounds}: "
            + ", ".join(f"{s.name} {s.times[-1] * 1e3:.0f} ms" for s in built),
            flush=True,
        )
    if backend == "cpu":
        matmul.append(B.matmul_rate(args.matmul_n))
    interleaved = None
    if mm_side is not None:
        interleaved = 2.0 * args.matmul_n**3 / float(np.median(mm_side.times))
    ref_rate = interleaved or (peak * 1e12 if peak else None)

    results = []
    for s in sides:
        row = {"name": s.name}
        if getattr(s, "error", None):
            row["error"] = s.error
            results.append(row)
            continue
        st = B.summarize(s.times)
        med = st["median_s"]
        tokens = getattr(s, "tokens", tokens_per_step)
        achieved = s.flops_per_token * tokens / med
        row.update(
            step=st,
            times_s=[float(t) for t in s.times],
            step_ms=med * 1e3,
            step_iqr_ms=st["iqr_s"] * 1e3,
            tokens_per_step=tokens,
            tokens_per_s=tokens / med,
            sequences_per_s=args.batch / med,
            compile_s=s.compile_s,
            n_params=int(s.n_params),
            flops_per_token=s.flops_per_token,
            achieved_tflops=achieved / 1e12,
            mfu=achieved / ref_rate if ref_rate else None,
            peak_memory_bytes=(
                B.device_peak_memory()
                if backend != "cpu" and s.name.startswith("jaxformer")
                else None
            ),
            rss_peak_bytes=getattr(s, "rss_peak", None) or None,
            last_loss=getattr(s, "last_loss", None),
            **getattr(s, "extra", {}),
            **getattr(s, "extra_meta", {}),
        )
        results.append(row)
    ours = results[0]
    for row, s in zip(results, sides):
        if "tokens_per_s" in row:
            row["ratio_vs_first"] = ours["tokens_per_s"] / row["tokens_per_s"]
            # Paired: the same round's times compared, then the median over rounds; with
            # --block 1 each pair ran back to back, so it is the least load-sensitive ratio.
            t0s, ts = sides[0].times, s.times
            n = min(len(t0s), len(ts))
            tok0, tok = (
                getattr(sides[0], "tokens", tokens_per_step),
                getattr(s, "tokens", tokens_per_step),
            )
            row["paired_ratio_vs_first"] = float(
                np.median([(tok0 / a) / (tok / b) for a, b in zip(t0s[:n], ts[:n])])
            )
    return {
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
        "args": vars(args),
        "model": kind,
        "config": cfg.to_dict(),
        "tokens_per_step": tokens_per_step,
        "flops_per_token": flops,
        "matmul_flops_per_s": matmul,
        "matmul_interleaved_flops_per_s": interleaved,
        "mfu_reference": (
            "n^3 float32 jnp.dot timed in the interleaved rounds"
            if backend == "cpu"
            else f"bf16 peak of {dev.device_kind}"
        ),
        "reference_flops_per_s": ref_rate,
        "results": results,
    }


def _fmt_x(x) -> str:
    return "—" if x is None else f"{x:.2f}x"


def markdown(report: dict) -> str:
    a = report["args"]
    hw = report["hardware"]
    mm = report["matmul_flops_per_s"]
    lines = [
        f"**{a['model']} {a['mode']}**, batch {a['batch']} x seq {a['seq']}, "
        f"{a['dtype']}, attention {a['attention']}, {report['date']}, "
        f"{hw.get('cpu_model')} ({hw['cpu_count']} cores), {hw['device_kind']}; "
        + ", ".join(f"{k} {v}" for k, v in hw["versions"].items()),
        "",
    ]
    if mm:
        lines[0] += (
            f"; matmul {a['matmul_n']}^3 f32: "
            + " / ".join(f"{x / 1e9:.0f}" for x in mm)
            + " GFLOP/s (start / end)"
        )
    if report.get("matmul_interleaved_flops_per_s"):
        lines[0] += (
            f", {report['matmul_interleaved_flops_per_s'] / 1e9:.0f} GFLOP/s "
            "interleaved (the MFU reference)"
        )
    lines += [
        "| side | step ms (median, IQR) | tokens/s | seq/s | ours / side (paired) "
        "| compile s | memory | GFLOP/token | TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][:80]} |||||||||")
            continue
        mem = r.get("peak_memory_bytes") or r.get("rss_peak_bytes")
        mem_s = (
            f"{mem / 2**30:.2f} GiB" + ("" if r.get("peak_memory_bytes") else " RSS")
            if mem
            else "-"
        )
        if r.get("xla_buffers_bytes"):
            mem_s += f" (XLA {r['xla_buffers_bytes'] / 2**30:.2f} GiB)"
        mfu = f"{100 * r['mfu']:.0f}%" if r.get("mfu") is not None else "-"
        lines.append(
            f"| {r['name']} | {r['step_ms']:.0f} ± {r['step_iqr_ms']:.0f} | "
            f"{r['tokens_per_s']:.0f} | {r['sequences_per_s']:.2f} | "
            f"{r['ratio_vs_first']:.2f}x ({_fmt_x(r.get('paired_ratio_vs_first'))}) | "
            f"{r['compile_s']:.1f} | {mem_s} | "
            f"{r['flops_per_token'] / 1e9:.3f} | {r['achieved_tflops']:.3f} | {mfu} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bert-base")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--mode",
        choices=("train", "infer", "decode"),
        default="train",
        help="decode: greedy/beam-4 generation, transformer-<size> only",
    )
    p.add_argument(
        "--peers",
        default="",
        help="comma list: torch, torch-1t (one intra-op thread), torch-compile",
    )
    p.add_argument("--dtype", default="float32", help="float32 | bf16 (compute; f32 masters)")
    p.add_argument(
        "--attention",
        default="auto",
        choices=("auto", "xla", "cudnn", "einsum", "splash", "pallas"),
        help="attention kernel (jaxformer.layers.kernels; auto: cudnn on GPU, xla on CPU)",
    )
    p.add_argument("--remat", default="none", choices=("none", "full", "dots", "dots_no_batch"))
    p.add_argument("--scan", action="store_true", help="scan over layers")
    p.add_argument(
        "--dense-last-layer",
        dest="sparse_last",
        action="store_false",
        help="run the last layer at every row (default: only at [CLS] + the "
        "predicted rows when training with an MLM head)",
    )
    p.add_argument("--mesh", default="1,1,1", help="data,fsdp,tensor")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side after build")
    p.add_argument("--block", type=int, default=1, help="steps per side per interleave round")
    p.add_argument(
        "--equal-work", action="store_true", help="also time ours with MLM logits at every position"
    )
    p.add_argument(
        "--step",
        choices=("system", "own"),
        default="system",
        help="train step task: the training system's PretrainTask, or our own",
    )
    p.add_argument("--no-donate", action="store_true", help="do not donate the train state")
    p.add_argument(
        "--dropout", type=float, default=None, help="override the model's dropout rates (all sides)"
    )
    p.add_argument(
        "--compare",
        default=None,
        help="KEY=V1,V2: time one side of ours per value (keys: "
        "remat scan dtype attention dropout no_donate sparse_last)",
    )
    p.add_argument(
        "--lengths",
        default="full",
        help="example lengths: full, or uniform:LO (uniform in [LO, seq])",
    )
    p.add_argument(
        "--pack",
        action="store_true",
        help="with --lengths: time ours padded (a row per example) and packed",
    )
    p.add_argument("--vocab", type=int, default=None, help="seq2seq vocabulary (32000)")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--md", default=None, help="append the markdown table here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.mode == "decode":
        report = run_decode(args)
        print(
            "| strategy | jaxformer tok/s | transformers eager tok/s | eager 1 thread tok/s |"
            "\n|---|---|---|---|"
        )
        for r in report["decode"]:
            print(
                f"| {r['strategy']} | {r['jaxformer_tokens_per_s']:.0f} | "
                f"{r['transformers (torch eager)_tokens_per_s']:.0f} | "
                f"{r['transformers (eager, 1 thread)_tokens_per_s']:.0f} |"
            )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2, default=str)
        return report
    report = run(args)
    table = markdown(report)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    if args.md:
        with open(args.md, "a") as f:
            f.write(table + "\n\n")
    return report


if __name__ == "__main__":
    main()
