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
import re
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxformer.convert.surgery import merge_encoder
from jaxformer.models import EncoderConfig, encoder_config_from_dict, encoder_model
from jaxformer.objectives import losses
from jaxformer.training.checks import init_path
from jaxformer.training.tasks import Task

KEYWORD_COUNT_LIMIT = 400


# -- the generated task ---------------------------------------------------------------------
def _words(sentence: str) -> list[str]:
    return re.findall(r"[a-z]+", sentence.lower())


def keyword_task(
    documents, seed: int = 0, min_words: int = 5, max_words: int = 40, max_examples: int = 20000
):
    """A binary task with a learnable rule on real sentences: label 1 iff the sentence
    contains one of a set of keywords. The set is taken from frequent words until about
    half the sentences are positive; classes are then balanced. Returns (examples, keywords),
    examples as dicts {"text", "label"} in a seeded random order."""
    from jaxformer.data import split_sentences

    sents = [
        s for d in documents for s in split_sentences(d) if min_words <= len(_words(s)) <= max_words
    ]
    if len(sents) < 100:
        raise ValueError(f"only {len(sents)} usable sentences; the keyword task needs >= 100.")
    word_sets = [set(_words(s)) for s in sents]
    df: dict[str, int] = {}
    for ws in word_sets:
        for w in ws:
            df[w] = df.get(w, 0) + 1
    # Content-like words (length >= 5) ranked by how many sentences they appear in, skipping
    # the very common ones so that no single word decides the label.
    ranked = [
        w
        for w, c in sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))
        if len(w) >= 5 and c < 0.1 * len(sents)
    ]
    keywords: set[str] = set()
    covered = np.zeros(len(sents), bool)
    for w in ranked[:KEYWORD_COUNT_LIMIT]:
        keywords.add(w)
        covered |= np.array([w in ws for ws in word_sets])
        if covered.mean() >= 0.5:
            break
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(covered), np.flatnonzero(~covered)
    n = min(len(pos), len(neg), max_examples // 2)
    idx = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    rng.shuffle(idx)
    return [{"text": sents[i], "label": int(covered[i])} for i in idx], sorted(keywords)


# -- tensorflow-datasets sources --------------------------------------------------------------
def _str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def _tfds_parts(name: str) -> tuple[str, str]:
    """("glue", "sst2") from "glue/sst2[:version]"; ("squad", "") from "squad"."""
    family, _, config = name.split(":")[0].partition("/")
    return family, config


def tfds_task(name: str) -> tuple[str, int]:
    """(head, num_labels) that a tfds fine-tuning dataset needs; ValueError if unsupported."""
    from jaxformer.data.finetuning import CONLL2003_TAGS, GLUE_TASKS

    family, config = _tfds_parts(name)
    if family == "glue":
        if config not in GLUE_TASKS:
            raise ValueError(
                f"unknown GLUE task {config!r} in data.source; known: {sorted(GLUE_TASKS)}."
            )
        k = GLUE_TASKS[config][2]
        return "sequence_classification", (k or 1)
    if family == "squad":
        return "question_answering", 2
    if family == "conll2003":
        return "token_classification", len(CONLL2003_TAGS)
    raise ValueError(
        f"tfds dataset {name!r} has no fine-tuning preprocessor; supported: "
        "glue/<task>, squad[/v1.1|/v2.0], conll2003 (or use csv:, tsv: or jsonl:PATH)."
    )


# tfds ClassLabel names of the GLUE tasks (STS-B is a regression).
GLUE_LABELS = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
    "ax": ("entailment", "neutral", "contradiction"),
}


def tfds_label_names(name: str) -> Optional[tuple]:
    """The class names of a supported tfds dataset (None for regression and SQuAD)."""
    from jaxformer.data.finetuning import CONLL2003_TAGS

    family, config = _tfds_parts(name)
    if family == "glue":
        return GLUE_LABELS.get(config)
    if family == "conll2003":
        return tuple(CONLL2003_TAGS)
    return None


def default_eval_split(name: str) -> str:
    return "validation_matched" if _tfds_parts(name) == ("glue", "mnli") else "validation"


def tfds_records(
    name: str, split: str, data_dir: Optional[str] = None, limit: int = 0
) -> list[dict]:
    """A split of a supported tfds dataset as fine-tuning records (the `jsonl:` format)."""
    from jaxformer.data import tfds_source
    from jaxformer.data.finetuning import GLUE_TASKS

    tfds_task(name)
    family, config = _tfds_parts(name)
    src = tfds_source(name, split=split, data_dir=data_dir or None)
    n = len(src) if not limit else min(limit, len(src))
    out = []
    for i in range(n):
        ex = src[i]
        if family == "glue":
            f1, f2, k = GLUE_TASKS[config]
            label = float(ex["label"]) if k == 0 else int(ex["label"])
            out.append({"text": _str(ex[f1]), "pair": _str(ex[f2]) if f2 else None, "label": label})
        elif family == "squad":
            ans = ex.get("answers", {"text": [], "answer_start": []})
            out.append(
                {
                    "id": _str(ex.get("id", i)),
                    "question": _str(ex["question"]),
                    "context": _str(ex["context"]),
                    "answers": {
                        "text": [_str(t) for t in ans["text"]],
                        "answer_start": [int(a) for a in ans["answer_start"]],
                    },
                    "is_impossible": bool(ex.get("is_impossible", False)),
                }
            )
        else:  # conll2003
            out.append(
                {"words": [_str(t) for t in ex["tokens"]], "tags": [int(t) for t in ex["ner"]]}
            )
    if not out:
        raise ValueError(f"tfds dataset {name!r} split {split!r} is empty.")
    return out


def record_text(record: dict) -> str:
    """The text of a record, for training a tokenizer on it."""
    if "words" in record:
        return " ".join(record["words"])
    if "context" in record:
        return f"{record['question']} {record['context']}"
    return " ".join(t for t in (record.get("text"), record.get("pair")) if t)


def config_label_names(value) -> Optional[tuple]:
    """`finetune.label_names` as a tuple: "neg,pos" (the command-line form), "['neg', 'pos']"
    or a sequence; None when unset ("" or None)."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip()[:1] in ("[", "("):
        import ast

        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise ValueError(
                f"finetune.label_names={value!r}: write the names as neg,pos."
            ) from None
    if isinstance(value, str):
        names = tuple(n.strip() for n in value.split(",")) if value.strip() else ()
    else:
        names = tuple(str(n) for n in value)
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(
            f"finetune.label_names={value!r}: give distinct non-empty names, e.g. neg,pos."
        )
    return names or None


def file_records(data, head: str, regression: bool, label_names=None):
    """(train records, eval records, label names) of a "csv:" / "tsv:" / "jsonl:" source
    (`data` is the config's `data` group; see the module docstring). The eval file's labels
    must be among the names; without an eval file `data.eval_fraction` of the training
    examples, shuffled by `data.seed`, is held out."""
    from jaxformer.data import labelled

    fields = labelled.Fields(
        **{f: str(data.get(f"{f}_field", d)) for f, d in vars(labelled.Fields()).items()}
    )
    sources = [str(data.source)] + ([str(data.eval_source)] if data.get("eval_source") else [])
    parsed = []
    for src in sources:
        p = labelled.parse_file_source(src)
        if p is None:
            raise ValueError(
                f"data source {src!r}: use csv:PATH, tsv:PATH or jsonl:PATH (data.eval_source "
                "'' holds out data.eval_fraction of the training file)."
            )
        parsed.append(p)
    limit = int(data.get("max_examples", 0) or 0)
    names, given, out = label_names, label_names is not None, []
    for fmt, path in parsed:
        rows = labelled.read_rows(path, fmt)[: limit or None]
        origin = "finetune.label_names" if given else f"read from {parsed[0][1]}"
        if head == "question_answering":
            recs = [r for _, r in rows]
        elif head == "token_classification":
            if fmt != "jsonl":
                raise ValueError(
                    f"token classification reads JSONL ({fields.tokens!r} and {fields.tags!r} "
                    f"lists per line), not {fmt}: {path}."
                )
            recs, names = labelled.token_records(
                rows, path, fields, label_names=names, origin=origin, class_ids=given
            )
        else:
            recs, names = labelled.classification_records(
                rows,
                path,
                fields,
                label_names=names,
                regression=regression,
                origin=origin,
                class_ids=given,
            )
        out.append(recs)
    if len(out) == 1:
        examples = out[0]
        order = np.random.default_rng(int(data.seed)).permutation(len(examples))
        examples = [examples[i] for i in order]
        n_eval = max(1, int(len(examples) * float(data.eval_fraction)))
        if n_eval >= len(examples):
            raise ValueError(
                f"{parsed[0][1]}: {len(examples)} examples leave none for training after "
                f"holding out data.eval_fraction={data.eval_fraction}; give data.eval_source."
            )
        out = [examples[:-n_eval], examples[-n_eval:]]
    return out[0], out[1], names


# -- loading pretrained weights -------------------------------------------------------------
MODEL_CONFIG_FILE = "model_config.json"


def save_model_config(workdir: str, cfg: EncoderConfig) -> None:
    """Writes the model the task trains (head, classes, the encoder it started from) to
    `workdir/model_config.json`, which the pipelines read to load the run's checkpoints;
    `config.json`'s `model` section is only the config file's starting point."""
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, MODEL_CONFIG_FILE), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2, default=str)


def load_run_params(workdir: str):
    """(EncoderConfig of the run, its latest params as numpy) from one of our training runs
    (`workdir` may be relative to the current directory)."""
    from jaxformer.training.checkpoint import load_params

    _, workdir = init_path(f"run:{workdir}")
    with open(os.path.join(workdir, "config.json")) as f:
        run = json.load(f)
    return encoder_config_from_dict(run["model"]), load_params(workdir)


def encoder_mask(params, trainable: bool):
    """A tree of booleans: True on the encoder's parameters when `trainable`, else False."""
    return {
        k: jax.tree.map(lambda _, t=(k == "encoder") == trainable: t, v) for k, v in params.items()
    }


# -- the task ---------------------------------------------------------------------------------
class FineTuneTask(Task):
    """Classification / regression, token classification or extractive QA on an encoder."""

    def __init__(self, config, workdir: str):
        super().__init__(config, workdir)
        ft = config.finetune
        self.seq_len = config.data.seq_len
        self._pretrained = None
        self._data = None
        kind, source = init_path(config.get("init_from", ""))
        base: Optional[EncoderConfig] = None
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
        src = str(config.data.get("source", ""))
        auto = ("no_keyword", "keyword") if src == "keyword" else None
        names = config_label_names(ft.get("label_names", None))
        num_labels = ft.num_labels
        if src.split(":")[0] in ("csv", "tsv", "jsonl"):
            # Own files: the classes are the label names (given, or read from the data).
            regression = ft.head == "sequence_classification" and ft.num_labels == 1
            train, evals, names = file_records(config.data, ft.head, regression, names)
            self._data = (train, evals)
            if names is not None:
                num_labels = len(names)
        elif src.startswith("tfds:"):
            head, k = tfds_task(src[5:])
            if (ft.head, ft.num_labels) != (head, k):
                raise ValueError(
                    f"data.source={src!r} needs finetune.head={head!r} and finetune.num_labels="
                    f"{k}, got {ft.head!r} and {ft.num_labels}; set them (the `finetune` "
                    "recipe does this from the source)."
                )
            auto = tfds_label_names(src[5:])
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
        """Replaces the fresh encoder by the pretrained one (heads stay fresh)."""
        return fresh if self._pretrained is None else merge_encoder(fresh, self._pretrained)

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

            kind, source = init_path(self.config.get("init_from", ""))
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
            [record_text(e) for e in self._records()[0]],
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

                examples, self.keywords = keyword_task(default_corpus(), seed=self.config.data.seed)
            elif src.startswith("tfds:"):
                d = self.config.data
                name = src[5:]
                get = lambda key, default: d.get(key, default) or default
                limit, data_dir = int(get("max_examples", 0)), get("data_dir", None)
                self._data = (
                    tfds_records(name, get("train_split", "train"), data_dir, limit),
                    tfds_records(
                        name, get("eval_split", default_eval_split(name)), data_dir, limit
                    ),
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
            return {"n": jnp.maximum(batch["label_weights"].astype(jnp.float32).sum(), 1.0)}
        return {"n": jnp.asarray(batch["input_ids"].shape[0], jnp.float32)}

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        out = self.model.apply(
            {"params": params},
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            deterministic=deterministic,
            rngs={"dropout": rng},
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
            return glue_metrics(_tfds_parts(src[5:])[1], pred, labels)
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


def task_loss(cfg: EncoderConfig, out, batch, normalizer=None):
    """(loss, metrics) for the fine-tuning heads. Classification: cross-entropy and
    accuracy; regression (num_labels=1): mean squared error; tokens: cross-entropy over
    labelled tokens; QA: mean of the start and end cross-entropies, exact span accuracy."""
    if cfg.head == "sequence_classification" and cfg.num_labels == 1:
        err = out.logits[:, 0].astype(jnp.float32) - batch["label"].astype(jnp.float32)
        n = normalizer if normalizer is not None else err.shape[0]
        mse = jnp.sum(err**2) / n
        return mse, {"loss": mse, "mse": mse}
    if cfg.head == "sequence_classification":
        loss, m = losses.weighted_cross_entropy(out.logits, batch["label"], normalizer=normalizer)
        return loss, {"loss": loss, "accuracy": m["accuracy"]}
    if cfg.head == "token_classification":
        labels = jnp.maximum(batch["labels"], 0)  # -100 slots carry weight 0
        loss, m = losses.weighted_cross_entropy(
            out.logits, labels, batch["label_weights"], normalizer=normalizer
        )
        return loss, {"loss": loss, "accuracy": m["accuracy"]}
    if cfg.head == "question_answering":
        ls, ms = losses.weighted_cross_entropy(
            out.start_logits, batch["start_positions"], normalizer=normalizer
        )
        le, me = losses.weighted_cross_entropy(
            out.end_logits, batch["end_positions"], normalizer=normalizer
        )
        both = (jnp.argmax(out.start_logits, -1) == batch["start_positions"]) & (
            jnp.argmax(out.end_logits, -1) == batch["end_positions"]
        )
        n = normalizer if normalizer is not None else both.shape[0]
        loss = (ls + le) / 2
        return loss, {
            "loss": loss,
            "start_accuracy": ms["accuracy"],
            "end_accuracy": me["accuracy"],
            "span_accuracy": both.sum() / n,
        }
    raise ValueError(f"no fine-tuning loss for head {cfg.head!r}.")


def frozen_encoder_unchanged(before, after) -> bool:
    """True when every encoder parameter is bit-for-bit equal in both trees."""
    a, b = jax.tree.leaves(before["encoder"]), jax.tree.leaves(after["encoder"])
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
