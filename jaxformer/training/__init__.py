"""The training system: optimizers, train state, the sharded step, checkpoints, the loop.

The optimizer helpers, the state and the step import eagerly; the loop, the task interface
and the checkpointer (orbax) import on first use. The package knows no model family: the
tasks live in `jaxformer.tasks`, and `train(config, workdir, task)` receives one;
`LossTask` makes one from a researcher's own init and loss functions.
"""

import importlib

from jaxformer.training.optim import decay_mask, make_optimizer, make_schedule, stable_adamw
from jaxformer.training.state import TrainState, create_state
from jaxformer.training.step import (
    compile_eval_step,
    compile_train_step,
    make_eval_step,
    make_train_step,
)

_LAZY = {
    "Checkpointer": "jaxformer.training.checkpoint",
    "load_params": "jaxformer.training.checkpoint",
    "ArrayData": "jaxformer.training.loss_task",
    "LossTask": "jaxformer.training.loss_task",
    "default_config": "jaxformer.training.defaults",
    "Task": "jaxformer.training.task",
    "train": "jaxformer.training.loop",
}

__all__ = [
    "ArrayData",
    "Checkpointer",
    "LossTask",
    "Task",
    "TrainState",
    "compile_eval_step",
    "compile_train_step",
    "create_state",
    "decay_mask",
    "default_config",
    "load_params",
    "make_eval_step",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "stable_adamw",
    "train",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxformer.training' has no attribute {name!r}")
