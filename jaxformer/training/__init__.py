"""The training system: optimizers, train state, the sharded step, checkpoints, the loop.

The optimizer helpers, the state and the step import eagerly; the loop, the tasks and the
checkpointer (orbax, data pipelines) import on first use.
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
    "Task": "jaxformer.training.tasks",
    "get_task": "jaxformer.training.tasks",
    "train": "jaxformer.training.loop",
}

__all__ = [
    "Checkpointer",
    "Task",
    "TrainState",
    "compile_eval_step",
    "compile_train_step",
    "create_state",
    "decay_mask",
    "get_task",
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
