"""Fine-tuning: a pretrained encoder (ours or HuggingFace) plus a task head, with the whole
network trainable or the encoder frozen (only the head trains).

Config (besides the base keys): `init_from` ("" = random, "hf:DIR", "run:WORKDIR" = the
params of one of our training runs), `finetune.head` (sequence_classification |
token_classification | question_answering), `finetune.num_labels` (1 = regression),
`finetune.label_names` (class names in order, "neg,pos" or a tuple; "" = read from the data),
`finetune.freeze_encoder`. `data.source` is "keyword" (the generated rule task below), your
own file "csv:PATH", "tsv:PATH" or "jsonl:PATH" (`jaxformer.data.labelled`: columns / keys
named by `data.text_field`, `data.pair_field` ("" = single texts), `data.label_field`, or
`data.tokens_field` + `data.tags_field` for token classification; SQuAD-style `question`,
`context`, `answers` JSONL for question answering) with the eval examples in
`data.eval_source` (same formats; "" = hold out `data.eval_fraction` of the training file),
or a tensorflow-datasets dataset prepared in `data.data_dir`: "tfds:glue/<task>",
"tfds:squad[/v1.1|/v2.0]", "tfds:conll2003" (`data.train_split`, `data.eval_split`).
`data.max_examples` caps each split, 0 = all. For file sources the number of classes is the
number of label names.
At the end of a run the task's own metric is computed on the eval split
(`FineTuneTask.task_metrics`): GLUE accuracy / F1 / MCC / Pearson-Spearman, SQuAD exact
match and F1, entity F1 for BIO tags (CoNLL or your own), else accuracy or mean squared
error."""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import numpy as np
import optax

from jaxformer.convert.surgery import merge_encoder
from jaxformer.objectives import encoder_inputs, row_count, weight_count
from jaxformer.models import EncoderConfig, encoder_config_from_dict, encoder_model
from jaxformer.tasks.finetune import data as data_lib
from jaxformer.tasks.finetune.losses import task_loss
from jaxformer.tasks.finetune.weights import encoder_mask, load_run_params, save_model_config
from jaxformer.training.checks import init_path
from jaxformer.training.task import Task

__all__ = ["FineTuneTask"]


class FineTuneTask(Task):
    """Classification / regression, token classification or extractive QA on an encoder."""

    def __init__(self, config, workdir: str):
        super().__init__(config, workdir)
        ft = config.finetune
        self.seq_len = config.data.seq_len
        self._pretrained = None
        self._data = None
        kind, source = init_path(config.init_from)
        base: EncoderConfig | None = None
        if kind == "hf":
            from jaxformer.convert.huggingface import from_pretrained

            model, params = from_pretrained(source)
            base, self._pretrained = model.cfg, params
        elif kind == "run":
            base, self._pretrained = load_run_params(source)
        if base is None:
            base = encoder_config_from_dict(dict(config.model))
        overrides = {
            k: v
            for k, v in dict(config.model).items()
            if k
            in (
                "hidden_dropout",
                "attention_dropout",
                "classifier_dropout",
                "dtype",
                "remat_policy",
            )
            and k in base.field_names()  # ModernBERT has no hidden_dropout
            and v is not None
        }
        src = str(config.data.source)
        auto = ("no_keyword", "keyword") if src == "keyword" else None
        names = data_lib.config_label_names(ft.label_names)
        num_labels = ft.num_labels
        if src.split(":")[0] in ("csv", "tsv", "jsonl"):
            # Own files: the classes are the label names (given, or read from the data).
            regression = ft.head == "sequence_classification" and ft.num_labels == 1
            train, evals, names = data_lib.file_records(config.data, ft.head, regression, names)
            self._data = (train, evals)
            if names is not None:
                num_labels = len(names)
        elif src.startswith("tfds:"):
            head, k = data_lib.tfds_task(src[5:])
            if (ft.head, ft.num_labels) != (head, k):
                raise ValueError(
                    f"data.source={src!r} needs finetune.head={head!r} and finetune.num_labels="
                    f"{k}, got {ft.head!r} and {ft.num_labels}; set them (the `finetune` "
                    "recipe does this from the source)."
                )
            auto = data_lib.tfds_label_names(src[5:])
        # Class names travel with the model (HF id2label): given, or known for the source.
        if ft.head == "question_answering":
            names = auto = None
        if names is None and auto is not None and len(auto) == num_labels:
            names = auto
        if names is not None and len(names) != num_labels:
            raise ValueError(
                f"finetune.label_names has {len(names)} names but finetune.num_labels is "
                f"{num_labels}; give one name per class."
            )
        self.model_cfg = base.replace(
            head=ft.head,
            num_labels=num_labels,
            label_names=tuple(names) if names else None,
            **overrides,
        )
        if base.family != "modernbert":  # ModernBERT has no pooler: its heads read tokens
            if ft.head in ("token_classification", "question_answering"):
                # These heads read every token, not the pooler (HF's classes have none either).
                self.model_cfg = self.model_cfg.replace(with_pooler=False)
            if ft.head == "sequence_classification" and not self.model_cfg.with_pooler:
                self.model_cfg = self.model_cfg.replace(classifier_style="cls_mlp")
        self.model = encoder_model(self.model_cfg)
        save_model_config(workdir, self.model_cfg)
        self.freeze_encoder = bool(ft.freeze_encoder)
        self._tokenizer = None

    # -- params / optimizer hooks used by the loop ------------------------------------------
    def pretrained_params(self, fresh):
        """Replaces the fresh encoder by the pretrained one (heads stay fresh); None when
        the run starts from random weights."""
        return None if self._pretrained is None else merge_encoder(fresh, self._pretrained)

    def wrap_optimizer(self, tx: optax.GradientTransformation) -> optax.GradientTransformation:
        """With a frozen encoder, its updates are exactly zero (no weight decay either)."""
        if not self.freeze_encoder:
            return tx
        # Labels as a tree, not a callable: optax.tree_map_params (optimizer-state sharding)
        # initialises the optimizer with a placeholder that a label function cannot walk.
        shapes = nn.unbox(jax.eval_shape(self.init_params, jax.random.key(0)))
        labels = jax.tree.map(
            lambda t: "train" if t else "frozen", encoder_mask(shapes, trainable=False)
        )
        return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)

    # -- data ------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from jaxformer.data import load_tokenizer

            kind, source = init_path(self.config.init_from)
            if kind == "hf":
                self._tokenizer = load_tokenizer(source)
            elif kind == "run":
                self._tokenizer = load_tokenizer(os.path.join(source, "tokenizer"))
            else:
                self._tokenizer = self._train_tokenizer()
            # A copy in the workdir, so that its checkpoints load without the source run.
            path = os.path.join(self.workdir, "tokenizer")
            if kind and hasattr(self._tokenizer, "save") and jax.process_index() == 0:
                if not os.path.exists(os.path.join(path, "tokenizer.json")):
                    self._tokenizer.save(path)
        return self._tokenizer

    def _train_tokenizer(self):
        from jaxformer.data import train_tokenizer

        path = os.path.join(self.workdir, "tokenizer")
        if os.path.exists(os.path.join(path, "tokenizer.json")):
            from jaxformer.data import load_tokenizer

            return load_tokenizer(path)
        tok = train_tokenizer(
            [data_lib.record_text(e) for e in self._records()[0]],
            self.config.data.tokenizer_family,
            vocab_size=self.model_cfg.vocab_size,
        )
        if jax.process_index() == 0:
            tok.save(path)
        return tok

    def _records(self):
        """(train records, eval records)."""
        if self._data is None:
            src = self.config.data.source
            if src == "keyword":
                from jaxformer.data import default_corpus

                examples, self.keywords = data_lib.keyword_task(
                    default_corpus(), seed=self.config.data.seed
                )
            elif src.startswith("tfds:"):
                d = self.config.data
                name = src[5:]
                limit, data_dir = int(d.max_examples), d.data_dir or None
                eval_split = d.eval_split or data_lib.default_eval_split(name)
                self._data = (
                    data_lib.tfds_records(name, d.train_split, data_dir, limit),
                    data_lib.tfds_records(name, eval_split, data_dir, limit),
                )
                return self._data
            else:
                raise ValueError(
                    f"unknown data.source {src!r} for fine-tuning; use 'keyword', "
                    "'csv:PATH', 'tsv:PATH', 'jsonl:PATH' or 'tfds:NAME'."
                )
            n_eval = max(1, int(len(examples) * self.config.data.eval_fraction))
            self._data = (examples[:-n_eval], examples[-n_eval:])
        return self._data

    def encode(self, record) -> dict:
        from jaxformer.data.finetuning import encode_classification, encode_ner

        head, L = self.model_cfg.head, self.seq_len
        if head == "sequence_classification":
            return encode_classification(
                self.tokenizer,
                record["text"],
                record.get("pair"),
                record["label"],
                max_seq_len=L,
                regression=self.model_cfg.num_labels == 1,
            )
        if head == "token_classification":
            return encode_ner(self.tokenizer, record["words"], record["tags"], max_seq_len=L)
        raise ValueError(f"encode: use prepare_squad features for {head!r} (jsonl SQuAD).")

    def _encoded(self, records):
        if self.model_cfg.head == "question_answering":
            from jaxformer.data.finetuning import SquadConfig, prepare_squad

            # A real corpus can hold a few answers that are not at their answer_start: skip
            # and count those rather than end the run.
            feats, skipped = prepare_squad(
                records, self.tokenizer, SquadConfig(max_seq_len=self.seq_len), errors="skip"
            )
            if skipped and jax.process_index() == 0:
                print(
                    f"SQuAD preprocessing skipped {sum(skipped.values())} of {len(records)} "
                    f"examples: {dict(skipped)}"
                )
            if not feats:
                raise ValueError(f"no usable SQuAD examples among {len(records)}: {dict(skipped)}.")
            keys = (
                "input_ids",
                "attention_mask",
                "token_type_ids",
                "start_positions",
                "end_positions",
            )
            return [{k: np.asarray(f[k]) for k in keys} for f in feats]
        return [self.encode(r) for r in records]

    def train_iterator(self, batch_size, process_index, process_count):
        import grain
        from jaxformer.data import DataIterator, batch_dataset, shard_for_process

        feats = self._encoded(self._records()[0])
        ds = grain.MapDataset.source(feats).seed(self.config.data.seed).shuffle().repeat()
        ds = batch_dataset(
            shard_for_process(ds, process_index, process_count), batch_size // process_count
        )
        return DataIterator(ds, prefetch=self.config.data.prefetch)

    def eval_batches(self, batch_size, process_index, process_count):
        import grain
        from jaxformer.data import batch_dataset, shard_for_process

        feats = self._encoded(self._records()[1])
        # The last batch may be short (or the only one): the loop evaluates it
        # (`loop.fit_eval_batches`) instead of dropping it.
        ds = batch_dataset(
            shard_for_process(grain.MapDataset.source(feats), process_index, process_count),
            batch_size // process_count,
            drop_remainder=False,
        )
        return [ds[i] for i in range(len(ds))]

    # -- loss -------------------------------------------------------------------------------
    def normalizers(self, batch):
        if self.model_cfg.head == "token_classification":
            return {"n": weight_count(batch["label_weights"])}
        return {"n": row_count(batch["input_ids"])}

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        out = self.model.apply(
            {"params": params},
            batch["input_ids"],
            rngs={"dropout": rng},
            **encoder_inputs(batch, deterministic),
        )
        return task_loss(self.model_cfg, out, batch, norms.get("n"))

    def flops_per_token(self, params) -> float:
        """Training FLOPs per token of the encoder (`benchmarking.encoder_flops`); the task
        head is a rounding error beside it."""
        from jaxformer.benchmarking import encoder_flops

        return encoder_flops(self.model_cfg, self.seq_len, "train")["total"]

    def task_metrics(self, params, batch_size: int = 64) -> dict:
        """The task's own metric on the eval split (single process): GLUE's (accuracy, F1 for
        MRPC/QQP, Matthews for CoLA, Pearson/Spearman for STS-B), SQuAD exact match and F1
        over whole examples (spans from all windows), entity-level F1 for CoNLL-2003, and
        accuracy (classes) or mean squared error (regression) otherwise."""
        from jaxformer.data import metrics as M
        from jaxformer.data.finetuning import (
            CONLL2003_TAGS,
            SquadConfig,
            glue_metrics,
            ner_tags_from_predictions,
            prepare_squad,
            squad_predictions,
        )

        if jax.process_count() > 1:
            return {}
        records = self._records()[1]
        head, src = self.model_cfg.head, str(self.config.data.source)
        if head == "question_answering":
            feats, _ = prepare_squad(
                records, self.tokenizer, SquadConfig(max_seq_len=self.seq_len), training=False
            )
        else:
            feats = [self.encode(r) for r in records]
        outs = self._predict(params, feats, batch_size)
        if head == "question_answering":
            texts = squad_predictions(
                feats,
                outs["start_logits"],
                outs["end_logits"],
                [r["context"] for r in records],
                version_2="v2" in src,
            )
            return M.squad_scores(texts, [r["answers"]["text"] for r in records])
        if head == "token_classification":
            pred = outs["logits"].argmax(-1)
            labels = np.stack([f["labels"] for f in feats])
            out = {"token_accuracy": float((pred == labels)[labels >= 0].mean())}
            names = self.model_cfg.label_names
            if names is None and self.model_cfg.num_labels == len(CONLL2003_TAGS):
                names = CONLL2003_TAGS
            if names is not None and any(n.startswith(("B-", "I-")) for n in names):
                p_tags = [ner_tags_from_predictions(p, y, names) for p, y in zip(pred, labels)]
                g_tags = [ner_tags_from_predictions(y, y, names) for y in labels]
                ent = M.entity_f1(p_tags, g_tags)
                out.update(
                    entity_precision=ent["precision"],
                    entity_recall=ent["recall"],
                    entity_f1=ent["f1"],
                )
            return out
        labels = np.array([r["label"] for r in records])
        if self.model_cfg.num_labels == 1:
            pred = outs["logits"][:, 0]
        else:
            pred = outs["logits"].argmax(-1)
        if src.startswith("tfds:glue/"):
            return glue_metrics(data_lib._tfds_parts(src[5:])[1], pred, labels)
        if self.model_cfg.num_labels == 1:
            return {"mse": float(np.mean((pred - labels) ** 2))}
        return {"accuracy": M.accuracy(pred, labels)}

    def _predict(self, params, feats: list, batch_size: int) -> dict:
        """Head outputs for encoded features, in fixed-size batches (one compilation)."""
        keys = ("input_ids", "attention_mask", "token_type_ids")
        fwd = jax.jit(
            lambda p, b: self.model.apply(
                {"params": p},
                b["input_ids"],
                attention_mask=b["attention_mask"],
                token_type_ids=b["token_type_ids"],
                deterministic=True,
            )
        )
        fields = (
            ("start_logits", "end_logits")
            if self.model_cfg.head == "question_answering"
            else ("logits",)
        )
        got = {f: [] for f in fields}
        for i in range(0, len(feats), batch_size):
            chunk = feats[i : i + batch_size]
            pad = batch_size - len(chunk)
            b = {k: np.stack([f[k] for f in chunk] + [chunk[0][k]] * pad) for k in keys}
            out = fwd(params, b)
            for f in fields:
                got[f].append(np.asarray(getattr(out, f), np.float32)[: len(chunk)])
        return {f: np.concatenate(v) for f, v in got.items()}

    def finish(self, params, workdir):
        from jaxformer.convert.huggingface import save_pretrained

        out = os.path.join(workdir, "hf_export")
        save_pretrained(self.model, params, out)
        if self.model_cfg.head == "sequence_classification" and self.model_cfg.num_labels == 1:
            # Scores, not sigmoid probabilities, in transformers and our pipelines.
            with open(os.path.join(out, "config.json")) as f:
                hf = json.load(f)
            with open(os.path.join(out, "config.json"), "w") as f:
                json.dump({**hf, "problem_type": "regression"}, f, indent=2, sort_keys=True)
        if hasattr(self.tokenizer, "save"):
            self.tokenizer.save(out)
        return f"fine-tuned model exported to {out} (loads in transformers and jaxformer)."
