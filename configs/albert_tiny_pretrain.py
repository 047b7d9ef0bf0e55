"""ALBERT MLM + SOP (shared layers, factorized embeddings), tiny, on the embedded corpus.

python train.py --config configs/albert_tiny_pretrain.py --workdir runs/albert_tiny_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.albert_pretrain("tiny")
