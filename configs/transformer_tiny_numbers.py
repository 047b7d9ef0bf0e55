"""Encoder-decoder Transformer, tiny, on the generated digits -> words corpus (CPU, minutes).

python train.py --config configs/transformer_tiny_numbers.py --workdir runs/tx_tiny
"""

from jaxformer.models.seq2seq_configs import transformer_config
from jaxformer.training.defaults import base_config


def get_config():
    c = base_config(transformer_config("tiny", vocab_size=64, max_len=64).to_dict(), task="seq2seq")
    c.data.source = "numbers"  # numbers | tfds:NAME
    c.data.seq_len = 32  # source and target length (pairs longer are an error)
    c.data.synthetic_examples = 20000  # training pairs
    c.data.label_smoothing = 0.1
    c.batch_size = 64
    c.num_train_steps = 2000
    c.optimizer.update(
        name="adamw",
        lr=3e-3,
        schedule="warmup_rsqrt",
        warmup_steps=200,
        b2=0.98,
        eps=1e-9,
        weight_decay=0.0,
    )
    c.checkpoint.every_steps = 500
    c.log.eval_every_steps = 500
    return c
