"""HuggingFace `MarianMTModel` <-> jaxformer `Transformer`: configs, parameter trees, files.

Pure mappings (`config_from_marian`, `marian_config_dict`, `params_from_marian_state_dict`,
`marian_state_dict_from_params`) work on plain dicts of numpy arrays, so torch is never
needed; `marian_from_pretrained` / `marian_save_pretrained` read and write a local HF
directory (config.json + model.safetensors) that `MarianMTModel.from_pretrained` loads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxformer.models.seq2seq_configs import TransformerConfig
from jaxformer.models.transformer import Transformer

__all__ = [
    "config_from_marian",
    "marian_config_dict",
    "marian_from_pretrained",
    "marian_save_pretrained",
    "marian_state_dict_from_params",
    "params_from_marian_state_dict",
]

log = logging.getLogger(__name__)

_ATTN = {"self_attn": "self_attention", "encoder_attn": "cross_attention"}
_NORMS = {
    "self_attn_layer_norm": "self_attention_block",
    "encoder_attn_layer_norm": "cross_attention_block",
    "final_layer_norm": "mlp_block",
}


_GENERATION_KEYS = ("decoder_start_token_id", "forced_eos_token_id", "bad_words_ids")


def _get(c, key, default=None):
    return c.get(key, default) if isinstance(c, Mapping) else getattr(c, key, default)


def config_from_marian(hf_config, generation=None, **overrides) -> TransformerConfig:
    """A `TransformerConfig` from a `MarianConfig` (object or its dict); a generation config
    (its dict or object, e.g. generation_config.json) wins for the start and forced EOS ids."""

    def g(k, d=None):
        if k in _GENERATION_KEYS and generation is not None:
            v = _get(generation, k)
            if v is not None:
                return v
        return _get(hf_config, k, d)

    if g("activation_dropout", 0.0):
        log.warning(
            "activation_dropout=%s is not supported; training will not apply it.",
            g("activation_dropout"),
        )
    bad = g("bad_words_ids") or []
    if any(len(b) != 1 for b in bad):
        raise ValueError(
            f"bad_words_ids={bad} bans a multi-token sequence, which jaxformer.generate does "
            "not support; only single tokens (e.g. [[pad_token_id]]) can be barred."
        )
    eos = g("eos_token_id", 0)
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    # transformers 5 ties the encoder/decoder tables to `shared` only when the output is tied
    # too; reading both tables separately is right under either reading of the flags.
    shared = bool(g("share_encoder_decoder_embeddings", True)) and bool(
        g("tie_word_embeddings", True)
    )
    dec_vocab = g("decoder_vocab_size") or g("vocab_size")
    pad = g("pad_token_id")
    fields = {
        "vocab_size": g("vocab_size"),
        "target_vocab_size": None if shared else dec_vocab,
        "hidden_size": g("d_model"),
        "num_heads": g("encoder_attention_heads"),
        "intermediate_size": g("encoder_ffn_dim"),
        "decoder_num_heads": g("decoder_attention_heads", g("encoder_attention_heads")),
        "decoder_intermediate_size": g("decoder_ffn_dim", g("encoder_ffn_dim")),
        "num_encoder_layers": g("encoder_layers"),
        "num_decoder_layers": g("decoder_layers"),
        "max_position_embeddings": g("max_position_embeddings"),
        "hidden_dropout": float(g("dropout", 0.1)),
        "attention_dropout": float(g("attention_dropout", 0.0)),
        "hidden_act": g("activation_function", "gelu"),
        "layer_norm_eps": 1e-5,
        "pre_ln": False,
        "share_embeddings": shared,
        "tie_output": bool(g("tie_word_embeddings", True)),
        "scale_embedding": bool(g("scale_embedding", False)),
        "position_layout": "halves",
        "final_logits_bias": True,
        "pad_token_id": pad,
        "eos_token_id": eos,
        "decoder_start_token_id": g("decoder_start_token_id", pad),
        # MarianConfig's own default is 0, the eos id of the converted OPUS checkpoints.
        "forced_eos_token_id": g("forced_eos_token_id", 0),
        "suppress_tokens": tuple(b[0] for b in bad) or None,
        "initializer_range": float(g("init_std", 0.02)),
    }
    fields.update(overrides)
    return TransformerConfig.from_dict(fields)


def marian_config_dict(cfg: TransformerConfig) -> dict[str, Any]:
    """The `config.json` of a MarianMTModel equivalent to `cfg` (Marian's fixed choices:
    post-LN, halves positions, eps 1e-5, a logits bias)."""
    if cfg.pre_ln or cfg.position_layout != "halves" or cfg.layer_norm_eps != 1e-5:
        raise ValueError(
            "Marian is post-LN with 'halves' positions and layer_norm_eps=1e-5; "
            f"this config has pre_ln={cfg.pre_ln}, position_layout="
            f"{cfg.position_layout!r}, layer_norm_eps={cfg.layer_norm_eps}."
        )
    return {
        "model_type": "marian",
        "architectures": ["MarianMTModel"],
        "vocab_size": cfg.vocab_size,
        "decoder_vocab_size": cfg.tgt_vocab_size,
        "d_model": cfg.hidden_size,
        "encoder_layers": cfg.num_encoder_layers,
        "decoder_layers": cfg.num_decoder_layers,
        "encoder_attention_heads": cfg.heads(),
        "decoder_attention_heads": cfg.heads(decoder=True),
        "encoder_ffn_dim": cfg.ffn_dim(),
        "decoder_ffn_dim": cfg.ffn_dim(decoder=True),
        "max_position_embeddings": cfg.max_position_embeddings,
        "dropout": cfg.hidden_dropout,
        "attention_dropout": cfg.attention_dropout,
        "activation_dropout": 0.0,
        "activation_function": cfg.hidden_act,
        "scale_embedding": cfg.scale_embedding,
        "share_encoder_decoder_embeddings": cfg.share_embeddings,
        "tie_word_embeddings": cfg.tie_output,
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": cfg.eos_token_id,
        "forced_eos_token_id": cfg.forced_eos_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "init_std": cfg.initializer_range,
        "is_encoder_decoder": True,
    }


# -- parameter trees --------------------------------------------------------------------------
def _layer_map(cfg: TransformerConfig):
    """Yields (our path tuple, HF key prefix, kind) for every per-layer tensor group."""
    for stack, n, attns in (
        ("encoder", cfg.num_encoder_layers, ("self_attn",)),
        ("decoder", cfg.num_decoder_layers, ("self_attn", "encoder_attn")),
    ):
        for i in range(n):
            ours, hf = (stack, f"layer_{i}"), f"model.{stack}.layers.{i}"
            for a in attns:
                for proj, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
                    yield ours + (_ATTN[a], name), f"{hf}.{a}.{proj}", "qkv"
                yield ours + (_ATTN[a], "out"), f"{hf}.{a}.out_proj", "out"
                yield ours + (_NORMS[f"{a}_layer_norm"], "norm"), f"{hf}.{a}_layer_norm", "norm"
            yield ours + ("mlp", "wi"), f"{hf}.fc1", "dense"
            yield ours + ("mlp", "wo"), f"{hf}.fc2", "dense"
            yield ours + ("mlp_block", "norm"), f"{hf}.final_layer_norm", "norm"


def _embedding_keys(cfg: TransformerConfig) -> dict[str, str]:
    """Our embedding module name -> the HF key holding it."""
    if cfg.share_embeddings:
        return {"shared_embedding": "model.shared.weight"}
    return {
        "source_embedding": "model.encoder.embed_tokens.weight",
        "target_embedding": "model.decoder.embed_tokens.weight",
    }


def _set(tree: dict, path: tuple, value) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def params_from_marian_state_dict(state: Mapping[str, Any], cfg: TransformerConfig) -> dict:
    """HF state dict (name -> array-like, torch tensors allowed) -> our `params` tree."""
    a = lambda k: np.asarray(state[k], np.float32)
    d = cfg.hidden_size
    params: dict = {}
    for ours, key in _embedding_keys(cfg).items():
        # HF saves one of a group of tied tables; look for the others.
        k = next(
            (
                c
                for c in (key, "model.shared.weight", "model.encoder.embed_tokens.weight")
                if c in state
            ),
            key,
        )
        _set(params, (ours, "embedding"), a(k))
    for path, pre, kind in _layer_map(cfg):
        h = cfg.heads(decoder=path[0] == "decoder")
        hd = d // h
        w, b = a(f"{pre}.weight"), a(f"{pre}.bias")  # torch Linear: weight [out, in]
        if kind == "qkv":
            _set(params, path + ("kernel",), w.T.reshape(d, h, hd))
            _set(params, path + ("bias",), b.reshape(h, hd))
        elif kind == "out":
            _set(params, path + ("kernel",), w.T.reshape(h, hd, d))
            _set(params, path + ("bias",), b)
        elif kind == "dense":
            _set(params, path + ("kernel",), w.T)
            _set(params, path + ("bias",), b)
        else:
            _set(params, path + ("scale",), w)
            _set(params, path + ("bias",), b)
    if not cfg.tie_output:
        params["output"] = {"kernel": a("lm_head.weight").T}
    if cfg.final_logits_bias:
        bias = (
            a("final_logits_bias")
            if "final_logits_bias" in state
            else np.zeros((1, cfg.tgt_vocab_size), np.float32)
        )  # HF lists it as optional on load
        params["final_logits_bias"] = bias.reshape(-1)
    return params


def marian_state_dict_from_params(params: Mapping, cfg: TransformerConfig) -> dict[str, np.ndarray]:
    """Our `params` tree -> HF state dict of float32 numpy arrays (positions left out: HF
    recomputes them)."""
    import flax.linen as nn

    params = nn.unbox(params)
    g = lambda path: np.asarray(_walk(params, path), np.float32)
    d = cfg.hidden_size
    # Every table is written under every name that uses it, so any tying HF applies on load
    # finds the same values.
    src = g(("shared_embedding" if cfg.share_embeddings else "source_embedding", "embedding"))
    tgt = g(("shared_embedding" if cfg.share_embeddings else "target_embedding", "embedding"))
    state: dict[str, np.ndarray] = {
        "model.encoder.embed_tokens.weight": src,
        "model.decoder.embed_tokens.weight": tgt,
    }
    if cfg.share_embeddings:
        state["model.shared.weight"] = src
    if cfg.tie_output:
        state["lm_head.weight"] = tgt
    for path, pre, kind in _layer_map(cfg):
        if kind == "norm":
            w, b = g(path + ("scale",)), g(path + ("bias",))
        else:
            w, b = g(path + ("kernel",)), g(path + ("bias",))
            w = (w.reshape(d, d) if kind in ("qkv", "out") else w).T  # heads folded back
            b = b.reshape(-1)
        state[f"{pre}.weight"], state[f"{pre}.bias"] = w, b
    if not cfg.tie_output:
        state["lm_head.weight"] = g(("output", "kernel")).T
    state["final_logits_bias"] = (
        g(("final_logits_bias",)).reshape(1, -1)
        if cfg.final_logits_bias
        else np.zeros((1, cfg.tgt_vocab_size), np.float32)
    )
    return {k: np.ascontiguousarray(v) for k, v in state.items()}


def _walk(tree, path):
    for p in path:
        if p not in tree:
            raise KeyError(
                f"parameter {'/'.join(path)} is missing (at {p!r}); the params do "
                "not match the config."
            )
        tree = tree[p]
    return tree


# -- files --------------------------------------------------------------------------------------
def marian_from_pretrained(path: str, **overrides) -> tuple[Transformer, dict]:
    """Loads a local HF Marian directory -> `(Transformer(cfg), params)` (float32)."""
    from jaxformer.convert.hf_params import params_or_error, read_hf_dir

    hf, gen, state = read_hf_dir(path, "marian")
    cfg = config_from_marian(hf, gen, **overrides)
    return Transformer(cfg), params_or_error(path, params_from_marian_state_dict, state, cfg)


def marian_save_pretrained(model: Transformer, params: Mapping, path: str) -> None:
    """Writes `path/config.json`, `generation_config.json` (start, EOS and forced EOS ids,
    barred tokens as `bad_words_ids`) and `model.safetensors` for `MarianMTModel`."""
    from jaxformer.convert.hf_files import write_model_dir

    cfg = model.cfg
    hf = marian_config_dict(cfg)
    keys = ("eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_eos_token_id")
    gen = {k: hf[k] for k in keys}
    if cfg.suppress_tokens:
        gen["bad_words_ids"] = [[t] for t in cfg.suppress_tokens]
    state = marian_state_dict_from_params(params, cfg)
    write_model_dir(path, hf, state, generation_config=gen)
