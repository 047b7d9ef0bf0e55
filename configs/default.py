"""The main job: a tiny BERT trained with MLM on the embedded default corpus, on CPU.

    python train.py                       # = --config configs/default.py --workdir runs/default
    python train.py --config.num_train_steps=200 --workdir /tmp/quick
"""

from jaxformer.models import bert_config
from jaxformer.training.defaults import base_config


def get_config():
    model = bert_config("tiny", head="mlm", vocab_size=4096, hidden_size=128, num_layers=2,
                        num_heads=2, intermediate_size=512, max_position_embeddings=128,
                        hidden_dropout=0.1, attention_dropout=0.1, dtype="bfloat16")
    c = base_config(model.to_dict())
    c.workdir = "runs/default"
    c.data.source = "default_corpus"
    c.data.seq_len = 128
    c.data.max_predictions = 20
    c.batch_size = 32
    c.num_train_steps = 600
    c.optimizer.lr = 1e-3             # a tiny model takes a large step
    c.optimizer.warmup_steps = 60
    c.checkpoint.every_steps = 200
    c.log.every_steps = 10
    c.log.eval_every_steps = 200
    c.demo_sentences = (
        "Return the [MASK] of the string.",
        "Raise a [MASK] if the file does not exist.",
        "This module provides functions for working with [MASK].",
    )
    return c
