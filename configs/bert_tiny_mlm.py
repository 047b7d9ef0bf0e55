"""Tiny BERT, MLM only (dynamic masking), on the embedded corpus: the main job's model at a
shorter sequence, for quick CPU experiments.

    python train.py --config configs/bert_tiny_mlm.py --workdir runs/bert_tiny_mlm
"""

from jaxformer.models import bert_config
from jaxformer.training.defaults import base_config


def get_config():
    model = bert_config(
        "tiny", head="mlm", vocab_size=2048, max_position_embeddings=64, dtype="bfloat16"
    )
    c = base_config(model.to_dict(), task="mlm")
    c.data.source = "default_corpus"
    c.data.seq_len = 64  # tokens per example
    c.data.max_predictions = 10
    c.batch_size = 32
    c.num_train_steps = 500
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 50
    c.checkpoint.every_steps = 250
    c.log.eval_every_steps = 250
    c.demo_sentences = ("Return the [MASK] of the string.",)
    return c
