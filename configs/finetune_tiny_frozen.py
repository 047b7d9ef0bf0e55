"""Fine-tune only the head (encoder frozen) on the keyword task; set --config.init_from.

python train.py --config configs/finetune_tiny_frozen.py --workdir runs/finetune_tiny_frozen
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.finetune(freeze_encoder=True)
