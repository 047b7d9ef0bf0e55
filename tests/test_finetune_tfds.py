"""Fine-tuning on tensorflow-datasets sources (GLUE, CoNLL-2003, SQuAD) end to end.

tfds is mocked with a data source of learnable examples in each dataset's own feature
format, so the whole path runs: tfds.data_source -> records -> tokenizer -> training ->
the task's own metric, which is then recomputed independently from the HF export.
"""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxformer.tasks.finetune import tfds_records, tfds_task
from jaxformer.tasks import get_task
from jaxformer.training import loop
from jaxformer.training.config_lib import load_config_file

QUIET = {"log.progress": False, "log.tensorboard": False, "log.plot": False}
FILLER = (
    "the a of film story plot it was and with this that really quite some very "
    "movie scene actor cast time"
).split()


def mocked(rows_by_split):
    """tfds.testing.mock_data serving `rows_by_split[split]` to tfds.data_source."""

    def as_data_source(self, split=None, *args, **kwargs):
        return rows_by_split[str(split)]

    return tfds.testing.mock_data(as_data_source_fn=as_data_source)


def sst2_rows(n, seed):
    rng = np.random.default_rng(seed)
    pos, neg = ["great", "wonderful", "excellent"], ["awful", "boring", "terrible"]
    rows = []
    for i in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILLER, int(rng.integers(4, 10))))
        words.insert(int(rng.integers(len(words) + 1)), rng.choice(pos if label else neg))
        rows.append({"sentence": " ".join(words).encode(), "label": label, "idx": i})
    return rows


def conll_rows(n, seed):
    rng = np.random.default_rng(seed)
    first, last = ["john", "mary", "peter", "anna"], ["smith", "jones", "brown"]
    cities = ["paris", "berlin", "london"]
    rows = []
    for i in range(n):
        tokens, ner = [], []
        for _ in range(int(rng.integers(3, 7))):
            r = rng.random()
            if r < 0.2:
                tokens += [rng.choice(first), rng.choice(last)]
                ner += [1, 2]  # B-PER I-PER
            elif r < 0.35:
                tokens.append(rng.choice(cities))
                ner.append(5)  # B-LOC
            else:
                tokens.append(rng.choice(FILLER))
                ner.append(0)
        rows.append(
            {
                "tokens": [t.encode() for t in tokens],
                "ner": ner,
                "pos": [0] * len(ner),
                "chunks": [0] * len(ner),
                "id": str(i),
            }
        )
    return rows


def squad_rows(n, seed):
    rng = np.random.default_rng(seed)
    codes = ["alpha", "bravo", "delta", "echo", "golf", "hotel", "kilo", "lima"]
    rows = []
    for i in range(n):
        before = " ".join(rng.choice(FILLER, int(rng.integers(2, 8))))
        after = " ".join(rng.choice(FILLER, int(rng.integers(2, 8))))
        code = str(rng.choice(codes))
        context = f"{before} the code is {code} . {after}"
        rows.append(
            {
                "id": str(i),
                "title": "t",
                "context": context.encode(),
                "question": b"what is the code ?",
                "answers": {
                    "text": [code.encode()],
                    "answer_start": [context.index(f"is {code}") + 3],
                },
            }
        )
    return rows


def run(task, rows, tmp_path, steps, **overrides):
    c = load_config_file(f"configs/finetune_tfds.py:{task}")
    settings = {
        **QUIET,
        "num_train_steps": steps,
        "optimizer.warmup_steps": 10,
        "optimizer.lr": 2e-3,
        "batch_size": 32,
        "data.seq_len": 32,
        "checkpoint.every_steps": steps,
        "log.eval_every_steps": steps,
        "log.every_steps": steps,
        **overrides,
    }
    for k, v in settings.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    tiny = load_config_file("configs/finetune_tiny.py").model
    c.model = tiny
    with mocked(rows):
        loop.train(c, str(tmp_path), get_task, log=lambda *_: None)
    with open(os.path.join(tmp_path, "summary.json")) as f:
        return json.load(f)


def test_tfds_tasks_pick_their_heads_and_bad_names_are_clear():
    assert tfds_task("glue/sst2") == ("sequence_classification", 2)
    assert tfds_task("glue/stsb") == ("sequence_classification", 1)
    assert tfds_task("glue/mnli") == ("sequence_classification", 3)
    assert tfds_task("squad/v2.0") == ("question_answering", 2)
    assert tfds_task("conll2003") == ("token_classification", 9)
    with pytest.raises(ValueError, match="unknown GLUE task 'sst3'"):
        tfds_task("glue/sst3")
    with pytest.raises(ValueError, match="no fine-tuning preprocessor.*jsonl"):
        tfds_task("imdb_reviews")
    c = load_config_file("configs/finetune_tfds.py:glue/sst2")
    c.finetune.num_labels = 3
    from jaxformer.tasks.finetune import FineTuneTask

    with pytest.raises(
        ValueError, match="needs finetune.head='sequence_classification' and finetune.num_labels=2"
    ):
        FineTuneTask(c, "/tmp/unused")


def test_tfds_records_follow_each_dataset_format():
    with mocked({"train": sst2_rows(5, 0)}):
        r = tfds_records("glue/sst2", "train", limit=3)
    assert len(r) == 3 and set(r[0]) == {"text", "pair", "label"} and r[0]["pair"] is None
    assert isinstance(r[0]["text"], str)
    with mocked({"validation": conll_rows(4, 0)}):
        r = tfds_records("conll2003", "validation")
    assert len(r[0]["words"]) == len(r[0]["tags"]) and isinstance(r[0]["words"][0], str)
    with mocked({"train": squad_rows(2, 0)}):
        r = tfds_records("squad/v1.1", "train")
    a = r[0]["answers"]
    assert r[0]["context"][a["answer_start"][0] :].startswith(a["text"][0])


@pytest.mark.slow
def test_glue_sst2_from_tfds_learns_and_its_metric_matches_the_export(tmp_path):
    rows = {"train": sst2_rows(1200, 0), "validation": sst2_rows(200, 1)}
    s = run("glue/sst2", rows, tmp_path, steps=250)
    assert s["eval_task_accuracy"] >= 0.9, s
    # The same accuracy, recomputed from the HuggingFace export and its tokenizer.
    from jaxformer import from_pretrained
    from jaxformer.data import load_tokenizer
    from jaxformer.data.finetuning import encode_classification

    model, params = from_pretrained(os.path.join(tmp_path, "hf_export"))
    tok = load_tokenizer(os.path.join(tmp_path, "hf_export"))
    feats = [
        encode_classification(tok, r["sentence"].decode(), None, r["label"], max_seq_len=32)
        for r in rows["validation"]
    ]
    b = {
        k: np.stack([f[k] for f in feats])
        for k in ("input_ids", "attention_mask", "token_type_ids")
    }
    logits = model.apply(
        {"params": params},
        b["input_ids"],
        attention_mask=b["attention_mask"],
        token_type_ids=b["token_type_ids"],
    ).logits
    labels = np.array([r["label"] for r in rows["validation"]])
    assert float((np.asarray(logits).argmax(-1) == labels).mean()) == pytest.approx(
        s["eval_task_accuracy"], abs=1e-9
    )


@pytest.mark.slow
def test_conll2003_from_tfds_reaches_entity_f1(tmp_path):
    rows = {"train": conll_rows(800, 0), "validation": conll_rows(150, 1)}
    s = run("conll2003", rows, tmp_path, steps=120)
    assert s["eval_task_entity_f1"] >= 0.8, s
    assert 0.0 <= s["eval_task_token_accuracy"] <= 1.0


@pytest.mark.slow
def test_squad_from_tfds_reports_exact_match_and_f1(tmp_path):
    rows = {"train": squad_rows(800, 0), "validation": squad_rows(150, 1)}
    s = run("squad/v1.1", rows, tmp_path, steps=150)
    assert 0.0 <= s["eval_task_exact_match"] <= s["eval_task_f1"] <= 100.0
    assert s["eval_task_exact_match"] >= 80.0, s
