"""RoBERTa-base MLM: dynamic masking, full sentences, batch 8k x 512, lr 6e-4.

python train.py --config configs/roberta_base_pretrain.py --workdir runs/roberta_base_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.roberta_pretrain("base")
