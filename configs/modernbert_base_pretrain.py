"""ModernBERT-base MLM: 30% masking, StableAdamW lr 8e-4, warmup-stable-decay, 4608 x 1024.

python train.py --config configs/modernbert_base_pretrain.py --workdir runs/modernbert_base_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.modernbert_pretrain("base")
