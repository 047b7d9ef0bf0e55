"""Reading a HuggingFace model directory: its config JSON and its weights (safetensors,
sharded safetensors or a torch .bin), with one-line errors for damaged files; and numpy
init for params a checkpoint lacks. Shared by every family's converter."""

from __future__ import annotations

import json
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = [
    "ModelFileError",
    "fresh_arrays",
    "load_hf_state_dict",
    "read_hf_config",
    "read_json_file",
]

SAFETENSORS, SAFETENSORS_INDEX, TORCH_BIN = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
)


class ModelFileError(ValueError):
    """A model file that is missing, truncated or corrupt; the message (one line) names the
    file, its directory and what is wrong."""


def _damaged(file: str, what: str) -> ModelFileError:
    name, folder = os.path.basename(file), os.path.dirname(file) or "."
    return ModelFileError(f"{name} in {folder} {what}; re-download or re-export it.")


def read_json_file(file: str) -> dict[str, Any]:
    """The JSON object in `file` (a config); ModelFileError naming the file when it is
    missing, empty, not UTF-8, not valid JSON or not an object."""
    if not os.path.isfile(file):
        raise ModelFileError(
            f"{os.path.basename(file)} is missing in {os.path.dirname(file) or '.'}."
        )
    try:
        with open(file, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise _damaged(file, f"is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise _damaged(file, "is empty")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise _damaged(
            file, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    if not isinstance(value, dict):
        raise _damaged(file, f"holds a JSON {type(value).__name__}, not an object")
    return value


def read_hf_config(path: str) -> dict[str, Any]:
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{path!r} has no config.json; not a HuggingFace model directory.")
    return read_json_file(file)


def load_hf_state_dict(path: str) -> dict[str, Any]:
    """The weights of a HF directory: model.safetensors (or its sharded index), else
    pytorch_model.bin through `torch.load(weights_only=True)`. A truncated or corrupt file,
    or a shard the index names but the directory lacks, is a ModelFileError naming it."""
    if os.path.isfile(os.path.join(path, SAFETENSORS)):
        return _load_safetensors(os.path.join(path, SAFETENSORS))
    index = os.path.join(path, SAFETENSORS_INDEX)
    if os.path.isfile(index):
        weight_map = read_json_file(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise _damaged(index, "has no 'weight_map' of tensor names to shard files")
        sd = {}
        for shard in sorted(set(map(str, weight_map.values()))):
            file = os.path.join(path, shard)
            if not os.path.isfile(file):
                raise ModelFileError(
                    f"{shard} (a shard named in {SAFETENSORS_INDEX}) is missing in {path}; "
                    "re-download it."
                )
            sd.update(_load_safetensors(file))
        return sd
    if os.path.isfile(os.path.join(path, TORCH_BIN)):
        import torch  # only .bin checkpoints need torch

        file = os.path.join(path, TORCH_BIN)
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # zip, pickle and torch errors alike mean a damaged file
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise _damaged(file, f"is truncated or corrupt ({reason[:120]})") from None
    raise FileNotFoundError(
        f"{path!r} has none of {SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN}."
    )


def _load_safetensors(file: str) -> dict[str, np.ndarray]:
    # safetensors.numpy cannot hold bf16; the flax loader can (via ml_dtypes), then numpy.
    from safetensors import SafetensorError
    from safetensors.flax import load_file

    try:
        return {k: np.asarray(v) for k, v in load_file(file).items()}
    except (SafetensorError, OSError) as e:
        raise _damaged(file, f"is truncated or corrupt ({str(e).splitlines()[0]})") from None


def fresh_arrays(shapes: dict, paths: list[str], std: float, dtype, seed: int) -> dict:
    """numpy init of the named flat params: kernels and tables N(0, std), scales 1, biases 0."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in paths:
        leaf = p.rsplit("/", 1)[-1]
        if leaf in ("kernel", "embedding"):
            x = rng.normal(0.0, std, shapes[p])
        else:
            x = np.full(shapes[p], 1.0 if leaf == "scale" else 0.0)
        out[p] = x.astype(jnp.dtype(dtype))
    return out


def write_model_dir(path: str, hf_config: dict, state_dict: dict, **extra_json: dict) -> None:
    """Writes a HuggingFace model directory: `config.json`, `model.safetensors` and one
    `NAME.json` per `extra_json` entry (e.g. `generation_config=`)."""
    from safetensors.flax import save_file

    os.makedirs(path, exist_ok=True)
    for name, obj in {"config": hf_config, **extra_json}.items():
        with open(os.path.join(path, f"{name}.json"), "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
    # flax's writer keeps bf16; metadata format=pt is what transformers checks for.
    save_file(
        {k: jnp.asarray(v) for k, v in state_dict.items()},
        os.path.join(path, SAFETENSORS),
        metadata={"format": "pt"},
    )
