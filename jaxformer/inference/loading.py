"""Model loading for the pipelines: HuggingFace directories, jaxformer workdirs and checkpoints,
and their tokenizers.

`load_model(path)` -> `LoadedModel` (module, params on device, tokenizer(s), config, label
names, metadata). It reads:

- a HuggingFace directory (`config.json` with `model_type`): a BERT-family or ModernBERT
  encoder (`convert.from_pretrained`), or a Marian translation model, with the
  sentence-transformers pooling and length settings when present;
- a jaxformer training workdir or checkpoint directory: the resolved `config.json` (or
  `jaxformer_config.json`) in it or a parent, `model_config.json` written by the run, the
  newest orbax step, and the tokenizer next to them.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxformer.data.tokenizers import Tokenizer, load_tokenizer
from jaxformer.models import ENCODER_FAMILIES, encoder_config_from_dict, encoder_model
from jaxformer.models.configs import ConfigError

__all__ = ["PipelineError", "LoadedModel", "load_model"]


class PipelineError(ValueError):
    """Bad input for a pipeline, or a checkpoint that cannot serve it."""


@dataclasses.dataclass
class LoadedModel:
    """What a pipeline needs: the module, its params on device, the tokenizer and metadata.

    kind: "encoder" (EncoderModel) or "seq2seq" (Transformer). labels: names of the
    classifier's outputs. meta: extra settings read next to the weights (problem_type,
    the sentence-transformers max length and pooling).
    """

    kind: str
    model: Any
    params: Any
    tokenizer: Any
    config: Any
    labels: list[str]
    path: str
    meta: dict
    target_tokenizer: Any = None


def _read_json(path: str) -> dict:
    """The object in an optional JSON file ({} when absent; ModelFileError when damaged)."""
    if not os.path.isfile(path):
        return {}
    from jaxformer.convert.huggingface import read_json_file

    return read_json_file(path)


def _labels_from(d: dict, n: int) -> list[str]:
    id2label = d.get("id2label") or {}
    if isinstance(d.get("labels"), list):
        return [str(x) for x in d["labels"]]
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]


def _to_device(params):
    return jax.tree.map(jnp.asarray, params)


def load_model(path: str) -> LoadedModel:
    """Loads a HuggingFace model directory (BERT / RoBERTa / ALBERT / ELECTRA / ModernBERT,
    or Marian) or a jaxformer training workdir or checkpoint directory (see
    `_load_jaxformer`), keeping the checkpoint's head. `path` may be relative to the current
    directory."""
    given = os.fspath(path)
    path = os.path.abspath(os.path.expanduser(given))
    if not os.path.exists(path):
        raise FileNotFoundError(f"model directory {given!r} does not exist (looked for {path}).")
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"--model {given!r} is a file; give the directory that holds the model."
        )
    from jaxformer.convert import huggingface as H

    weights = [
        f
        for f in (H.SAFETENSORS, H.SAFETENSORS_INDEX, H.TORCH_BIN)
        if os.path.isfile(os.path.join(path, f))
    ]
    if weights and not os.path.isfile(os.path.join(path, "config.json")):
        raise H.ModelFileError(
            f"config.json is missing in {path} (it holds {weights[0]}); re-download or "
            "re-export the model."
        )
    hf = _read_json(os.path.join(path, "config.json"))
    if "model_type" in hf:
        return _load_hf(path, hf)
    return _load_jaxformer(path)


def _load_hf(path: str, hf: dict) -> LoadedModel:
    family = hf["model_type"]
    meta = {"problem_type": hf.get("problem_type")}
    if family == "marian":
        from jaxformer.convert.marian import marian_from_pretrained

        model, params = marian_from_pretrained(path)
        src, tgt = _seq2seq_tokenizers(path)
        return LoadedModel(
            "seq2seq",
            model,
            _to_device(params),
            src,
            model.cfg,
            [],
            path,
            meta,
            target_tokenizer=tgt,
        )
    from jaxformer.convert.hf_config import MODEL_TYPE_ALIASES

    family = MODEL_TYPE_ALIASES.get(family, (family,))[0]
    if family not in ENCODER_FAMILIES:
        raise PipelineError(
            f"{path!r} holds a {family!r} model; jaxformer pipelines serve "
            f"{list(ENCODER_FAMILIES)} encoders and Marian translation models."
        )
    from jaxformer.convert.hf_params import MissingWeightError
    from jaxformer.convert.huggingface import ModelFileError, from_pretrained

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unused-weight notes (e.g. a dropped pooler)
        try:
            model, params = from_pretrained(path)
        except MissingWeightError as e:
            raise ModelFileError(
                f"the weights in {path} do not match its config.json ({str(e).rstrip('.')}); "
                "re-download or re-export the model."
            ) from None
    st = _read_json(os.path.join(path, "sentence_bert_config.json"))
    if st.get("max_seq_length"):
        meta["max_seq_length"] = int(st["max_seq_length"])
    pool_cfg = _read_json(os.path.join(path, "1_Pooling", "config.json"))
    for mode in ("cls", "mean", "max"):
        if pool_cfg.get(
            f"pooling_mode_{mode}_token" if mode != "mean" else "pooling_mode_mean_tokens"
        ):
            meta["pooling"] = mode
    labels = _labels_from(hf, model.cfg.num_labels)
    return LoadedModel(
        "encoder", model, _to_device(params), _load_tokenizer(path), model.cfg, labels, path, meta
    )


def _find_config(path: str) -> tuple[dict, str]:
    """The resolved config of a jaxformer checkpoint: `config.json` in `path` or a parent
    (a workdir holding `checkpoints/STEP`)."""
    here = os.path.abspath(path)
    for _ in range(3):
        for name in ("config.json", "jaxformer_config.json"):
            f = os.path.join(here, name)
            if os.path.isfile(f):
                return _read_json(f), here
        here = os.path.dirname(here)
    raise PipelineError(
        f"{path!r} is neither a HuggingFace directory (config.json with "
        "model_type) nor a jaxformer checkpoint (config.json with a 'model' "
        "section next to orbax step directories)."
    )


def _restore_params(path: str):
    """Params of the newest checkpoint under `path` (see `checkpoint.load_params`)."""
    from jaxformer.training.checkpoint import load_params

    try:
        return load_params(path)
    except FileNotFoundError as e:
        raise PipelineError(str(e)) from None


def _load_jaxformer(path: str) -> LoadedModel:
    """A jaxformer checkpoint: resolved config JSON (the `model` section is an EncoderConfig
    or a TransformerConfig; `labels` optional) + orbax steps + tokenizer (`tokenizer/` next
    to the config, or tokenizer.json in it). A training workdir: pretraining, fine-tuning
    and continued pretraining runs write the model they train to `model_config.json` (head,
    classes); an older fine-tuning workdir without it loads from its `hf_export/`; an
    ELECTRA run loads its discriminator."""
    config, root = _find_config(path)
    model_cfg = config.get("model", config)
    from jaxformer.tasks.finetune.weights import MODEL_CONFIG_FILE

    written = _read_json(os.path.join(root, MODEL_CONFIG_FILE))
    export = os.path.join(root, "hf_export")
    if not written and "finetune" in config and os.path.isfile(os.path.join(export, "config.json")):
        return _load_hf(export, _read_json(os.path.join(export, "config.json")))
    if not written and "finetune" in config:
        raise PipelineError(
            f"{root!r} is a fine-tuning run from before runs recorded their model "
            "(model_config.json) and has no hf_export/; load it with "
            "jaxformer.tasks.finetune.FineTuneTask and export it with save_pretrained."
        )
    params = _restore_params(path)
    if isinstance(params, dict) and "discriminator" in params:  # an ELECTRA pretraining run
        params = params["discriminator"]
    tok_dirs = [os.path.join(root, "tokenizer"), root, path]
    if written and "family" in written:  # an encoder (a seq2seq run writes its Transformer's)
        cfg = encoder_config_from_dict(written)
        from jaxformer.convert.hf_config import label_names

        regression = cfg.head == "sequence_classification" and cfg.num_labels == 1
        return LoadedModel(
            "encoder",
            encoder_model(cfg),
            _to_device(params),
            _first_tokenizer(tok_dirs),
            cfg,
            label_names(cfg),
            path,
            {"problem_type": "regression" if regression else None},
        )
    if "family" in model_cfg:
        model_cfg = dict(model_cfg)
        if model_cfg.get("head") is None and config.get("task") in ("pretrain", "mlm"):
            # PretrainTask picks the head from the objective rather than from model.head.
            objective = (config.get("data") or {}).get("objective", "none")
            model_cfg["head"] = "pretraining" if objective in ("nsp", "sop") else "mlm"
        cfg = encoder_config_from_dict(model_cfg)
        tok = _first_tokenizer(tok_dirs)
        labels = _labels_from(config, cfg.num_labels)
        return LoadedModel(
            "encoder",
            encoder_model(cfg),
            _to_device(params),
            tok,
            cfg,
            labels,
            path,
            {"problem_type": config.get("problem_type")},
        )
    from jaxformer.models.transformer import Transformer, TransformerConfig

    try:
        cfg = TransformerConfig.from_dict(written or model_cfg)
    except (ConfigError, TypeError) as e:
        raise PipelineError(
            f"the model config in {root!r} is neither an EncoderConfig nor a TransformerConfig: {e}"
        ) from None
    src, tgt = _seq2seq_tokenizers(root)
    return LoadedModel(
        "seq2seq",
        Transformer(cfg),
        _to_device(params),
        src,
        cfg,
        [],
        path,
        {},
        target_tokenizer=tgt,
    )


def _load_tokenizer(d: str) -> Tokenizer:
    """`load_tokenizer(d)`, with a damaged tokenizer file as a ModelFileError naming it."""
    from jaxformer.convert.huggingface import ModelFileError, read_json_file

    if os.path.isfile(os.path.join(d, "tokenizer_config.json")):
        read_json_file(os.path.join(d, "tokenizer_config.json"))
    try:
        return load_tokenizer(d)
    except FileNotFoundError:
        raise
    except Exception as e:  # the Rust reader's errors have no common type
        names = ("tokenizer.json", "vocab.txt", "vocab.json")
        name = next((n for n in names if os.path.isfile(os.path.join(d, n))), "tokenizer")
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise ModelFileError(
            f"{name} in {d} is corrupt ({reason}); re-download or re-export it."
        ) from None


def _first_tokenizer(dirs: Sequence[str]) -> Tokenizer:
    for d in dirs:
        if glob.glob(os.path.join(d, "tokenizer.json")) or glob.glob(os.path.join(d, "vocab.txt")):
            return _load_tokenizer(d)
    raise PipelineError(f"no tokenizer (tokenizer.json or vocab.txt) in {list(dirs)}.")


def _seq2seq_tokenizers(root: str):
    """(source, target) tokenizers: `source_tokenizer/` + `target_tokenizer/`, or one shared
    `tokenizer.json` / `tokenizer/`."""
    src_dir, tgt_dir = (
        os.path.join(root, "source_tokenizer"),
        os.path.join(root, "target_tokenizer"),
    )
    if os.path.isdir(src_dir) and os.path.isdir(tgt_dir):
        return _load_tokenizer(src_dir), _load_tokenizer(tgt_dir)
    tok = _first_tokenizer([os.path.join(root, "tokenizer"), root])
    return tok, tok
