"""HuggingFace `T5ForConditionalGeneration` <-> jaxformer `T5`: parameter trees and files.

T5 v1.0 and v1.1 / Flan-T5 (and any `feed_forward_proj` of the form ACT or gated-ACT). The
pure mappings work on dicts of numpy arrays; `t5_from_pretrained` / `t5_save_pretrained` read
and write a local directory (config.json + model.safetensors).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from jaxformer.models.t5 import T5, T5Config

__all__ = [
    "params_from_t5_state_dict",
    "t5_from_pretrained",
    "t5_save_pretrained",
    "t5_state_dict_from_params",
]

_ATTN = {"SelfAttention": "self_attention", "EncDecAttention": "cross_attention"}
_QKV = (("q", "query"), ("k", "key"), ("v", "value"))


def _tensors(cfg: T5Config) -> Iterator[tuple[tuple, str, str]]:
    """(our path, HF key, kind) for every tensor but the embeddings and the output."""
    for stack, n, subs in (
        ("encoder", cfg.num_layers, ("SelfAttention",)),
        ("decoder", cfg.num_decoder_layers, ("SelfAttention", "EncDecAttention")),
    ):
        yield (
            (stack, "relative_bias", "embedding"),
            f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "table",
        )
        for i in range(n):
            ours, hf = (stack, f"layer_{i}"), f"{stack}.block.{i}.layer"
            for j, sub in enumerate(subs):
                name = _ATTN[sub]
                for h, o in _QKV:
                    yield ours + (name, o, "kernel"), f"{hf}.{j}.{sub}.{h}.weight", "qkv"
                yield ours + (name, "out", "kernel"), f"{hf}.{j}.{sub}.o.weight", "out"
                yield ours + (f"{name}_norm", "scale"), f"{hf}.{j}.layer_norm.weight", "norm"
            j = len(subs)
            ff = f"{hf}.{j}.DenseReluDense"
            if cfg.is_gated:
                yield ours + ("ff", "mlp", "wi", "kernel"), f"{ff}.wi_0.weight", "gated"
                yield ours + ("ff", "mlp", "wo", "kernel"), f"{ff}.wo.weight", "dense"
            else:
                yield ours + ("ff", "wi", "kernel"), f"{ff}.wi.weight", "dense"
                yield ours + ("ff", "wo", "kernel"), f"{ff}.wo.weight", "dense"
            yield ours + ("mlp_norm", "scale"), f"{hf}.{j}.layer_norm.weight", "norm"
        yield (stack, "final_norm", "scale"), f"{stack}.final_layer_norm.weight", "norm"


def _set(tree: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _walk(tree, path):
    for p in path:
        if p not in tree:
            raise KeyError(f"parameter {'/'.join(path)} is missing; the params do not match.")
        tree = tree[p]
    return tree


def params_from_t5_state_dict(state: Mapping, cfg: T5Config) -> dict:
    """HF state dict (name -> array-like) -> our `params` tree (float32 numpy)."""

    def a(k):
        if k not in state:
            raise KeyError(k)
        return np.asarray(state[k], np.float32)

    h, kv, d = cfg.num_heads, cfg.d_kv, cfg.d_model
    shared = next(
        (k for k in ("shared.weight", "encoder.embed_tokens.weight") if k in state),
        "shared.weight",
    )
    params: dict = {"shared_embedding": {"embedding": a(shared)}}
    for path, key, kind in _tensors(cfg):
        w = a(key)  # torch Linear: [out, in]
        if kind == "qkv":
            w = w.T.reshape(d, h, kv)
        elif kind == "out":
            w = w.T.reshape(h, kv, d)
        elif kind == "dense":
            w = w.T
        elif kind == "gated":
            w = np.stack([w.T, a(key.replace("wi_0", "wi_1")).T], axis=1)  # [d, 2, ff]
        _set(params, path, w)
    if not cfg.tie_word_embeddings:
        # transformers 5 may leave out a head equal to the shared table.
        params["output"] = {
            "kernel": a("lm_head.weight" if "lm_head.weight" in state else shared).T
        }
    return params


def t5_state_dict_from_params(params: Mapping, cfg: T5Config) -> dict[str, np.ndarray]:
    """Our `params` tree -> HF state dict of float32 numpy arrays."""
    import flax.linen as nn

    params = nn.unbox(params)
    g = lambda path: np.asarray(_walk(params, path), np.float32)
    h, kv, d = cfg.num_heads, cfg.d_kv, cfg.d_model
    shared = g(("shared_embedding", "embedding"))
    state = {
        "shared.weight": shared,
        "encoder.embed_tokens.weight": shared,
        "decoder.embed_tokens.weight": shared,
        "lm_head.weight": shared if cfg.tie_word_embeddings else g(("output", "kernel")).T,
    }
    for path, key, kind in _tensors(cfg):
        w = g(path)
        if kind == "qkv":
            w = w.reshape(d, h * kv).T
        elif kind == "out":
            w = w.reshape(h * kv, d).T
        elif kind == "dense":
            w = w.T
        elif kind == "gated":
            state[key.replace("wi_0", "wi_1")] = w[:, 1].T
            w = w[:, 0].T
        state[key] = w
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def t5_from_pretrained(path: str, **overrides) -> tuple[T5, dict]:
    """A local HF T5 / Flan-T5 directory -> `(T5(cfg), params)` (float32). `overrides` are
    `T5Config` fields (e.g. `dropout_rate=0.0`, `dtype="bfloat16"`)."""
    from jaxformer.convert.hf_params import params_or_error, read_hf_dir

    hf, _, state = read_hf_dir(path, "t5", generation=False)
    cfg = T5Config.from_hf(hf, **overrides)
    return T5(cfg), params_or_error(path, params_from_t5_state_dict, state, cfg)


def t5_save_pretrained(model: T5, params: Mapping, path: str) -> None:
    """Writes `path/config.json` and `path/model.safetensors` for
    `T5ForConditionalGeneration.from_pretrained`."""
    from jaxformer.convert.hf_files import write_model_dir

    write_model_dir(path, model.cfg.to_hf(), t5_state_dict_from_params(params, model.cfg))
