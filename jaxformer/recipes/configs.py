"""The pretraining and fine-tuning recipes as configs: each paper's optimizer, schedule,
batch size and sequence length at the real size, and a tiny variant that runs on CPU.

`configs/NAME.py` files call these; `recipe("bert", "base")` etc. can be used directly.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxformer.data import labelled
from jaxformer.models import (
    albert_config,
    bert_config,
    electra_config,
    modernbert_config,
    roberta_config,
)
from jaxformer.models.configs import ELECTRA_GENERATOR_FRACTION, TINY_GENERATOR_FRACTION
from jaxformer.training.defaults import base_config

DEMO = ("Return the [MASK] of the string.", "Raise a [MASK] if the file does not exist.")


def _tiny(c: ml_collections.ConfigDict, steps: int = 300) -> ml_collections.ConfigDict:
    """CPU scale: small vocab, short sequences, a few hundred steps on the embedded corpus."""
    c.data.source = "default_corpus"
    c.data.seq_len = 64
    c.data.max_predictions = 10
    c.batch_size = 16
    c.num_train_steps = steps
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = steps // 10
    c.checkpoint.every_steps = max(steps // 2, 1)
    c.log.eval_every_steps = steps
    c.demo_sentences = DEMO
    return c


def _tiny_model(make, **kw):
    return make(
        "tiny",
        vocab_size=2048,
        max_position_embeddings=128,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        **kw,
    )


def _paper_run(c, *, seq_len, max_predictions, batch, steps, lr, warmup, b2=0.999):
    """A BERT-family paper's scale and optimizer settings: linear warmup then linear decay,
    weight decay 0.01, beta1 0.9, eps 1e-6 (the optimizer is `c.optimizer.name`)."""
    c.data.seq_len, c.data.max_predictions = seq_len, max_predictions
    c.batch_size, c.num_train_steps = batch, steps
    c.optimizer.update(
        lr=lr,
        schedule="warmup_linear",
        warmup_steps=warmup,
        weight_decay=0.01,
        b1=0.9,
        b2=b2,
        eps=1e-6,
    )
    return c


def bert_pretrain(size: str) -> ml_collections.ConfigDict:
    """BERT (Devlin et al. 2019): MLM + NSP, static masking duplicated 10x, AdamW lr 1e-4,
    10k warmup then linear decay over 1M steps, batch 256 x 128 tokens (the 90% phase),
    20 predictions per sequence."""
    if size == "tiny":
        c = base_config(_tiny_model(bert_config, head="pretraining").to_dict(), task="pretrain")
        c = _tiny(c)
        c.data.objective = "nsp"
        return c
    c = base_config(bert_config(size, head="pretraining").to_dict(), task="pretrain")
    c.data.objective, c.data.masking, c.data.dupe_factor = "nsp", "static", 10
    return _paper_run(
        c, seq_len=128, max_predictions=20, batch=256, steps=1_000_000, lr=1e-4, warmup=10_000
    )


def roberta_pretrain(size: str) -> ml_collections.ConfigDict:
    """RoBERTa (Liu et al. 2019): MLM only on full sentences, dynamic masking, byte-level BPE,
    batch 8k x 512, AdamW lr 6e-4 (base), beta2 0.98, 24k warmup, 500k steps."""
    if size == "tiny":
        c = base_config(
            _tiny_model(roberta_config, head="mlm", pad_token_id=0, position_offset=1).to_dict(),
            task="pretrain",
        )
        c = _tiny(c)
        c.data.tokenizer_family = "roberta"
        c.demo_sentences = tuple(s.replace("[MASK]", "<mask>") for s in DEMO)
        return c
    c = base_config(roberta_config(size, head="mlm").to_dict(), task="pretrain")
    c.data.tokenizer_family, c.data.objective, c.data.masking = "roberta", "none", "dynamic"
    lr = 6e-4 if size == "base" else 4e-4
    return _paper_run(
        c, seq_len=512, max_predictions=80, batch=8192, steps=500_000, lr=lr, warmup=24_000, b2=0.98
    )


def albert_pretrain(size: str) -> ml_collections.ConfigDict:
    """ALBERT (Lan et al. 2020): MLM + SOP, all layers shared, E=128, Unigram vocab 30k,
    LAMB lr 0.00176, batch 4096 x 512, 3125 warmup, 125k steps."""
    if size == "tiny":
        c = base_config(_tiny_model(albert_config, head="pretraining").to_dict(), task="pretrain")
        c = _tiny(c)
        c.data.objective, c.data.tokenizer_family = "sop", "albert"
        return c
    c = base_config(albert_config(size, head="pretraining").to_dict(), task="pretrain")
    c.data.objective, c.data.tokenizer_family = "sop", "albert"
    c.optimizer.name = "lamb"
    return _paper_run(
        c, seq_len=512, max_predictions=20, batch=4096, steps=125_000, lr=0.00176, warmup=3125
    )


ELECTRA_HPARAMS = {  # size: (batch, seq, lr, steps); generator widths: ELECTRA_GENERATOR_FRACTION
    "small": (128, 128, 5e-4, 1_000_000),
    "base": (256, 512, 2e-4, 766_000),
    "large": (2048, 512, 2e-4, 400_000),
}


def electra_pretrain(size: str) -> ml_collections.ConfigDict:
    """ELECTRA (Clark et al. 2020): generator (MLM) + discriminator (replaced-token
    detection, λ = 50), shared embeddings, AdamW with 10k warmup and linear decay."""
    task = "electra"
    if size == "tiny":
        c = base_config(_tiny_model(electra_config, head="rtd").to_dict(), task=task)
        c = _tiny(c)
        c.demo_sentences = ()
        frac = TINY_GENERATOR_FRACTION
    else:
        batch, seq, lr, steps = ELECTRA_HPARAMS[size]
        frac = ELECTRA_GENERATOR_FRACTION[size]
        c = base_config(electra_config(size, head="rtd").to_dict(), task=task)
        preds = 20 if seq == 128 else 80
        _paper_run(
            c, seq_len=seq, max_predictions=preds, batch=batch, steps=steps, lr=lr, warmup=10_000
        )
    c.electra = ml_collections.ConfigDict({"generator_fraction": frac, "rtd_weight": 50.0})
    return c


MODERNBERT_HPARAMS = {  # size: (batch, peak lr, warmup steps)
    "base": (4608, 8e-4, 640),  # warmup 3B tokens at 4608 x 1024
    "large": (4928, 5e-4, 400),  # warmup 2B tokens at 4928 x 1024
}


def modernbert_pretrain(size: str) -> ml_collections.ConfigDict:
    """ModernBERT (Warner et al. 2024): MLM only with 30% masking, StableAdamW (betas 0.9,
    0.98, eps 1e-6, decoupled weight decay 1e-5, no gradient clipping), warmup-stable-decay
    with a 1-sqrt decay; phase one of the paper (1.7T tokens at 1024 tokens, ~360k steps)
    as one schedule. Not reproduced: the batch-size warmup and the 8192-token extension."""
    opt = dict(
        name="stable_adamw",
        schedule="warmup_stable_decay",
        weight_decay=1e-5,
        b1=0.9,
        b2=0.98,
        eps=1e-6,
        clip_norm=0.0,
    )
    if size == "tiny":
        model = modernbert_config(
            "tiny",
            head="mlm",
            vocab_size=2048,
            max_position_embeddings=128,
            local_window=32,
            pad_token_id=0,  # our tokenizers' [PAD]
        )
        c = _tiny(base_config(model.to_dict(), task="pretrain"))
        c.data.tokenizer_family = "roberta"  # byte-level BPE, like ModernBERT's
        c.data.mlm_probability, c.data.max_predictions = 0.3, 20
        c.demo_sentences = tuple(s.replace("[MASK]", "<mask>") for s in DEMO)
        c.optimizer.update(dict(opt, decay_fraction=0.2))
        return c
    batch, lr, warmup = MODERNBERT_HPARAMS[size]
    model = modernbert_config(size, head="mlm", pad_token_id=0)  # our tokenizers' [PAD]
    c = base_config(model.to_dict(), task="pretrain")
    c.data.tokenizer_family, c.data.objective, c.data.masking = "roberta", "none", "dynamic"
    c.data.seq_len, c.data.mlm_probability, c.data.max_predictions = 1024, 0.3, 308
    c.batch_size, c.num_train_steps = batch, 360_000
    c.optimizer.update(dict(opt, lr=lr, warmup_steps=warmup, decay_fraction=0.03))
    return c


def finetune(
    init_from: str = "", size: str = "tiny", freeze_encoder: bool = False, source: str = "keyword"
) -> ml_collections.ConfigDict:
    """Sequence classification on `source` (default: the generated keyword task), starting
    from `init_from` ("hf:DIR", "run:WORKDIR" or "" for random init); BERT's fine-tuning
    optimizer (AdamW 2e-5..5e-5 at real size, 10% warmup)."""
    model = _tiny_model(bert_config) if size == "tiny" else bert_config(size)
    c = base_config(model.to_dict(), task="finetune")
    c.init_from = init_from
    head, num_labels = "sequence_classification", 2
    if source.startswith("tfds:"):  # the head the dataset needs (GLUE / SQuAD / CoNLL)
        from jaxformer.tasks.finetune import tfds_task

        head, num_labels = tfds_task(source[5:])
    c.finetune = ml_collections.ConfigDict(
        {"head": head, "num_labels": num_labels, "freeze_encoder": freeze_encoder}
    )
    # Class names in order, e.g. "neg,pos" ("" = from the data); own files: one per class.
    c.finetune.label_names = ""
    c.data.source, c.data.seq_len, c.data.eval_fraction = source, 64, 0.1
    # Own files (csv:PATH, tsv:PATH, jsonl:PATH): the eval file ("" = hold out eval_fraction)
    # and the columns / keys that hold each field (pair "" = single texts).
    c.data.eval_source = ""
    for field, column in dataclasses.asdict(labelled.Fields()).items():
        c.data[f"{field}_field"] = column  # text, pair, label, tokens, tags
    # tfds sources: the prepared data's directory, splits, and a cap per split (0 = all).
    c.data.data_dir, c.data.train_split, c.data.eval_split = "", "train", ""
    c.data.max_examples = 0
    c.batch_size, c.num_train_steps = 32, 400
    c.optimizer.update(
        lr=1e-3 if freeze_encoder else 3e-4,
        warmup_steps=40,
        schedule="warmup_linear",
        weight_decay=0.01,
    )
    c.checkpoint.best_metric, c.checkpoint.best_mode = {
        "question_answering": ("eval_span_accuracy", "max"),
        "regression": ("eval_mse", "min"),
    }.get("regression" if num_labels == 1 else head, ("eval_accuracy", "max"))
    c.checkpoint.every_steps, c.log.eval_every_steps = 100, 100
    if size != "tiny":
        c.data.seq_len, c.optimizer.lr = 128, 3e-5
    return c


def continued_pretrain(init_from: str = "") -> ml_collections.ConfigDict:
    """Keep training an existing encoder with MLM on a new corpus (`data.source`)."""
    c = base_config(
        _tiny_model(bert_config, head="mlm").to_dict(),
        task="continued",
    )
    c = _tiny(c, steps=200)
    c.init_from = init_from
    c.optimizer.lr = 2e-4
    return c
