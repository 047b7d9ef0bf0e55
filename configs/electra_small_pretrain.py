"""ELECTRA-small: batch 128 x 128, lr 5e-4, generator 1/4 width, lambda 50.

python train.py --config configs/electra_small_pretrain.py --workdir runs/electra_small_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.electra_pretrain("small")
