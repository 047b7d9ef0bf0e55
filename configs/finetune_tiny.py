"""Fine-tune a tiny BERT on the generated keyword task; set --config.init_from=run:DIR or hf:DIR.

python train.py --config configs/finetune_tiny.py --workdir runs/finetune_tiny
"""

from jaxformer.recipes import configs as recipes


def get_config():
    return recipes.finetune()
