"""Fine-tune a pretrained encoder on a tensorflow-datasets task: GLUE, SQuAD or CoNLL-2003.

The dataset must be prepared (ArrayRecord format) under data_dir; the head and number of
labels follow from it, and the task's own metric is printed at the end.

    python train.py --config configs/finetune_tfds.py:glue/sst2 \
        --config.init_from=hf:/path/to/bert-base-uncased \
        --config.data.data_dir=~/tensorflow_datasets --workdir runs/sst2
    # also: glue/mnli, glue/stsb, glue/cola, ..., squad/v1.1, squad/v2.0, conll2003
"""

from jaxformer.recipes import configs as recipes


def get_config(task: str = "glue/sst2"):
    c = recipes.finetune(source=f"tfds:{task}", size="base")
    # About 3 epochs of SST-2 at batch 32; set num_train_steps for other datasets.
    c.num_train_steps = 6000
    c.optimizer.warmup_steps = 600
    if task.startswith("squad"):
        c.data.seq_len = 384
    return c
