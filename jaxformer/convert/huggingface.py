"""Load HuggingFace BERT-family directories into jaxformer, and save them back. No network."""

from __future__ import annotations

import numpy as np

from jaxformer.convert.hf_config import encoder_config_from_hf, hf_config_from_encoder_config
from jaxformer.convert.hf_params import (
    convert_hf_state_dict,
    finish_params,
    hf_state_dict_from_params,
    param_shapes,
    warn_load_report,
)
from jaxformer.convert.hf_files import (  # noqa: F401  (their public home stays here too)
    SAFETENSORS,
    SAFETENSORS_INDEX,
    TORCH_BIN,
    ModelFileError,
    fresh_arrays,
    load_hf_state_dict,
    read_hf_config,
    read_json_file,
    write_model_dir,
)
from jaxformer.models.bert import EncoderModel
from jaxformer.models.configs import EncoderConfig
from jaxformer.models.modernbert import ModernBertModel


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
    warn_load_report(path, unused, missing)
    if missing:
        flat.update(_fresh_params(cfg, missing, seed))
    return EncoderModel(cfg), finish_params(flat, cfg)


def _fresh_params(cfg: EncoderConfig, paths: list[str], seed: int) -> dict[str, np.ndarray]:
    """The model's own init for the given params (kernels and tables N(0, initializer_range),
    LayerNorm scales 1, biases 0), drawn with numpy: compiling `model.init` for a few head
    weights would cost seconds."""
    shapes = param_shapes(cfg.replace(scan_layers=False, remat_policy="none"))
    return fresh_arrays(shapes, paths, cfg.initializer_range, cfg.param_dtype, seed)


def save_pretrained(model, params, path: str) -> None:
    """Writes `config.json` + `model.safetensors` that `transformers.AutoModel*` loads back
    (the class named in `architectures`) with the same outputs. Tied decoder copies are
    written too. Raises `ConfigError` for configs HF cannot express (pre-LN, ...). A
    `Transformer` (encoder-decoder) is written as a `MarianMTModel` directory, a
    `ModernBertModel` as the ModernBERT class of its head."""

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
    write_model_dir(
        path, hf_config_from_encoder_config(cfg), hf_state_dict_from_params(params, cfg)
    )
