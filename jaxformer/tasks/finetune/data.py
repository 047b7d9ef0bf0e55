"""Fine-tuning data adapters: the generated keyword task, tensorflow-datasets sources and
your own csv / tsv / jsonl files, all as fine-tuning records (`jaxformer.data.labelled`)."""

from __future__ import annotations

import re

import numpy as np

__all__ = [
    "GLUE_LABELS",
    "config_label_names",
    "default_eval_split",
    "file_records",
    "keyword_task",
    "record_text",
    "tfds_label_names",
    "tfds_records",
    "tfds_task",
]

KEYWORD_COUNT_LIMIT = 400


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


def tfds_label_names(name: str) -> tuple | None:
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


def tfds_records(name: str, split: str, data_dir: str | None = None, limit: int = 0) -> list[dict]:
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


def config_label_names(value) -> tuple | None:
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

    fields = labelled.Fields(**{f: str(data[f"{f}_field"]) for f in vars(labelled.Fields())})
    sources = [str(data.source)] + ([str(data.eval_source)] if data.eval_source else [])
    parsed = []
    for src in sources:
        p = labelled.parse_file_source(src)
        if p is None:
            raise ValueError(
                f"data source {src!r}: use csv:PATH, tsv:PATH or jsonl:PATH (data.eval_source "
                "'' holds out data.eval_fraction of the training file)."
            )
        parsed.append(p)
    limit = int(data.max_examples)
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
