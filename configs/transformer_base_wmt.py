"""Transformer base (Vaswani et al. 2017) on WMT'14 EN-DE: Adam b2=0.98 eps=1e-9, inverse
square-root schedule with 4000 warmup steps (peak d_model^-0.5 * 4000^-0.5 = 7e-4), label
smoothing 0.1, 100k steps, shared vocabulary of 32k, packed rows of 128 tokens a side.

    jaxformer prepare --pairs --format tfds:wmt14_translate/de-en --source-field en \
        --target-field de --tokenizer-family roberta --vocab-size 32000 --output data/wmt14
    python train.py --config configs/transformer_base_wmt.py --workdir runs/tx_base \
        --config.data.source=store:data/wmt14

(docs/seq2seq.md). Pairs longer than `data.seq_len` on a side are dropped and counted
(summary.json `data`).
"""

from jaxformer.models.seq2seq_configs import transformer_config
from jaxformer.tasks.seq2seq import decode_config
from jaxformer.training.defaults import base_config


def get_config():
    c = base_config(
        transformer_config("base", vocab_size=32000, max_position_embeddings=256).to_dict(),
        task="seq2seq",
    )
    c.data.source = "tfds:wmt14_translate/de-en"  # | store:DIR (jaxformer prepare --pairs)
    c.data.seq_len = 128  # tokens a side (EOS included); longer pairs are dropped and counted
    c.data.pack = True  # several pairs a row (segment ids); False: one pair a row
    c.data.window = 4096  # pairs shuffled then packed together (one resumable chunk)
    c.data.eval_fraction = 0.001  # store: its last pairs held out (tfds: the validation split)
    c.data.label_smoothing = 0.1
    c.batch_size = 256  # packed rows: up to 32k tokens a side (the paper: ~25k)
    c.num_train_steps = 100_000
    c.optimizer.update(
        name="adamw",
        lr=512**-0.5 * 4000**-0.5,
        schedule="warmup_rsqrt",
        warmup_steps=4000,
        b1=0.9,
        b2=0.98,
        eps=1e-9,
        weight_decay=0.0,
        clip_norm=0.0,
    )
    c.decode = decode_config(num_beams=4, examples=512)  # eval: beam 4 on 512 held-out pairs
    c.checkpoint.every_steps = 5000
    c.checkpoint.best_metric = "eval_bleu"
    c.checkpoint.best_mode = "max"
    c.log.eval_every_steps = 5000
    c.log.every_steps = 100
    return c
