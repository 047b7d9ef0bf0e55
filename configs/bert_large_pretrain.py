"""BERT-large MLM + NSP with the paper's optimizer, schedule and batch.

python train.py --config configs/bert_large_pretrain.py --workdir runs/bert_large_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.bert_pretrain("large")
