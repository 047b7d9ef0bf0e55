"""Fine-tuning an encoder with a task head (`config.task = "finetune"`), split along its
seams: `data` (sources as records), `losses` (the heads' losses), `weights` (pretrained
weights in, the run's model config out) and `task` (the `FineTuneTask` the loop trains)."""

from jaxformer.tasks.finetune.data import (
    GLUE_LABELS,
    config_label_names,
    default_eval_split,
    file_records,
    keyword_task,
    record_text,
    tfds_label_names,
    tfds_records,
    tfds_task,
)
from jaxformer.tasks.finetune.losses import task_loss
from jaxformer.tasks.finetune.task import FineTuneTask
from jaxformer.tasks.finetune.weights import (
    MODEL_CONFIG_FILE,
    encoder_mask,
    frozen_encoder_unchanged,
    load_run_params,
    merge_encoder,
    save_model_config,
)

__all__ = [
    "GLUE_LABELS",
    "MODEL_CONFIG_FILE",
    "FineTuneTask",
    "config_label_names",
    "default_eval_split",
    "encoder_mask",
    "file_records",
    "frozen_encoder_unchanged",
    "keyword_task",
    "load_run_params",
    "merge_encoder",
    "record_text",
    "save_model_config",
    "task_loss",
    "tfds_label_names",
    "tfds_records",
    "tfds_task",
]
