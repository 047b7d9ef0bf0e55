"""HuggingFace `BartForConditionalGeneration` / `MBartForConditionalGeneration` <-> jaxformer
`Bart`: parameter trees and local directories (config.json + model.safetensors)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from jaxformer.models.bart import Bart, BartConfig

__all__ = [
    "bart_from_pretrained",
    "bart_save_pretrained",
    "bart_state_dict_from_params",
    "params_from_bart_state_dict",
]

_ATTN = {"self_attn": "self_attention", "encoder_attn": "cross_attention"}
_QKV = (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out"))


def _tensors(cfg: BartConfig) -> Iterator[tuple[tuple, str, str, int]]:
    """(our module path, HF prefix, kind, heads) for every weight+bias group."""
    for stack, n, heads, subs in (
        ("encoder", cfg.encoder_layers, cfg.encoder_attention_heads, ("self_attn",)),
        ("decoder", cfg.decoder_layers, cfg.decoder_attention_heads, ("self_attn", "encoder_attn")),
    ):
        yield (stack, "embedding_norm"), f"model.{stack}.layernorm_embedding", "norm", 0
        for i in range(n):
            ours, hf = (stack, f"layer_{i}"), f"model.{stack}.layers.{i}"
            for sub in subs:
                for h, o in _QKV:
                    yield ours + (_ATTN[sub], o), f"{hf}.{sub}.{h}", o, heads
                yield ours + (f"{_ATTN[sub]}_norm",), f"{hf}.{sub}_layer_norm", "norm", 0
            yield ours + ("mlp", "wi"), f"{hf}.fc1", "dense", 0
            yield ours + ("mlp", "wo"), f"{hf}.fc2", "dense", 0
            yield ours + ("mlp_norm",), f"{hf}.final_layer_norm", "norm", 0
        if cfg.pre_ln:
            yield (stack, "final_norm"), f"model.{stack}.layer_norm", "norm", 0


def _set(tree: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def params_from_bart_state_dict(state: Mapping, cfg: BartConfig) -> dict:
    """HF state dict (name -> array-like) -> our `params` tree (float32 numpy)."""

    def a(k):
        if k not in state:
            raise KeyError(k)
        return np.asarray(state[k], np.float32)

    d = cfg.d_model
    table = next(
        (k for k in ("model.shared.weight", "model.encoder.embed_tokens.weight") if k in state),
        "model.shared.weight",
    )
    params: dict = {"shared_embedding": {"embedding": a(table)}}
    for stack in ("encoder", "decoder"):
        _set(params, (stack, "positions", "embedding"), a(f"model.{stack}.embed_positions.weight"))
    for path, pre, kind, heads in _tensors(cfg):
        w, b = a(f"{pre}.weight"), a(f"{pre}.bias")
        if kind == "norm":
            _set(params, path + ("scale",), w)
        elif kind == "out":
            w = w.T.reshape(heads, d // heads, d)
        elif kind in ("query", "key", "value"):
            w, b = w.T.reshape(d, heads, d // heads), b.reshape(heads, d // heads)
        else:
            w = w.T
        if kind != "norm":
            _set(params, path + ("kernel",), w)
        _set(params, path + ("bias",), b)
    bias = state.get("final_logits_bias")
    params["final_logits_bias"] = (
        np.zeros(cfg.vocab_size, np.float32)
        if bias is None
        else np.asarray(bias, np.float32).reshape(-1)
    )
    return params


def bart_state_dict_from_params(params: Mapping, cfg: BartConfig) -> dict[str, np.ndarray]:
    """Our `params` tree -> HF state dict of float32 numpy arrays."""
    import flax.linen as nn

    params = nn.unbox(params)

    def g(path):
        tree = params
        for p in path:
            tree = tree[p]
        return np.asarray(tree, np.float32)

    table = g(("shared_embedding", "embedding"))
    state = {
        "model.shared.weight": table,
        "model.encoder.embed_tokens.weight": table,
        "model.decoder.embed_tokens.weight": table,
        "lm_head.weight": table,
        "final_logits_bias": g(("final_logits_bias",)).reshape(1, -1),
    }
    for stack in ("encoder", "decoder"):
        state[f"model.{stack}.embed_positions.weight"] = g((stack, "positions", "embedding"))
    d = cfg.d_model
    for path, pre, kind, _ in _tensors(cfg):
        b = g(path + ("bias",)).reshape(-1)
        if kind == "norm":
            w = g(path + ("scale",))
        else:
            w = g(path + ("kernel",))
            w = (w.reshape(d, d) if kind in ("query", "key", "value", "out") else w).T
        state[f"{pre}.weight"], state[f"{pre}.bias"] = w, b
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def bart_from_pretrained(path: str, **overrides) -> tuple[Bart, dict]:
    """A local HF BART / mBART directory -> `(Bart(cfg), params)` (float32)."""
    from jaxformer.convert.hf_params import params_or_error, read_hf_dir

    hf, gen, state = read_hf_dir(path)
    cfg = BartConfig.from_hf(hf, gen, **overrides)
    return Bart(cfg), params_or_error(path, params_from_bart_state_dict, state, cfg)


def bart_save_pretrained(model: Bart, params: Mapping, path: str) -> None:
    """Writes a directory that `BartForConditionalGeneration` (mBART: `MBart...`) loads, with
    a generation_config.json holding the start and forced token ids."""
    from jaxformer.convert.hf_files import write_model_dir

    cfg = model.cfg
    keys = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
    gen = {k: getattr(cfg, k) for k in keys}
    gen.update(
        {
            k: getattr(cfg, k)
            for k in ("forced_bos_token_id", "forced_eos_token_id")
            if getattr(cfg, k) is not None
        }
    )
    write_model_dir(
        path, cfg.to_hf(), bart_state_dict_from_params(params, cfg), generation_config=gen
    )
