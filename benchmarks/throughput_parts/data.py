"""Model configs for `--model` and synthetic batches: MLM rows (full, variable length,
packed), equal-work rows, encoder-decoder pairs."""

from __future__ import annotations

import math

import numpy as np


ENCODERS = ("bert", "modernbert")  # model kinds fed MLM batches (`bert_batch`)
SEQ2SEQ = ("transformer", "t5")  # encoder-decoders: pairs (`seq2seq_batch`), decoding
# T5 shapes (d_model, d_kv, heads, d_ff, layers per stack); small and base as released.
T5_SIZES = {
    "tiny": (32, 8, 4, 64, 1),  # smoke tests
    "small": (512, 64, 8, 2048, 6),
    "base": (768, 64, 12, 3072, 12),
}
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
        drop = {} if args.dropout is None else dict(hidden_dropout=args.dropout)
        cfg = transformer_config(
            size,
            vocab_size=args.vocab or 32000,
            dtype=dtype,
            **drop,
            attention_kernel=args.attention,
            hidden_act="swish",
            remat_policy=args.remat,
            position_layout="halves",
            layer_norm_eps=1e-5,
            max_position_embeddings=max(512, args.seq),
        )
        return "transformer", cfg
    if family == "t5" and size in T5_SIZES:
        from jaxformer.models.t5 import T5Config

        d, kv, h, ff, layers = T5_SIZES[size]
        drop = {} if args.dropout is None else dict(dropout_rate=args.dropout)
        cfg = T5Config(
            vocab_size=args.vocab or 32128,
            d_model=d,
            d_kv=kv,
            num_heads=h,
            d_ff=ff,
            num_layers=layers,
            num_decoder_layers=layers,
            dtype=dtype,
            attention_kernel=args.attention,
            **drop,
        )
        return "t5", cfg
    raise SystemExit(
        f"unknown --model {args.model!r}; use bert-<size>, modernbert-<size>, "
        f"transformer-<size> or t5-<{'|'.join(T5_SIZES)}>."
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
    """Random full-length (source, target) rows ending in EOS, teacher-forced decoder inputs."""
    rng = np.random.default_rng(seed)
    v = getattr(cfg, "tgt_vocab_size", cfg.vocab_size)  # T5: one vocabulary
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
