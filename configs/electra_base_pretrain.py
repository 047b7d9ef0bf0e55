"""ELECTRA-base: batch 256 x 512, lr 2e-4, generator 1/3 width, lambda 50.

python train.py --config configs/electra_base_pretrain.py --workdir runs/electra_base_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.electra_pretrain("base")
