"""RoBERTa MLM (dynamic masking, byte-level BPE), tiny, on the embedded corpus.

python train.py --config configs/roberta_tiny_pretrain.py --workdir runs/roberta_tiny_pretrain
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.roberta_pretrain("tiny")
