"""Configs: one Python file per recipe with `get_config()` returning an ml_collections
ConfigDict, and `--config.a.b=value` overrides that fail loudly on unknown keys."""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import os
from typing import Any
from collections.abc import Sequence

import ml_collections


_REPO_CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs"
)


class ConfigOverrideError(ValueError):
    """An override names an unknown key or a value of the wrong type."""


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Runs `get_config()` from a config file (a path, or NAME for configs/NAME.py);
    `FILE:ARG` calls `get_config(ARG)` (e.g. `configs/finetune_tfds.py:glue/sst2`)."""
    arg = None
    if not os.path.exists(path) and ":" in path:
        path, _, arg = path.partition(":")
    for configs in ("configs", _REPO_CONFIGS):  # NAME: ./configs, then the repository's
        if not os.path.exists(path) and os.path.exists(os.path.join(configs, f"{path}.py")):
            path = os.path.join(configs, f"{path}.py")
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} not found.")
    name = "jaxformer_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"{path} has no get_config().")
    config = module.get_config() if arg is None else module.get_config(arg)
    if not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config)
    return config


def flat_keys(config, prefix: str = "") -> list[str]:
    keys = []
    for k, v in config.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, ml_collections.ConfigDict):
            keys += flat_keys(v, full + ".")
    return keys


def _parse(text: str, current: Any, key: str):
    """The override string as the type of the current value."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigOverrideError(f"--config.{key}: expected a bool, got {text!r}.")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise ConfigOverrideError(
            f"--config.{key}: cannot parse {text!r} as {type(current).__name__}."
        ) from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(current)(value)
    if current is not None and not isinstance(value, type(current)):
        raise ConfigOverrideError(
            f"--config.{key}={text!r}: expected "
            f"{type(current).__name__}, got {type(value).__name__}."
        )
    return value


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Sets `config.<key>` from a command-line string; unknown keys list the nearest ones."""
    keys = flat_keys(config)
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=5, cutoff=0.4)
        if not close:  # a misspelt leaf under a right parent: offer its siblings
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            close = [k for k in keys if parent and k.startswith(parent + ".")][:8]
        hint = f" Nearest valid keys: {', '.join(close)}." if close else ""
        raise ConfigOverrideError(f"unknown config key {key!r}.{hint}")
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    if isinstance(node[leaf], ml_collections.ConfigDict):
        raise ConfigOverrideError(
            f"--config.{key} is a group; set one of its fields: "
            f"{', '.join(sorted(node[leaf].keys()))}."
        )
    node[leaf] = _parse(text, node[leaf], key)


def parse_args(argv: Sequence[str], default_config: str = "configs/default.py"):
    """`--config PATH --workdir DIR --config.a.b=v ...` -> (locked config, workdir, path)."""
    path, workdir, overrides, want_help = default_config, None, [], False
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, val = a.partition("=")
        if name in ("--config", "--workdir") and not eq:
            if i + 1 >= len(args):
                raise ConfigOverrideError(f"{name} needs a value.")
            val, i = args[i + 1], i + 1
        if name == "--config":
            path = val
        elif name == "--workdir":
            workdir = val
        elif name.startswith("--config."):
            if not eq:
                if i + 1 >= len(args):
                    raise ConfigOverrideError(f"{name} needs a value.")
                val, i = args[i + 1], i + 1
            overrides.append((name[len("--config.") :], val))
        elif name in ("-h", "--help"):
            want_help = True
        else:
            raise ConfigOverrideError(f"unknown argument {a!r}.\n{USAGE}")
        i += 1
    if path == default_config and not os.path.exists(path):  # run from another directory
        path = os.path.join(_REPO_CONFIGS, os.path.basename(path))
    config = load_config_file(path)
    config.lock()
    for key, val in overrides:
        apply_override(config, key, val)
    if want_help:
        raise HelpRequested(help_text(config, path))
    if workdir is None:
        file, _, arg = path.partition(".py:")  # FILE.py:ARG -> runs/FILE_ARG
        name = os.path.splitext(os.path.basename(file))[0]
        if arg:
            name += "_" + "".join(c if c.isalnum() or c in "-." else "_" for c in arg)
        workdir = config.workdir or os.path.join("runs", name)
    return config, workdir, path


USAGE = "usage: python train.py [--config configs/NAME.py] [--workdir DIR] [--config.KEY=VALUE ...]"


class HelpRequested(Exception):
    """`-h` / `--help`: `text` is the usage and the config's keys with their values."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def _key_comments() -> dict[str, str]:
    """key -> the comment on its line in `defaults.base_config` (the keys' documentation)."""
    import inspect
    import re

    from jaxformer.training import defaults

    out, above = {}, []
    for line in inspect.getsource(defaults.base_config).splitlines():
        if line.strip().startswith("#"):  # a comment block above a key documents it
            above.append(line.strip()[1:].strip())
            continue
        m = re.match(r"\s*c\.([\w.]+)\s*=[^#]*(?:#\s*(.+))?$", line)
        if m and (m.group(2) or above):
            out[m.group(1)] = (m.group(2) or " ".join(above)).strip()
        above = []
    return out


def help_text(config, path: str) -> str:
    """Usage, then every key of `config` (loaded from `path`) with its value and comment."""
    comments = _key_comments()
    rows = []
    for key in flat_keys(config):
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        value = node[leaf]
        if isinstance(value, ml_collections.ConfigDict):
            continue
        text = f"  {key} = {value!r}"
        if key in comments:
            text = f"{text:<48}  # {comments[key]}"
        rows.append(text)
    return "\n".join(
        [
            USAGE,
            "",
            "Trains a model as the config file says (default configs/default.py: the main job).",
            "  --config PATH[:ARG]   a config file with get_config() (or NAME for configs/NAME.py)",
            "  --workdir DIR         checkpoints, metrics, exports (default runs/<config name>)",
            "  --config.KEY=VALUE    override one key; an unknown key names the nearest ones",
            "",
            f"config keys of {path} (current values):",
            *rows,
        ]
    )


def to_json(config) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)
