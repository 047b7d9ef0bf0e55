"""What a user passes to training, checked before anything is written: paths (relative to the
current directory), names (optimizer, schedule, task) and counts (steps, batch sizes,
intervals). Each problem is a `ConfigError` whose message is one line naming it and the fix.
"""

from __future__ import annotations

import glob
import os

from jaxformer.errors import ConfigError

__all__ = [
    "ConfigError",
    "PathError",
    "absolute",
    "check_config",
    "data_path",
    "init_path",
    "user_glob",
    "user_path",
]


class PathError(ConfigError, FileNotFoundError):
    """A path the user gave does not exist."""


def absolute(path: str) -> str:
    """A local path made absolute (relative to the current directory, `~` expanded); a URL
    such as gs://bucket/run stays as it is."""
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def user_path(path: str, what: str, *, must_exist: bool = True) -> str:
    """`path` made absolute (`absolute`): orbax and the pipelines need absolute paths, users
    type relative ones. `what` names the setting in the error (e.g. "init_from='run:runs/x'").
    URLs are not checked here (their filesystem reports a missing path itself)."""
    full = absolute(path)
    if must_exist and "://" not in full and not os.path.exists(full):
        raise PathError(f"{what}: {full} does not exist.")
    return full


def user_glob(pattern: str, what: str) -> str:
    """The absolute form of a file pattern; an error naming it when it matches nothing."""
    full = absolute(pattern)
    if "://" not in full and not (
        glob.glob(full) if glob.has_magic(full) else os.path.exists(full)
    ):
        raise PathError(f"{what}: no file matches {full}.")
    return full


# Data sources that name files, and how each one is resolved: the one place that knows.
_FILE_SOURCES = {
    "text": user_glob,
    "store": user_path,
    "csv": user_path,
    "tsv": user_path,
    "jsonl": user_path,
}


def data_path(source: str, key: str = "data.source") -> str | None:
    """The absolute path (or pattern) inside a file-backed data source ("text:GLOB",
    "store:DIR", "csv:PATH", "tsv:PATH", "jsonl:PATH"); None for the others. Missing files
    are a `PathError` naming `key`."""
    kind, sep, rest = source.partition(":")
    if not sep or kind not in _FILE_SOURCES:
        return None
    return _FILE_SOURCES[kind](rest, f"{key}={source!r}")


def init_path(init_from: str) -> tuple[str, str]:
    """`init_from` ("", "hf:DIR", "run:WORKDIR") as (kind, absolute directory)."""
    if not init_from:
        return "", ""
    kind, sep, rest = init_from.partition(":")
    if not sep or kind not in ("hf", "run"):
        raise ConfigError(f"init_from={init_from!r}: use '', 'hf:DIR' or 'run:WORKDIR'.")
    path = user_path(rest, f"init_from={init_from!r}")
    what = "a training workdir" if kind == "run" else "a HuggingFace model directory"
    if "://" not in path and not os.path.isfile(os.path.join(path, "config.json")):
        raise PathError(f"init_from={init_from!r}: {path} is not {what} (it has no config.json).")
    return kind, path


# (key, smallest allowed value); a comment says what 0 means where 0 is allowed
_COUNTS = (
    ("num_train_steps", 1),
    ("batch_size", 1),
    ("grad_accum_steps", 1),
    ("stop_after_steps", 0),  # 0 = run to num_train_steps
    ("max_bad_steps", 1),
    ("log.every_steps", 1),
    ("log.eval_every_steps", 0),  # 0 = eval at the end only
    ("log.eval_batches", 1),
    ("checkpoint.every_steps", 0),  # 0 = save at the end only
    ("checkpoint.keep", 1),
    ("optimizer.warmup_steps", 0),
    ("data.seq_len", 1),
)


def _get(config, key: str):
    node = config
    for part in key.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def check_config(config) -> None:
    """Raises ConfigError for the first value training cannot use: an unknown optimizer or
    schedule, a non-positive count, or a path that does not exist (the task name is the
    registry's to check: `jaxformer.tasks.check_task`)."""
    from jaxformer.training.optim import OPTIMIZERS, SCHEDULES

    for key, low in _COUNTS:
        value = _get(config, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            need = "a positive integer" if low == 1 else "an integer >= 0"
            raise ConfigError(f"{key}={value!r}: must be {need}.")
    opt = config.optimizer
    if opt.name not in OPTIMIZERS:
        raise ConfigError(
            f"optimizer.name={opt.name!r} is not an optimizer; use one of {', '.join(OPTIMIZERS)}."
        )
    if opt.schedule not in SCHEDULES:
        raise ConfigError(
            f"optimizer.schedule={opt.schedule!r} is not a schedule; use one of "
            f"{', '.join(SCHEDULES)}."
        )
    init_path(config.get("init_from", "") or "")
    data = config.get("data")
    if data is not None:
        for key in ("source", "eval_source"):
            if isinstance(data.get(key), str):
                data_path(data.get(key), f"data.{key}")
