"""HuggingFace ModernBERT <-> jaxformer `ModernBertModel`: config, weights, directories.

Pure mappings (`modernbert_config_from_hf`, `hf_config_from_modernbert`,
`params_from_modernbert_state_dict`, `modernbert_state_dict_from_params`) work on dicts of
numpy arrays. HF fuses q, k, v into one `Wqkv` [3H, H] (rows: q, k, v, each heads x
head_dim) and the GeGLU input and gate into `Wi` [2I, H] (input rows first); our kernels
are [in, out] with those splits as axes.
"""

from __future__ import annotations

import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxformer.convert.hf_config import (
    _ACT_FROM_HF,
    _ACT_TO_HF,
    SIZE_KEYS,
    fields_from_hf,
    hf_fields,
    hf_labels,
    labels_from_hf,
)
from jaxformer.convert.hf_params import MissingWeightError, _to_numpy, warn_load_report
from jaxformer.models.configs import ConfigError
from jaxformer.models.modernbert import ModernBertModel
from jaxformer.models.modernbert_configs import LAYER_TYPES, ModernBertConfig

__all__ = [
    "hf_config_from_modernbert",
    "modernbert_config_from_hf",
    "modernbert_from_pretrained",
    "modernbert_save_pretrained",
    "modernbert_state_dict_from_params",
    "params_from_modernbert_state_dict",
]

ARCHITECTURES = {
    None: "ModernBertModel",
    "mlm": "ModernBertForMaskedLM",
    "sequence_classification": "ModernBertForSequenceClassification",
    "token_classification": "ModernBertForTokenClassification",
    "question_answering": "ModernBertForQuestionAnswering",
}
HEAD_OF_ARCHITECTURE = {arch: head for head, arch in ARCHITECTURES.items()}
PREFIX = "model."  # where HF's task classes keep the base model
# Our field -> config.json key, for the values both keep as they are; the dropouts (named
# alike) are read as floats.
_KEYS = {
    **SIZE_KEYS,
    **{k: k for k in ("norm_bias", "attention_bias", "mlp_bias", "decoder_bias")},
    **{k: k for k in ("classifier_bias", "classifier_pooling", "initializer_range")},
    "layer_norm_eps": "norm_eps",
    "local_window": "local_attention",
}
_DROPOUTS = ("embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout")
SPECIAL_IDS = dict(bos_token_id=50281, eos_token_id=50282, cls_token_id=50281, sep_token_id=50282)
# HF ModernBertConfig defaults, for keys a config.json leaves out.
HF_DEFAULTS = dict(
    vocab_size=50368,
    hidden_size=768,
    intermediate_size=1152,
    num_hidden_layers=22,
    num_attention_heads=12,
    hidden_activation="gelu",
    max_position_embeddings=8192,
    initializer_range=0.02,
    norm_eps=1e-5,
    norm_bias=False,
    pad_token_id=50283,
    attention_bias=False,
    attention_dropout=0.0,
    local_attention=128,
    embedding_dropout=0.0,
    mlp_bias=False,
    mlp_dropout=0.0,
    decoder_bias=True,
    classifier_pooling="cls",
    classifier_dropout=0.0,
    classifier_bias=False,
    classifier_activation="gelu",
    global_attn_every_n_layers=3,
    global_rope_theta=160000.0,
    local_rope_theta=10000.0,
)


def _rope_theta(hf: dict, kind: str, old_key: str) -> float:
    """rope_theta of a layer kind from transformers 5's `rope_parameters`, else the
    older `global_rope_theta` / `local_rope_theta` keys."""
    params = (hf.get("rope_parameters") or {}).get(kind) or {}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        raise ConfigError(
            f"rope_parameters[{kind!r}] has rope_type={rope_type!r}; jaxformer's ModernBERT "
            "implements only the 'default' rotary embedding."
        )
    return float(params.get("rope_theta", hf.get(old_key, HF_DEFAULTS[old_key])))


def modernbert_config_from_hf(hf: dict[str, Any], **overrides) -> ModernBertConfig:
    """A `ModernBertConfig` (head included) from a HF `config.json` dict; `overrides` win."""
    get = lambda k: hf.get(k, HF_DEFAULTS.get(k))
    arch = (hf.get("architectures") or ["ModernBertModel"])[0]
    if arch not in HEAD_OF_ARCHITECTURE:
        raise ConfigError(
            f"unsupported HuggingFace architecture {arch!r} (model_type='modernbert'); "
            f"supported: {', '.join(sorted(HEAD_OF_ARCHITECTURE))}."
        )
    acts = {}
    for key in ("hidden_activation", "classifier_activation"):
        if get(key) not in _ACT_FROM_HF:
            raise ConfigError(
                f"{key}={get(key)!r} is not supported; known: {sorted(_ACT_FROM_HF)}."
            )
        acts[key] = _ACT_FROM_HF[get(key)]
    if hf.get("tie_word_embeddings", True) is False and HEAD_OF_ARCHITECTURE[arch] == "mlm":
        raise ConfigError(
            "tie_word_embeddings=false: jaxformer's ModernBERT ties the MLM decoder to the "
            "token embeddings and cannot load an untied one."
        )
    layers = get("num_hidden_layers")
    layer_types = hf.get("layer_types")
    if layer_types is None:  # configs written before transformers 5
        every = get("global_attn_every_n_layers")
        layer_types = [
            "sliding_attention" if i % every else "full_attention" for i in range(layers)
        ]
    for i, kind in enumerate(layer_types):
        if kind not in LAYER_TYPES:
            raise ConfigError(
                f"config.json layer_types[{i}]={kind!r} is not a layer type jaxformer knows; "
                f"known: {list(LAYER_TYPES)}."
            )
    num_labels, names = labels_from_hf(hf)
    pad = get("pad_token_id")
    fields = dict(
        head=HEAD_OF_ARCHITECTURE[arch],
        **fields_from_hf(get, _KEYS),
        **{k: float(get(k)) for k in _DROPOUTS},
        layer_types=tuple(layer_types),
        global_rope_theta=_rope_theta(hf, "full_attention", "global_rope_theta"),
        local_rope_theta=_rope_theta(hf, "sliding_attention", "local_rope_theta"),
        hidden_act=acts["hidden_activation"],
        classifier_activation=acts["classifier_activation"],
        pad_token_id=0 if pad is None else pad,
        num_labels=num_labels,
        label_names=names,
    )
    return ModernBertConfig.from_dict({**fields, **overrides})


def hf_config_from_modernbert(cfg: ModernBertConfig) -> dict[str, Any]:
    """The `config.json` dict transformers needs to build the same model as `cfg`."""
    rope = lambda theta: {"rope_type": "default", "rope_theta": theta}
    return dict(
        architectures=[ARCHITECTURES[cfg.head]],
        model_type="modernbert",
        **hf_fields(cfg, _KEYS),
        **{k: getattr(cfg, k) for k in _DROPOUTS},
        hidden_activation=_ACT_TO_HF[cfg.hidden_act],
        classifier_activation=_ACT_TO_HF[cfg.classifier_activation],
        pad_token_id=cfg.pad_token_id,
        # Released ids where the vocabulary has them; transformers refuses ids past it.
        **{k: (v if v < cfg.vocab_size else None) for k, v in SPECIAL_IDS.items()},
        layer_types=list(cfg.layer_kinds),
        rope_parameters={
            "full_attention": rope(cfg.global_rope_theta),
            "sliding_attention": rope(cfg.local_rope_theta),
        },
        tie_word_embeddings=True,
        dtype=cfg.param_dtype,
        **hf_labels(cfg),
    )


# -- weights -----------------------------------------------------------------------------------
# Each entry: (our flat path, HF key without the `model.` prefix, kind). Kinds: "T" (Linear
# weight, transposed), "id" (same layout), and the fused splits below.


def _norm(ours: str, theirs: str, bias: bool) -> list[tuple[str, str, str]]:
    out = [(f"{ours}/scale", f"{theirs}.weight", "id")]
    return out + ([(f"{ours}/bias", f"{theirs}.bias", "id")] if bias else [])


def _linear(ours: str, theirs: str, bias: bool, kind: str = "T") -> list[tuple[str, str, str]]:
    out = [(f"{ours}/kernel", f"{theirs}.weight", kind)]
    return out + ([(f"{ours}/bias", f"{theirs}.bias", kind + "_bias")] if bias else [])


def _base_table(cfg: ModernBertConfig) -> list[tuple[str, str, str]]:
    nb = cfg.norm_bias
    rows = [("encoder/word/embedding", "embeddings.tok_embeddings.weight", "id")]
    rows += _norm("encoder/embedding_norm", "embeddings.norm", nb)
    for i in range(cfg.num_layers):
        ours, theirs = f"encoder/layers_{i}", f"layers.{i}"
        if i:
            rows += _norm(f"{ours}/attention_norm", f"{theirs}.attn_norm", nb)
        rows += _linear(f"{ours}/attention/*", f"{theirs}.attn.Wqkv", cfg.attention_bias, "qkv")
        rows += _linear(f"{ours}/attention/out", f"{theirs}.attn.Wo", cfg.attention_bias, "out")
        rows += _norm(f"{ours}/mlp_norm", f"{theirs}.mlp_norm", nb)
        rows += _linear(f"{ours}/mlp/wi", f"{theirs}.mlp.Wi", cfg.mlp_bias, "wi")
        rows += _linear(f"{ours}/mlp/wo", f"{theirs}.mlp.Wo", cfg.mlp_bias)
    return rows + _norm("encoder/final_norm", "final_norm", nb)


def _head_table(cfg: ModernBertConfig) -> list[tuple[str, str, str]]:
    """Head weights, HF keys top level."""
    if cfg.head is None:
        return []
    ours = {"mlm": "mlm", "question_answering": "qa/head"}.get(cfg.head, "classifier/head")
    rows = _linear(f"{ours}/dense", "head.dense", cfg.classifier_bias)
    rows += _norm(f"{ours}/norm", "head.norm", cfg.norm_bias)
    if cfg.head == "mlm":
        return rows + ([("mlm_bias", "decoder.bias", "id")] if cfg.decoder_bias else [])
    out = "qa/out_proj" if cfg.head == "question_answering" else "classifier/out_proj"
    return rows + _linear(out, "classifier", True)


def _table(cfg: ModernBertConfig) -> list[tuple[str, str, str]]:
    pre = "" if cfg.head is None else PREFIX
    return [(o, pre + t, k) for o, t, k in _base_table(cfg)] + _head_table(cfg)


def _split(kind: str, w: np.ndarray, cfg: ModernBertConfig) -> np.ndarray:
    """HF tensor -> ours (qkv: stacked [3, ...] for the three projections)."""
    n, d, i = cfg.num_heads, cfg.head_dim, cfg.intermediate_size
    if kind == "T":
        return w.T
    if kind == "qkv":  # [3 n d, H] -> [3, H, n, d]
        return w.reshape(3, n, d, -1).transpose(0, 3, 1, 2)
    if kind == "qkv_bias":
        return w.reshape(3, n, d)
    if kind == "out":  # [H, n d] -> [n, d, H]
        return w.T.reshape(n, d, -1)
    if kind == "wi":  # [2 I, H] -> [H, 2, I]
        return w.T.reshape(-1, 2, i)
    if kind == "wi_bias":
        return w.reshape(2, i)
    return w  # id, T_bias, out_bias


def _join(kind: str, x: np.ndarray) -> np.ndarray:
    """Inverse of `_split`."""
    if kind == "T":
        return x.T
    if kind == "qkv":  # [3, H, n, d] -> [3 n d, H]
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    if kind in ("qkv_bias", "wi_bias"):
        return x.reshape(-1)
    if kind == "out":  # [n, d, H] -> [H, n d]
        return x.reshape(-1, x.shape[-1]).T
    if kind == "wi":  # [H, 2, I] -> [2 I, H]
        return x.reshape(x.shape[0], -1).T
    return x


def _qkv_paths(path: str) -> list[str]:
    return [path.replace("/*", f"/{p}") for p in ("query", "key", "value")]


def param_shapes(cfg: ModernBertConfig) -> dict[str, tuple]:
    """Flat path -> shape of what `ModernBertModel(cfg).init` creates (no compute)."""
    model = ModernBertModel(cfg)
    tree = jax.eval_shape(lambda: model.init(jax.random.key(0), **model.dummy_inputs()))
    return {k: v.shape for k, v in flatten_dict(nn.unbox(tree)["params"], sep="/").items()}


def _strip_or_add_prefix(sd: dict, cfg: ModernBertConfig) -> dict:
    """Keys as `_table(cfg)` spells them, whether the file is a bare or a task model."""
    has = any(k.startswith(PREFIX) for k in sd)
    if has and cfg.head is None:
        return {k.removeprefix(PREFIX): v for k, v in sd.items()}
    if not has and cfg.head is not None:
        top = ("head.", "decoder.", "classifier.")
        return {k if k.startswith(top) else PREFIX + k: v for k, v in sd.items()}
    return dict(sd)


def convert_modernbert_state_dict(
    state_dict: dict, cfg: ModernBertConfig, allow_missing=lambda path: False
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """(flat params, our paths missing but allowed, unused HF keys)."""
    sd = _strip_or_add_prefix(state_dict, cfg)
    shapes = param_shapes(cfg)
    dtype = jnp.dtype(cfg.param_dtype)
    flat, missing, used = {}, [], set()
    for path, key, kind in _table(cfg):
        paths = _qkv_paths(path) if kind.startswith("qkv") else [path]
        if key not in sd:
            if all(allow_missing(p) for p in paths):
                missing += paths
                continue
            raise MissingWeightError(
                f"HF weight {key!r} is missing from the checkpoint (needed for jaxformer "
                f"param {paths[0]!r}); the config.json and the weights disagree."
            )
        w = _split(kind, _to_numpy(sd[key]), cfg)
        parts = list(w) if kind.startswith("qkv") else [w]
        for p, part in zip(paths, parts):
            if part.shape != shapes[p]:
                raise ValueError(
                    f"HF weight {key!r} of shape {tuple(sd[key].shape)} does not fit jaxformer "
                    f"param {p!r} {shapes[p]}; the config.json and the weights disagree."
                )
            flat[p] = np.asarray(part, dtype=dtype)
        used.add(key)
    if cfg.head == "mlm" and "decoder.weight" in sd:
        w = _to_numpy(sd["decoder.weight"]).astype(dtype)
        if not np.array_equal(w, flat.get("encoder/word/embedding", w)):
            raise ValueError(
                "HF weight 'decoder.weight' differs from the token embeddings: jaxformer ties "
                "the MLM decoder to them and cannot load an untied decoder."
            )
        used.add("decoder.weight")
    unused = sorted(k for k in sd if k not in used)
    return flat, missing, unused


def params_from_modernbert_state_dict(state_dict: dict, cfg: ModernBertConfig) -> dict:
    """HF state dict -> the nested params of `ModernBertModel(cfg)` (unboxed numpy)."""
    flat, _, unused = convert_modernbert_state_dict(state_dict, cfg)
    if unused:
        warnings.warn(f"{len(unused)} HF weights were not used: {', '.join(unused)}", stacklevel=2)
    return unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def modernbert_state_dict_from_params(params, cfg: ModernBertConfig) -> dict[str, np.ndarray]:
    """Our params (boxed or not) -> the state dict of HF's class for `cfg` (the tied decoder
    weight included)."""
    params = nn.unbox(params)
    if "params" in params and "encoder" not in params:
        params = params["params"]
    flat = {k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()}
    sd = {}
    for path, key, kind in _table(cfg):
        paths = _qkv_paths(path) if kind.startswith("qkv") else [path]
        for p in paths:
            if p not in flat:
                raise MissingWeightError(f"jaxformer param {p!r} (for HF {key!r}) is missing.")
        x = np.stack([flat[p] for p in paths]) if kind.startswith("qkv") else flat[paths[0]]
        sd[key] = np.ascontiguousarray(_join(kind, x))
    if cfg.head == "mlm":
        sd["decoder.weight"] = sd[PREFIX + "embeddings.tok_embeddings.weight"].copy()
    return sd


# -- directories -------------------------------------------------------------------------------


def modernbert_from_pretrained(
    path: str, head=None, dtype: str = "float32", seed: int = 0, **overrides
) -> tuple[ModernBertModel, dict]:
    """A HF ModernBERT directory -> `(ModernBertModel, params)`; as `from_pretrained`."""
    from jaxformer.convert.hf_files import fresh_arrays, load_hf_state_dict, read_hf_config

    ckpt = modernbert_config_from_hf(read_hf_config(path))
    changes = dict(dtype=dtype, **overrides)
    if head is not None:
        changes["head"] = None if head == "base" else head
    cfg = ckpt.replace(**changes)
    fresh = lambda p: cfg.head != ckpt.head and not p.startswith("encoder/")
    flat, missing, unused = convert_modernbert_state_dict(load_hf_state_dict(path), cfg, fresh)
    warn_load_report(path, unused, missing)
    if missing:
        flat.update(
            fresh_arrays(param_shapes(cfg), missing, cfg.initializer_range, cfg.param_dtype, seed)
        )
    return ModernBertModel(cfg), unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def modernbert_save_pretrained(model: ModernBertModel, params, path: str) -> None:
    """Writes `config.json` + `model.safetensors` that transformers' ModernBERT class for
    the model's head loads with the same outputs."""
    from jaxformer.convert.hf_files import write_model_dir

    cfg = model.cfg
    write_model_dir(
        path, hf_config_from_modernbert(cfg), modernbert_state_dict_from_params(params, cfg)
    )
