"""Continued MLM pretraining of an existing encoder; set --config.init_from=hf:DIR or run:DIR.

python train.py --config configs/continued_pretrain_tiny.py --workdir runs/continued
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.continued_pretrain()
