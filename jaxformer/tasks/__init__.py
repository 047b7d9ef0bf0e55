"""Every training task, in one room, with one registry.

`config.task` names a task: a key of `TASKS` or any importable `"package.module:Class"`, so
a project adds a task without touching this package. A task is a
`jaxformer.training.Task`; the loop (`jaxformer.training.train`) receives it and knows no
model family.

    pretrain / mlm   BERT-family MLM (+ NSP / SOP)            `tasks.pretrain`
    electra          generator + replaced-token detection      `tasks.electra`
    finetune         an encoder plus a task head               `tasks.finetune`
    continued        continued MLM pretraining of a checkpoint `tasks.continued`
    seq2seq          the encoder-decoder Transformer           `tasks.seq2seq`
"""

from __future__ import annotations

import importlib

__all__ = ["TASKS", "check_task", "get_task", "task_class"]

# name -> "module:Class", imported on first use (a task's module may need tfds or grain).
TASKS = {
    "pretrain": "jaxformer.tasks.pretrain:PretrainTask",
    "mlm": "jaxformer.tasks.pretrain:PretrainTask",
    "electra": "jaxformer.tasks.electra:ElectraTask",
    "finetune": "jaxformer.tasks.finetune:FineTuneTask",
    "continued": "jaxformer.tasks.continued:ContinuedPretrainTask",
    "seq2seq": "jaxformer.tasks.seq2seq:Seq2SeqTask",
}


def task_class(name: str):
    """The class for a task name: a key of TASKS or "package.module:Class"."""
    path = TASKS.get(name, name)
    if ":" not in path:
        raise ValueError(f"unknown task {name!r}; use one of {sorted(TASKS)} or 'module:Class'.")
    module, attr = path.split(":", 1)
    return getattr(importlib.import_module(module), attr)


def get_task(config, workdir: str):
    """The task named by `config.task`, built for this config and workdir."""
    return task_class(config.task)(config, workdir)


def check_task(name: str) -> None:
    """Raises `training.checks.ConfigError` (one line) when `name` is not a task."""
    from jaxformer.training.checks import ConfigError

    try:
        task_class(name)
    except (ValueError, ImportError, AttributeError) as e:
        detail = f" ({type(e).__name__}: {e})" if ":" in name else ""
        raise ConfigError(
            f"task={name!r} is not a task{detail}; use one of {', '.join(sorted(TASKS))} or "
            "'package.module:Class'."
        ) from None
