"""ALBERT-base MLM + SOP with LAMB, batch 4096 x 512.

python train.py --config configs/albert_base_pretrain.py --workdir runs/albert_base_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.albert_pretrain("base")
