"""Pure mappings between HF PyTorch state dicts and jaxformer parameter trees.

One table per family lists (our module path, HF module name, kind); the kind says how the
tensors are laid out on each side. HF `nn.Linear` stores `weight` as [out, in]; our Dense
kernels are [in, out], attention q/k/v kernels [embed, heads, kv], the output [heads, kv, embed].
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from jaxformer.convert.hf_config import BASE_PREFIX, check_hf_compatible, hf_has_pooler, hf_layout
from jaxformer.models.configs import EncoderConfig

# kind -> {our leaf: HF leaf}
_LEAVES = {
    "dense": {"kernel": "weight", "bias": "bias"},
    "qkv": {"kernel": "weight", "bias": "bias"},
    "attn_out": {"kernel": "weight", "bias": "bias"},
    "norm": {"scale": "weight", "bias": "bias"},
    "embed": {"embedding": "weight"},
    "param": {"": ""},
}


def _from_hf(kind: str, leaf: str, w, cfg: EncoderConfig):
    """One HF tensor -> our layout (works on numpy arrays and on shapes via eval_shape)."""
    n, d = cfg.num_heads, cfg.head_dim
    if kind in ("dense", "qkv", "attn_out") and leaf == "kernel":
        k = w.T  # [out, in] -> [in, out]
        if kind == "qkv":
            return k.reshape(k.shape[0], n, d)  # [embed, heads * kv] -> [embed, heads, kv]
        if kind == "attn_out":
            return k.reshape(n, d, k.shape[-1])  # [heads * kv, embed] -> [heads, kv, embed]
        return k
    if kind == "qkv" and leaf == "bias":
        return w.reshape(n, d)  # [heads * kv] -> [heads, kv]
    return w


def _to_hf(kind: str, leaf: str, x):
    """Our tensor -> the HF layout (inverse of `_from_hf`)."""
    if kind in ("dense", "qkv", "attn_out") and leaf == "kernel":
        if kind == "qkv":
            x = x.reshape(x.shape[0], -1)  # [embed, heads, kv] -> [embed, heads * kv]
        elif kind == "attn_out":
            x = x.reshape(-1, x.shape[-1])  # [heads, kv, embed] -> [heads * kv, embed]
        return x.T  # [in, out] -> [out, in]
    if kind == "qkv" and leaf == "bias":
        return x.reshape(-1)
    return x


# -- tables ----------------------------------------------------------------------------------


# HF's names inside one block: (q/k/v with {}, attention out, its norm, ffn in, ffn out, norm).
_BLOCK_NAMES = {
    "bert": (
        "attention.self.{}",
        "attention.output.dense",
        "attention.output.LayerNorm",
        "intermediate.dense",
        "output.dense",
        "output.LayerNorm",
    ),
    "albert": (
        "attention.{}",
        "attention.dense",
        "attention.LayerNorm",
        "ffn",
        "ffn_output",
        "full_layer_layer_norm",
    ),
}


def _block(i: int, h: str, names: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """Our physical block i against HF's block under `h`, named by `names`."""
    qkv, attn_out, attn_norm, wi, wo, norm = names
    return [
        (f"encoder/attention_{i}/attention/{q}", f"{h}.{qkv.format(q)}", "qkv")
        for q in ("query", "key", "value")
    ] + [
        (f"encoder/attention_{i}/attention/out", f"{h}.{attn_out}", "attn_out"),
        (f"encoder/attention_{i}/norm", f"{h}.{attn_norm}", "norm"),
        (f"encoder/mlp_{i}/mlp/wi", f"{h}.{wi}", "dense"),
        (f"encoder/mlp_{i}/mlp/wo", f"{h}.{wo}", "dense"),
        (f"encoder/mlp_{i}/norm", f"{h}.{norm}", "norm"),
    ]


def _bert_layer(i: int) -> list[tuple[str, str, str]]:
    """BERT / RoBERTa / ELECTRA: physical block i is `encoder.layer.i`."""
    return _block(i, f"encoder.layer.{i}", _BLOCK_NAMES["bert"])


def _albert_layer(p: int, inner: int) -> list[tuple[str, str, str]]:
    """ALBERT: physical block p = g * inner_group_num + j is group g, layer j."""
    g, j = divmod(p, inner)
    h = f"encoder.albert_layer_groups.{g}.albert_layers.{j}"
    return _block(p, h, _BLOCK_NAMES["albert"])


def _base_modules(cfg: EncoderConfig) -> list[tuple[str, str, str]]:
    """Base-model modules; HF names without the `bert.` (etc.) prefix."""
    fam = cfg.family
    mods = [
        ("encoder/embeddings/word", "embeddings.word_embeddings", "embed"),
        ("encoder/embeddings/position", "embeddings.position_embeddings", "embed"),
        ("encoder/embeddings/token_type", "embeddings.token_type_embeddings", "embed"),
        ("encoder/embeddings/norm", "embeddings.LayerNorm", "norm"),
    ]
    if fam == "albert":
        if cfg.emb_size != cfg.hidden_size:  # E == H: see ALBERT_IDENTITY_PROJ
            mods.append(("encoder/embed_proj", "encoder.embedding_hidden_mapping_in", "dense"))
        groups, inner = hf_layout(cfg)
        for p in range(groups * inner):
            mods += _albert_layer(p, inner)
    else:
        if cfg.emb_size != cfg.hidden_size:  # ELECTRA only (checked by check_hf_compatible)
            mods.append(("encoder/embed_proj", "embeddings_project", "dense"))
        for i in range(cfg.num_layers):
            mods += _bert_layer(i)
    if cfg.with_pooler:
        mods.append(("encoder/pooler", "pooler" if fam == "albert" else "pooler.dense", "dense"))
    return mods


# HF ALBERT always has embedding_hidden_mapping_in; jaxformer (like the original ALBERT code)
# projects only when E != H. With E == H we write an identity and accept only an identity.
ALBERT_IDENTITY_PROJ = "encoder.embedding_hidden_mapping_in"


# (family, head) -> head modules (HF names are top level, never prefixed).
_MLM_NAMES = {  # family -> HF's (transform dense, its LayerNorm, output bias)
    "bert": (
        "cls.predictions.transform.dense",
        "cls.predictions.transform.LayerNorm",
        "cls.predictions.bias",
    ),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
    "albert": ("predictions.dense", "predictions.LayerNorm", "predictions.bias"),
    "electra": (
        "generator_predictions.dense",
        "generator_predictions.LayerNorm",
        "generator_lm_head.bias",
    ),
}
_MLM = {
    fam: [
        ("mlm/transform", transform, "dense"),
        ("mlm/norm", norm, "norm"),
        ("mlm/bias", bias, "param"),
    ]
    for fam, (transform, norm, bias) in _MLM_NAMES.items()
}
# Copies HF keeps of our tied MLM decoder: HF key -> our path it equals.
TIED = {
    "bert": {
        "cls.predictions.decoder.weight": "encoder/embeddings/word/embedding",
        "cls.predictions.decoder.bias": "mlm/bias",
    },
    "roberta": {
        "lm_head.decoder.weight": "encoder/embeddings/word/embedding",
        "lm_head.decoder.bias": "mlm/bias",
    },
    "albert": {
        "predictions.decoder.weight": "encoder/embeddings/word/embedding",
        "predictions.decoder.bias": "mlm/bias",
    },
    "electra": {"generator_lm_head.weight": "encoder/embeddings/word/embedding"},
}
_PAIR = {"bert": "cls.seq_relationship", "albert": "sop_classifier.classifier"}


def _head_modules(cfg: EncoderConfig) -> list[tuple[str, str, str]]:
    fam, head = cfg.family, cfg.head
    if head in ("mlm", "pretraining"):
        mods = list(_MLM[fam])
        if head == "pretraining":
            mods.append(("pair_head/dense", _PAIR[fam], "dense"))
        return mods
    if head == "rtd":
        return [
            ("rtd/dense", "discriminator_predictions.dense", "dense"),
            ("rtd/prediction", "discriminator_predictions.dense_prediction", "dense"),
        ]
    if head == "sequence_classification" and cfg.classifier_style == "cls_mlp":
        return [
            ("classifier/dense", "classifier.dense", "dense"),
            ("classifier/out_proj", "classifier.out_proj", "dense"),
        ]
    if head in ("sequence_classification", "token_classification"):
        return [("classifier/out_proj", "classifier", "dense")]
    if head == "question_answering":
        return [("qa/out_proj", "qa_outputs", "dense")]
    return []


def hf_prefix(cfg: EncoderConfig) -> str:
    """'' for a bare base model (as HF `BertModel` saves), else e.g. 'bert.'."""
    return "" if cfg.head is None else BASE_PREFIX[cfg.family] + "."


def param_table(cfg: EncoderConfig) -> Iterator[tuple[str, str, str, str, str]]:
    """Every (our flat path, HF key, kind, our leaf, HF key without prefix) of the unscanned
    tree; HF keys prefixed as HF's class for `cfg` saves them."""
    check_hf_compatible(cfg)
    pre = hf_prefix(cfg)
    for mods, p in ((_base_modules(cfg), pre), (_head_modules(cfg), "")):
        for ours, theirs, kind in mods:
            for leaf, hf_leaf in _LEAVES[kind].items():
                path = f"{ours}/{leaf}" if leaf else ours
                bare = f"{theirs}.{hf_leaf}" if hf_leaf else theirs
                yield path, p + bare, kind, leaf, bare


# -- shapes and scan ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def param_shapes(cfg: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Flat path -> shape of the params `EncoderModel(cfg).init` creates (no compute)."""
    from jaxformer.models.bert import EncoderModel  # local: models must not import convert

    model = EncoderModel(cfg)
    tree = jax.eval_shape(lambda: model.init(jax.random.key(0), **model.dummy_inputs()))
    return {k: v.shape for k, v in flatten_dict(nn.unbox(tree)["params"], sep="/").items()}


def _stack_layers(flat: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """encoder/attention_{i}/... -> encoder/layers/attention/... with a leading layer axis."""
    out = {
        k: v for k, v in flat.items() if not k.startswith(("encoder/attention_", "encoder/mlp_"))
    }
    for block in ("attention", "mlp"):
        rests = {k.split("/", 2)[2] for k in flat if k.startswith(f"encoder/{block}_0/")}
        for rest in rests:
            out[f"encoder/layers/{block}/{rest}"] = np.stack(
                [flat[f"encoder/{block}_{i}/{rest}"] for i in range(num_layers)]
            )
    return out


def _unstack_layers(flat: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in flat.items():
        if k.startswith("encoder/layers/"):
            block, rest = k[len("encoder/layers/") :].split("/", 1)
            for i in range(v.shape[0]):
                out[f"encoder/{block}_{i}/{rest}"] = v[i]
        else:
            out[k] = v
    return out


# -- the two mappings --------------------------------------------------------------------------


class MissingWeightError(KeyError):
    """A weight the jaxformer model needs is absent from the HF state dict."""

    def __str__(self):  # KeyError would print the message quoted
        return str(self.args[0])


def _strip_prefix(state_dict: dict[str, Any], cfg: EncoderConfig) -> tuple[dict, str]:
    """Keys in the form `param_table` uses for `cfg`, whatever prefix the file has; returns
    (state dict, the prefix found in the file)."""
    want = hf_prefix(cfg)
    found = BASE_PREFIX[cfg.family] + "."
    has_prefix = any(k.startswith(found) for k in state_dict)
    if has_prefix == bool(want):
        return dict(state_dict), found if has_prefix else ""
    if has_prefix:  # task checkpoint loaded as a base model: drop the prefix
        return {k.removeprefix(found): v for k, v in state_dict.items()}, found
    # bare base checkpoint loaded with a head: add the prefix to everything but head weights
    heads = {theirs.split(".")[0] for _, theirs, _ in _head_modules(cfg)} | {
        k.split(".")[0] for k in TIED[cfg.family]
    }
    return {k if k.split(".")[0] in heads else found + k: v for k, v in state_dict.items()}, ""


def _rename_legacy(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints converted from TF (e.g. the original bert-base-uncased .bin) name LayerNorm
    params gamma/beta; transformers renames them on load, and so do we."""

    def rename(k: str) -> str:
        if k.endswith(".gamma"):
            return k[: -len("gamma")] + "weight"
        if k.endswith(".beta"):
            return k[: -len("beta")] + "bias"
        return k

    return {rename(k): v for k, v in state_dict.items()}


def warn_load_report(path: str, unused: list[str], missing: list[str]) -> None:
    """Warns of checkpoint weights left unused and of weights initialised afresh."""
    if unused:
        warnings.warn(
            f"{len(unused)} weights in {path!r} were not used: {', '.join(unused)}", stacklevel=3
        )
    if missing:
        warnings.warn(
            f"newly initialised (not in the checkpoint): {', '.join(missing)}", stacklevel=3
        )


def read_hf_dir(path: str, model_type: str | None = None, generation: bool = True):
    """(config.json, generation_config.json or None, weights as numpy) of a local HF
    directory; with `model_type`, a directory holding another type is a ValueError.
    `generation=False` leaves generation_config.json unread."""
    from jaxformer.convert.hf_files import load_hf_state_dict, read_hf_config, read_json_file

    hf = read_hf_config(path)
    if model_type is not None and hf.get("model_type") != model_type:
        raise ValueError(f"{path!r} holds model_type={hf.get('model_type')!r}, not {model_type!r}.")
    gen_file = os.path.join(path, "generation_config.json")
    gen = read_json_file(gen_file) if generation and os.path.isfile(gen_file) else None
    return hf, gen, {k: _to_numpy(v) for k, v in load_hf_state_dict(path).items()}


def params_or_error(path: str, convert: Callable, state: dict, cfg) -> dict:
    """`convert(state, cfg)`, with a weight the config needs but `path` lacks reported as a
    ModelFileError."""
    from jaxformer.convert.hf_files import ModelFileError

    try:
        return convert(state, cfg)
    except KeyError as e:
        raise ModelFileError(
            f"the weights in {path} lack {e.args[0]!r}, which its config.json needs; "
            "re-download or re-export them."
        ) from None


def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor (torch is optional: only .bin files bring it)
        v = v.detach().cpu()
        if str(v.dtype) == "torch.bfloat16":
            v = v.float()
        return v.numpy()
    return np.asarray(v)


def convert_hf_state_dict(
    state_dict: dict[str, Any],
    cfg: EncoderConfig,
    allow_missing: Callable[[str], bool] = lambda path: False,
) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """The work behind `params_from_hf_state_dict`: returns (flat unscanned params, our
    paths left missing because `allow_missing(path)` allowed it, unused HF keys)."""
    sd, file_prefix = _strip_prefix(_rename_legacy(state_dict), cfg)
    shapes = param_shapes(cfg.replace(scan_layers=False, remat_policy="none"))
    dtype = jnp.dtype(cfg.param_dtype)
    flat, missing, used = {}, [], set()
    for path, key, kind, leaf, bare in param_table(cfg):
        want = shapes[path]
        if key not in sd:
            if allow_missing(path):
                missing.append(path)
                continue
            is_base = key != bare or cfg.head is None
            shown = file_prefix + bare if is_base else key  # as the file spells it
            raise MissingWeightError(
                f"HF weight {shown!r} is missing from the checkpoint (needed for jaxformer "
                f"param {path!r} of shape {want})."
            )
        w = _to_numpy(sd[key])
        hf_shape = jax.eval_shape(
            functools.partial(_to_hf, kind, leaf), jax.ShapeDtypeStruct(want, jnp.float32)
        ).shape
        if w.shape != hf_shape:
            raise ValueError(
                f"HF weight {key!r} has shape {tuple(w.shape)}, expected "
                f"{tuple(hf_shape)} for jaxformer param {path!r} {want}; the "
                "config.json and the weights disagree."
            )
        flat[path] = np.asarray(_from_hf(kind, leaf, w, cfg), dtype=dtype)
        used.add(key)
    if cfg.head in ("mlm", "pretraining"):
        _check_tied(sd, cfg, flat, used)
    if cfg.family == "albert" and cfg.emb_size == cfg.hidden_size:
        _check_identity_proj(sd, hf_prefix(cfg) + ALBERT_IDENTITY_PROJ, used)
    unused = sorted(k for k in sd if k not in used and not _is_buffer(k))
    return flat, missing, unused


def _is_buffer(key: str) -> bool:
    """Non-persistent buffers older checkpoints carry (not weights)."""
    return key.endswith(("embeddings.position_ids", "embeddings.token_type_ids"))


def _check_identity_proj(sd, name: str, used: set) -> None:
    w, b = sd.get(name + ".weight"), sd.get(name + ".bias")
    if w is None or b is None:
        raise MissingWeightError(f"HF weight {name + '.weight'!r} is missing from the checkpoint.")
    w, b = _to_numpy(w), _to_numpy(b)
    if not (np.array_equal(w, np.eye(len(w), dtype=w.dtype)) and not b.any()):
        raise ValueError(
            f"{name!r} is not the identity: this HF ALBERT has embedding_size == "
            "hidden_size with a learned projection, which jaxformer does not have."
        )
    used.update({name + ".weight", name + ".bias"})


def _check_tied(sd, cfg, flat, used) -> None:
    """HF's decoder copies must equal the tied tensors: our decoder is always tied."""
    for key, path in TIED[cfg.family].items():
        if key not in sd or path not in flat:
            continue
        w = _to_numpy(sd[key])
        if w.shape != flat[path].shape or not np.array_equal(
            w.astype(flat[path].dtype), flat[path]
        ):
            raise ValueError(
                f"HF weight {key!r} differs from the tensor it should be tied to (jaxformer "
                f"{path!r}): jaxformer ties the MLM decoder to the word embeddings and cannot "
                "load an untied decoder."
            )
        used.add(key)


def params_from_hf_state_dict(state_dict: dict[str, Any], cfg: EncoderConfig) -> dict:
    """HF state dict (torch tensors or arrays, with or without the `bert.` prefix) -> the
    nested params of `EncoderModel(cfg)` (unboxed numpy, `cfg.param_dtype`, stacked when
    `cfg.scan_layers`). Missing weight: `MissingWeightError`; wrong shape: `ValueError`;
    unused real weights: a warning naming them."""
    flat, _, unused = convert_hf_state_dict(state_dict, cfg)
    if unused:
        warnings.warn(f"{len(unused)} HF weights were not used: {', '.join(unused)}", stacklevel=2)
    return finish_params(flat, cfg)


def finish_params(flat: dict[str, Any], cfg: EncoderConfig) -> dict:
    """Flat unscanned params -> the nested tree `cfg` expects (stacked if scan_layers)."""
    if cfg.scan_layers:
        flat = _stack_layers(flat, cfg.num_layers)
    return unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def hf_state_dict_from_params(params, cfg: EncoderConfig) -> dict[str, np.ndarray]:
    """Our params (boxed or not, scanned or not) -> the state dict HF's class for `cfg` holds,
    tied decoder copies included. Params HF has no slot for (a pooler on a task model whose
    HF class has none) are dropped with a warning."""
    params = nn.unbox(params)
    if "params" in params and "encoder" not in params:
        params = params["params"]
    flat = {k: np.asarray(v) for k, v in flatten_dict(params, sep="/").items()}
    if cfg.scan_layers:
        flat = _unstack_layers(flat)
    hf_cfg = cfg.replace(with_pooler=cfg.with_pooler and hf_has_pooler(cfg.family, cfg.head))
    sd = {}
    for path, key, kind, leaf, _ in param_table(hf_cfg):
        if path not in flat:
            raise MissingWeightError(f"jaxformer param {path!r} (for HF {key!r}) is missing.")
        sd[key] = np.ascontiguousarray(_to_hf(kind, leaf, flat.pop(path)))
    if cfg.head in ("mlm", "pretraining"):
        pre = hf_prefix(cfg)
        for key, path in TIED[cfg.family].items():
            src = (
                pre + "embeddings.word_embeddings.weight"
                if "embedding" in path
                else (_MLM[cfg.family][2][1])
            )
            sd[key] = sd[src].copy()
    if cfg.family == "albert" and cfg.emb_size == cfg.hidden_size:
        name = hf_prefix(cfg) + ALBERT_IDENTITY_PROJ
        sd[name + ".weight"] = np.eye(
            cfg.hidden_size,
            dtype=sd[name.replace(ALBERT_IDENTITY_PROJ, "embeddings.LayerNorm.weight")].dtype,
        )
        sd[name + ".bias"] = np.zeros(cfg.hidden_size, sd[name + ".weight"].dtype)
    if flat:
        warnings.warn(
            f"HuggingFace {cfg.family} has no place for these jaxformer params, "
            f"not saved: {', '.join(sorted(flat))}",
            stacklevel=2,
        )
    if cfg.with_pooler is False and hf_has_pooler(cfg.family, cfg.head):
        warnings.warn(
            "this model has no pooler but HF's class does: HF will initialise "
            "its pooler randomly (last_hidden_state is unaffected).",
            stacklevel=2,
        )
    return sd
