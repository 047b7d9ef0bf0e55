"""Fine-tuning preprocessors (GLUE, SQuAD, NER, translation) and their metrics."""

import re

import grain
import numpy as np
import pytest
import scipy.stats
import tensorflow_datasets as tfds

from jaxformer.data import corpus, finetuning as ft, metrics, sources
from jaxformer.data.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def docs():
    return corpus.stdlib_docstring_documents(300_000)


@pytest.fixture(scope="module")
def toks(docs):
    return {f: train_tokenizer(docs, f, vocab_size=2000) for f in ("bert", "roberta")}


# ---- GLUE ---------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["sst2", "mnli", "stsb"])
def test_glue_from_tfds_mock(toks, task):
    tok = toks["bert"]
    first, second, _ = ft.GLUE_TASKS[task]
    with tfds.testing.mock_data(num_examples=12):
        src = sources.tfds_source(f"glue/{task}", split="train")
        ds = grain.MapDataset.source(src).map(ft.GlueProcessor(task, tok, max_seq_len=24)).batch(4)
        batch, raw = ds[0], [src[i] for i in range(4)]
    assert batch["input_ids"].shape == (4, 24)
    for row, ex in enumerate(raw):
        a = tok.tokenize_ids([ex[first]])[0]
        b = tok.tokenize_ids([ex[second]])[0] if second else None
        n = int(batch["attention_mask"][row].sum())
        ids, types = batch["input_ids"][row][:n], batch["token_type_ids"][row][:n]
        assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
        first_ids = list(ids[1 : list(ids).index(tok.sep_id)])
        assert first_ids == a[: len(first_ids)]  # truncated from the end only
        if b is not None:
            second_ids = list(ids[len(first_ids) + 2 : -1])
            assert second_ids == b[: len(second_ids)] and set(types[len(first_ids) + 2 :]) == {1}
        assert n == 24 or len(first_ids) == len(a)
    want = np.array([ex["label"] for ex in raw])
    np.testing.assert_array_equal(batch["label"], want)
    assert batch["label"].dtype == (np.float32 if task == "stsb" else np.int32)


def test_unknown_glue_task(toks):
    with pytest.raises(ValueError, match="unknown GLUE task"):
        ft.GlueProcessor("sst3", toks["bert"])


# ---- SQuAD --------------------------------------------------------------------------------
def _squad_examples(docs, n=40):
    rng = np.random.default_rng(0)
    context = " ".join(sources.split_sentences(docs[3]) + sources.split_sentences(docs[4]))
    words = [(m.start(), m.end()) for m in re.finditer(r"[A-Za-z]{3,}", context)]
    out = []
    for k in rng.choice(len(words) - 3, n, replace=False):
        s, e = words[k][0], words[k + 2][1]
        out.append(
            {
                "id": str(k),
                "question": "What is said here?",
                "context": context,
                "answers": {"text": [context[s:e]], "answer_start": [s]},
            }
        )
    return out


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_squad_answers_across_stride_boundaries_are_recovered(toks, docs, family):
    tok = toks[family]
    cfg = ft.SquadConfig(max_seq_len=64, doc_stride=20, max_query_len=16)
    examples = _squad_examples(docs)
    feats, skipped = ft.prepare_squad(examples, tok, cfg)
    assert not skipped
    by_example = {}
    for f in feats:
        by_example.setdefault(int(f["example_index"]), []).append(f)
    straddling = 0
    for i, ex in enumerate(examples):
        gold, s = ex["answers"]["text"][0], ex["answers"]["answer_start"][0]
        fs = by_example[i]
        assert len(fs) > 2  # the context needs several windows
        holding = [f for f in fs if f["start_positions"] > 0]
        assert holding
        for f in holding:
            sp, ep = f["start_positions"], f["end_positions"]
            assert ex["context"][f["offsets"][sp, 0] : f["offsets"][ep, 1]] == gold
        for f in fs:  # a window that sees part of the answer but not all of it
            off = f["offsets"][f["offsets"][:, 0] >= 0]
            lo, hi = off[0, 0], off[-1, 1]
            straddling += (lo < s < hi < s + len(gold)) or (lo < s + len(gold) < hi and lo > s)
    assert straddling >= 5
    # one-hot logits at the gold span of each feature give back the gold text
    starts = [np.eye(64)[f["start_positions"]] * 5 for f in feats]
    ends = [np.eye(64)[f["end_positions"]] * 5 for f in feats]
    preds = ft.squad_predictions(feats, starts, ends, [ex["context"] for ex in examples])
    scores = metrics.squad_scores(preds, [ex["answers"]["text"] for ex in examples])
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_squad_v2_no_answer_and_misaligned_answers(toks, docs):
    tok = toks["bert"]
    ex = _squad_examples(docs, 2)
    impossible = dict(ex[0], answers={"text": [], "answer_start": []}, is_impossible=True)
    feats, _ = ft.prepare_squad([impossible], tok, ft.SquadConfig(64, 20, 16))
    assert all(f["start_positions"] == 0 and f["end_positions"] == 0 for f in feats)
    start = [np.eye(64)[0] * 5 for _ in feats]
    assert ft.squad_predictions(feats, start, start, [ex[0]["context"]], version_2=True) == [""]
    bad = dict(ex[1], answers={"text": ["not in there"], "answer_start": [5]})
    with pytest.raises(ValueError, match="is not at character 5"):
        ft.prepare_squad([bad], tok)
    feats, skipped = ft.prepare_squad([bad, ex[0]], tok, errors="skip")
    assert skipped["answer not found at answer_start"] == 1
    assert {int(f["example_index"]) for f in feats} == {1}


def test_squad_from_tfds_mock(toks):
    with tfds.testing.mock_data(num_examples=6):
        src = sources.tfds_source("squad", split="train")
        examples = [src[i] for i in range(6)]
    ok = sum(
        str(e["context"])[s : s + len(str(t))] == str(t)
        for e in examples
        for s, t in [(e["answers"]["answer_start"][0], e["answers"]["text"][0])]
    )
    feats, skipped = ft.prepare_squad(
        examples, toks["bert"], ft.SquadConfig(128, 32, 32), errors="skip"
    )
    assert skipped["answer not found at answer_start"] == 6 - ok
    eval_feats, _ = ft.prepare_squad(
        examples, toks["bert"], ft.SquadConfig(128, 32, 32), training=False
    )
    assert {int(f["example_index"]) for f in eval_feats} == set(range(6))


# ---- NER ----------------------------------------------------------------------------------
def test_ner_labels_sit_on_first_subtokens(toks):
    tok = toks["bert"]
    words = ["Guido", "van", "Rossum", "wrote", "Pythonically", "in", "Amsterdam", "."]
    tags = [1, 2, 2, 0, 7, 0, 5, 0]
    f = ft.encode_ner(tok, words, tags, max_seq_len=32)
    pieces = [tok.tokenize_ids([w])[0] for w in words]
    assert any(len(p) > 1 for p in pieces)
    expected = (
        [-100]
        + [t if j == 0 else -100 for p, t in zip(pieces, tags) for j in range(len(p))]
        + [-100]
    )
    n = len(expected)
    np.testing.assert_array_equal(f["labels"][:n], expected)
    assert np.all(f["labels"][n:] == -100) and f["label_weights"].sum() == len(words)
    np.testing.assert_array_equal(f["input_ids"][1 : n - 1], [i for p in pieces for i in p])
    names = ft.ner_tags_from_predictions(f["labels"], f["labels"])
    assert names == [ft.CONLL2003_TAGS[t] for t in tags]
    # truncation never keeps half a word
    short = ft.encode_ner(tok, words, tags, max_seq_len=2 + len(pieces[0]) + 1)
    assert short["num_words"] == 1 and short["label_weights"].sum() == 1
    assert ft.encode_ner(tok, words, tags, max_seq_len=32, label_all_subtokens=True)[
        "label_weights"
    ].sum() == sum(map(len, pieces))


def test_ner_from_tfds_mock_reports_mismatched_lengths(toks):
    with tfds.testing.mock_data(num_examples=4):
        src = sources.tfds_source("conll2003", split="train")
        ex = [src[i] for i in range(4)]
    for e in ex:  # mock data draws tokens and tags independently
        if len(e["tokens"]) != len(e["ner"]):
            with pytest.raises(ValueError, match="words but"):
                ft.encode_ner(toks["bert"], e["tokens"], e["ner"])
        else:
            assert ft.encode_ner(toks["bert"], e["tokens"], e["ner"])["num_words"] > 0


# ---- translation --------------------------------------------------------------------------
def test_translation_buckets_from_tfds_mock(toks):
    tok = toks["roberta"]
    with tfds.testing.mock_data(num_examples=60):
        src = sources.tfds_source("wmt14_translate/de-en", split="train")
        examples = [ft.encode_translation(tok, tok, src[i]["de"], src[i]["en"]) for i in range(60)]
    boundaries = [8, 16, 32]
    ds, skipped = ft.translation_dataset(
        examples,
        boundaries=boundaries,
        batch_size=[8, 4, 2],
        pad_id=tok.pad_id,
        seed=0,
        num_epochs=2,
    )
    lengths = [max(len(e["inputs"]), len(e["targets"])) for e in examples]
    assert skipped["longer than 32 tokens"] == sum(n > 32 for n in lengths)
    seen = 0
    for i in range(len(ds) // 2):
        b = ds[i]
        width = b["inputs"].shape[1]
        assert width in boundaries and b["targets"].shape[1] == width
        rows = b["inputs"].shape[0]
        assert rows == {8: 8, 16: 4, 32: 2}[width]
        real = np.maximum((b["inputs"] != tok.pad_id).sum(1), (b["targets"] != tok.pad_id).sum(1))
        lower = boundaries[boundaries.index(width) - 1] if width > 8 else 0
        assert np.all((real > lower) & (real <= width))
        assert np.all(
            b["inputs"][np.arange(rows), (b["inputs"] != tok.pad_id).sum(1) - 1] == tok.sep_id
        )  # EOS ends every source
        seen += rows
    assert seen + sum(skipped.values()) == 60


# ---- metrics ------------------------------------------------------------------------------
def test_classification_metrics_against_hand_counts():
    p = np.array([1, 1, 0, 0, 1, 0, 1, 1])
    y = np.array([1, 0, 0, 1, 1, 0, 1, 0])
    tp, fp, fn, tn = 3, 2, 1, 2
    assert metrics.accuracy(p, y) == 5 / 8
    assert metrics.f1(p, y) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert metrics.matthews_corr(p, y) == pytest.approx(mcc)
    assert metrics.matthews_corr(np.ones(4), np.ones(4)) == 0.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    z = np.round(x + rng.normal(size=200), 1)  # ties exercise average ranks
    assert metrics.pearson(x, z) == pytest.approx(scipy.stats.pearsonr(x, z)[0])
    assert metrics.spearman(x, z) == pytest.approx(scipy.stats.spearmanr(x, z)[0])


def test_squad_metric_normalisation():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    assert metrics.squad_exact_match("an apple", "Apple.") == 1.0
    assert metrics.squad_f1("the big red dog", "red dog barked") == pytest.approx(
        2 * (2 / 3) * (2 / 3) / (4 / 3)
    )
    assert metrics.squad_scores(["", "x"], [[], ["y", "x"]]) == {"exact_match": 100.0, "f1": 100.0}
    assert metrics.squad_scores(["something"], [[]])["f1"] == 0.0


def test_entity_f1_follows_conlleval_rules():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O", "O", "I-ORG"]]  # LOC cut short; I-ORG starts
    assert metrics.get_entities(pred[0]) == [("PER", 0, 1), ("LOC", 3, 3), ("ORG", 6, 6)]
    r = metrics.entity_f1(pred, gold)
    assert (r["precision"], r["recall"]) == (2 / 3, 2 / 3) and r["f1"] == pytest.approx(2 / 3)
    assert metrics.get_entities(["I-PER", "I-LOC", "B-LOC", "E-LOC", "S-MISC"]) == [
        ("PER", 0, 0),
        ("LOC", 1, 1),
        ("LOC", 2, 3),
        ("MISC", 4, 4),
    ]


def test_bleu():
    refs = ["the cat sat on the mat today", "a quick brown fox jumps over it"]
    assert metrics.bleu(refs, refs) == pytest.approx(100.0)
    assert metrics.bleu(["zz yy xx ww", "qq pp oo nn"], refs) < 1.0
    partial = metrics.bleu(["the cat sat on the mat", "a quick brown fox jumps"], refs)
    assert 30 < partial < 100
