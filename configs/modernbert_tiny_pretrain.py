"""ModernBERT MLM (30% masking, StableAdamW, warmup-stable-decay), tiny, on the embedded
corpus.

python train.py --config configs/modernbert_tiny_pretrain.py --workdir runs/modernbert_tiny_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.modernbert_pretrain("tiny")
