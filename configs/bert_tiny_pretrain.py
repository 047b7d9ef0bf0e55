"""BERT MLM + NSP, tiny, on the embedded corpus (CPU, minutes).

python train.py --config configs/bert_tiny_pretrain.py --workdir runs/bert_tiny_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.bert_pretrain("tiny")
