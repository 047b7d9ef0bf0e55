"""BERT-base MLM + NSP with the paper's optimizer, schedule and batch.

python train.py --config configs/bert_base_pretrain.py --workdir runs/bert_base_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.bert_pretrain("base")
