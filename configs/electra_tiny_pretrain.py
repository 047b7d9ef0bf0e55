"""ELECTRA generator + discriminator, tiny, on the embedded corpus.

python train.py --config configs/electra_tiny_pretrain.py --workdir runs/electra_tiny_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.electra_pretrain("tiny")
