"""Load HuggingFace BERT-family directories into jaxformer, and save them back. No network."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.convert.hf_config import encoder_config_from_hf, hf_config_from_encoder_config
from jaxformer.convert.hf_params import (
    convert_hf_state_dict,
    finish_params,
    hf_state_dict_from_params,
    param_shapes,
)
from jaxformer.models.bert import EncoderModel
from jaxformer.models.configs import EncoderConfig
from jaxformer.models.modernbert import ModernBertModel

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


def from_pretrained(
    path: str, head: str | None = None, dtype: str = "float32", seed: int = 0, **overrides
) -> tuple[EncoderModel, dict]:
    """Loads a HF BERT / RoBERTa / ALBERT / ELECTRA directory (or ModernBERT, Marian, T5,
    BART, mBART: routed by `model_type`) -> `(model, params)`.

    head: None keeps the checkpoint's head (from `architectures[0]`); "base" drops it; another
    head name builds that head, initialising with `seed` the head weights the checkpoint lacks
    (a warning names them). dtype is the compute dtype; `overrides` are `EncoderConfig` fields
    (e.g. `scan_layers=True`, `num_labels=3`, `param_dtype="bfloat16"`). Params are unboxed
    numpy arrays in `param_dtype`. Unused weights in the file are named in a warning.
    """
    hf = read_hf_config(path)
    if hf.get("model_type") == "modernbert":  # a sibling encoder with its own mapping
        from jaxformer.convert.modernbert import modernbert_from_pretrained

        return modernbert_from_pretrained(path, head, dtype, seed, **overrides)
    if hf.get("model_type") == "marian":  # the encoder-decoder family has its own mapping
        from jaxformer.convert.marian import marian_from_pretrained

        if head is not None:
            raise ValueError(
                "head= applies to BERT-family encoders; a Marian checkpoint is "
                "an encoder-decoder with its language-model head."
            )
        if dtype != "float32":
            overrides = {"dtype": dtype, **overrides}
        return marian_from_pretrained(path, **overrides)
    if hf.get("model_type") == "t5":
        from jaxformer.convert.t5 import t5_from_pretrained

        if head is not None:
            raise ValueError("head= applies to BERT-family encoders; T5 keeps its LM head.")
        if dtype != "float32":
            overrides = {"dtype": dtype, **overrides}
        return t5_from_pretrained(path, **overrides)
    if hf.get("model_type") in ("bart", "mbart"):
        from jaxformer.convert.bart import bart_from_pretrained

        if head is not None:
            raise ValueError("head= applies to BERT-family encoders; BART keeps its LM head.")
        if dtype != "float32":
            overrides = {"dtype": dtype, **overrides}
        return bart_from_pretrained(path, **overrides)
    ckpt = encoder_config_from_hf(hf)
    sd = load_hf_state_dict(path)
    changes = dict(dtype=dtype, **overrides)
    if head is not None:
        changes["head"] = None if head == "base" else head
    cfg = ckpt.replace(**changes)
    # The pooler comes with the checkpoint's class; keep it if the file has one, and build one
    # when the new head needs it.
    has_pooler = any(k.endswith(("pooler.dense.weight", "pooler.weight")) for k in sd)
    needs_pooler = cfg.head == "pretraining" or (
        cfg.head == "sequence_classification" and cfg.classifier_style == "pooler"
    )
    if "with_pooler" not in overrides and cfg.family != "electra":
        cfg = cfg.replace(with_pooler=has_pooler or needs_pooler)

    def fresh(p: str) -> bool:  # weights we may initialise: the head and pooler we added
        new_head = cfg.head != ckpt.head and not p.startswith("encoder/")
        return new_head or (p.startswith("encoder/pooler/") and not has_pooler)

    flat, missing, unused = convert_hf_state_dict(sd, cfg, allow_missing=fresh)
    if unused:
        warnings.warn(
            f"{len(unused)} weights in {path!r} were not used: {', '.join(unused)}", stacklevel=2
        )
    if missing:
        warnings.warn(
            f"newly initialised (not in the checkpoint): {', '.join(missing)}", stacklevel=2
        )
        flat.update(_fresh_params(cfg, missing, seed))
    return EncoderModel(cfg), finish_params(flat, cfg)


def _fresh_params(cfg: EncoderConfig, paths: list[str], seed: int) -> dict[str, np.ndarray]:
    """The model's own init for the given params (kernels and tables N(0, initializer_range),
    LayerNorm scales 1, biases 0), drawn with numpy: compiling `model.init` for a few head
    weights would cost seconds."""
    shapes = param_shapes(cfg.replace(scan_layers=False, remat_policy="none"))
    return fresh_arrays(shapes, paths, cfg.initializer_range, cfg.param_dtype, seed)


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


def save_pretrained(model, params, path: str) -> None:
    """Writes `config.json` + `model.safetensors` that `transformers.AutoModel*` loads back
    (the class named in `architectures`) with the same outputs. Tied decoder copies are
    written too. Raises `ConfigError` for configs HF cannot express (pre-LN, ...). A
    `Transformer` (encoder-decoder) is written as a `MarianMTModel` directory, a
    `ModernBertModel` as the ModernBERT class of its head."""
    from safetensors.flax import save_file

    if isinstance(model, ModernBertModel):
        from jaxformer.convert.modernbert import modernbert_save_pretrained

        return modernbert_save_pretrained(model, params, path)
    from jaxformer.models.bart import Bart
    from jaxformer.models.t5 import T5

    if isinstance(model, Bart):
        from jaxformer.convert.bart import bart_save_pretrained

        return bart_save_pretrained(model, params, path)
    if isinstance(model, T5):
        from jaxformer.convert.t5 import t5_save_pretrained

        return t5_save_pretrained(model, params, path)
    if not isinstance(model, EncoderModel):  # the encoder-decoder Transformer -> Marian
        from jaxformer.convert.marian import marian_save_pretrained

        return marian_save_pretrained(model, params, path)
    cfg = model.cfg
    hf = hf_config_from_encoder_config(cfg)
    sd = hf_state_dict_from_params(params, cfg)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2, sort_keys=True)
    # flax's writer keeps bf16; metadata format=pt is what transformers checks for.
    save_file(
        {k: jax.numpy.asarray(v) for k, v in sd.items()},
        os.path.join(path, SAFETENSORS),
        metadata={"format": "pt"},
    )
