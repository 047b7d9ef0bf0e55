"""The main job: a tiny BERT trained with MLM on the embedded default corpus, on CPU.

python train.py                       # = --config configs/default.py --workdir runs/default
python train.py --config.num_train_steps=200 --workdir /tmp/quick
"""

from jaxformer.models import bert_config
from jaxformer.training.defaults import base_config


def get_config():
    model = bert_config(
        "tiny",
        head="mlm",
        vocab_size=4096,
        hidden_size=128,
        num_layers=2,
        num_heads=2,
        intermediate_size=512,
        max_position_embeddings=128,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        dtype="float32",
    )  # this CPU has no native bf16 matmul: f32 is faster
    c = base_config(model.to_dict())
    c.workdir = "runs/default"
    c.data.source = "default_corpus"
    c.data.seq_len = 128
    c.data.max_predictions = 20
    c.batch_size = 32
    c.num_train_steps = 1000  # ~4M tokens, about 2.5 minutes on 2 quiet cores
    c.optimizer.lr = 2e-3  # a tiny, underfit model takes a large step
    c.optimizer.warmup_steps = 100
    c.checkpoint.every_steps = 250
    c.log.every_steps = 10
    c.log.eval_every_steps = 250
    c.log.eval_batches = 16  # ~10k held-out masked tokens
    c.demo_sentences = (
        "Return the [MASK] of the string.",
        "Raise a [MASK] if the file does not exist.",
        "This module provides functions for working with [MASK].",
    )
    return c
