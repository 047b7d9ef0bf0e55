"""Continued pretraining: keep training an existing encoder (ours or HuggingFace) with MLM on
a new corpus, and compare its fill-mask predictions before and after (`config.task =
"continued"`)."""

from __future__ import annotations

import os

import jax
import numpy as np

from jaxformer.models import EncoderModel
from jaxformer.convert.surgery import merge_encoder
from jaxformer.tasks.finetune.weights import load_run_params, save_model_config
from jaxformer.training.checks import init_path
from jaxformer.tasks.pretrain import PretrainTask, fill_mask_report


class ContinuedPretrainTask(PretrainTask):
    """`init_from`: "hf:DIR" or "run:WORKDIR". The model, its MLM head and its tokenizer come
    from there; `data.source` names the new corpus."""

    def __init__(self, config, workdir: str):
        super().__init__(config, workdir)
        kind, source = init_path(config.init_from)
        from jaxformer.data import load_tokenizer

        if kind == "hf":
            from jaxformer.convert.huggingface import from_pretrained

            model, self._source = from_pretrained(source, head="mlm")
            cfg, tok_dir = model.cfg, source
        elif kind == "run":
            cfg, self._source = load_run_params(source)
            tok_dir = os.path.join(source, "tokenizer")
        else:
            raise ValueError("continued pretraining needs init_from='hf:DIR' or 'run:WORKDIR'.")
        overrides = {
            k: v
            for k, v in dict(config.model).items()
            if k in ("hidden_dropout", "attention_dropout", "dtype", "remat_policy")
        }
        self.model_cfg = cfg.replace(head="mlm", **overrides)
        self.model = EncoderModel(self.model_cfg)
        save_model_config(workdir, self.model_cfg)
        # PretrainTask builds its data with the tokenizer saved in the workdir (training one
        # only when there is none): put the source's there. Every process writes the same
        # files, so none can find the directory empty and train a different vocabulary.
        target = os.path.join(workdir, "tokenizer")
        if not os.path.exists(os.path.join(target, "tokenizer.json")):
            load_tokenizer(tok_dir).save(target)

    def pretrained_params(self, fresh):
        """The source's encoder and MLM head (a base-only source keeps a fresh head)."""
        out = merge_encoder(fresh, self._source)
        if "mlm" in self._source:
            out["mlm"] = jax.tree.map(
                lambda f, p: np.asarray(p, f.dtype), fresh["mlm"], self._source["mlm"]
            )
        # A host copy: the device arrays are donated to the train step and freed.
        self._initial = jax.device_get(out)
        return out

    def finish(self, params, workdir):
        sentences = list(self.config.demo_sentences)
        if not sentences:
            return ""
        before = fill_mask_report(self.model, self._initial, self.tokenizer, sentences)
        after = fill_mask_report(self.model, params, self.tokenizer, sentences)
        return f"fill-mask before continued pretraining:\n{before}\n\nafter:\n{after}"
