"""Sources: local files (and their bad inputs), the default corpus, tfds via mock_data."""

import json
import os

import pytest
import tensorflow_datasets as tfds

from jaxformer.data import corpus, sources
from jaxformer.data.pretraining import PretrainingConfig, create_instances
from jaxformer.data.tokenizers import train_tokenizer


def test_blank_line_and_per_file_documents(tmp_path):
    (tmp_path / "a.txt").write_text("Doc one. Line two.\nLine three.\n\n  \n\nDoc two.\n")
    (tmp_path / "b.txt").write_text("Doc three.\n\n\nDoc four.")
    docs = sources.read_text_files(str(tmp_path / "*.txt"))
    assert docs == ["Doc one. Line two.\nLine three.", "Doc two.", "Doc three.", "Doc four."]
    per_file = sources.read_text_files(
        [str(tmp_path / "b.txt"), str(tmp_path / "a.txt")], per="file"
    )
    assert len(per_file) == 2 and per_file[0].startswith("Doc three.")
    assert not docs.skipped


def test_jsonl_documents(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"text": "First doc."})
        + "\n\n"
        + json.dumps({"text": "Zweites Dokument – ü.", "id": 2})
        + "\n"
    )
    assert sources.read_jsonl(str(path)) == ["First doc.", "Zweites Dokument – ü."]
    path.write_text(json.dumps({"text": "ok"}) + "\n{not json\n" + json.dumps({"body": 1}) + "\n")
    with pytest.raises(ValueError, match=r"d.jsonl:2: cannot read field 'text'"):
        sources.read_jsonl(str(path))
    docs = sources.read_jsonl(str(path), errors="skip")
    assert docs == ["ok"] and docs.skipped["bad JSONL line"] == 2


def test_empty_and_non_utf8_files(tmp_path):
    good, empty, latin = tmp_path / "good.txt", tmp_path / "empty.txt", tmp_path / "latin.txt"
    good.write_text("Fine text.")
    empty.write_text("   \n\n")
    latin.write_bytes("caf\u00e9 ok".encode("latin-1"))
    with pytest.raises(ValueError, match=r"empty.txt: file is empty"):
        sources.read_text_files([str(good), str(empty)])
    with pytest.raises(ValueError, match=r"latin.txt: not UTF-8 at byte 3"):
        sources.read_text_files([str(latin)])
    docs = sources.read_text_files([str(good), str(empty), str(latin)], errors="skip")
    assert docs == ["Fine text."]
    assert docs.skipped == {"empty file": 1, "non-UTF-8 file": 1}
    with pytest.raises(FileNotFoundError, match="no files match"):
        sources.read_text_files(str(tmp_path / "*.missing"))
    with pytest.raises(ValueError, match="per must be"):
        sources.read_text_files(str(good), per="line")


def test_sentence_splitting():
    text = 'He said "Stop." Then he left! Is e.g. fine? 3 items.\nNew line here'
    assert sources.split_sentences(text) == [
        'He said "Stop."',
        "Then he left!",
        "Is e.g. fine?",
        "3 items.",
        "New line here",
    ]
    assert sources.split_sentences("no boundary at all") == ["no boundary at all"]


def test_default_corpus_is_large_deterministic_and_cached(tmp_path, monkeypatch):
    a = corpus.default_corpus(cache_dir=str(tmp_path))
    assert sum(len(d.encode("utf-8")) for d in a) >= 1_000_000
    assert len(os.listdir(tmp_path)) == 1
    assert corpus.default_corpus(cache_dir=str(tmp_path)) == a  # from the cache
    small = corpus.stdlib_docstring_documents(100_000)  # rebuilt: a prefix
    assert small == a[: len(small)]
    assert not any(">>>" in d for d in a)
    monkeypatch.setattr(corpus, "stdlib_docstring_documents", lambda n: ["tiny"])
    with pytest.raises(RuntimeError, match="fewer than min_bytes"):
        corpus.default_corpus(min_bytes=10**9, cache_dir=str(tmp_path))


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(corpus.stdlib_docstring_documents(200_000), "bert", vocab_size=2000)


def test_tfds_pretraining_text_dataset(tok):
    with tfds.testing.mock_data(num_examples=40):
        src = sources.tfds_source("wikipedia/20230601.en", split="train")
        docs = sources.tfds_texts(src, field="text")
    assert len(docs) + sum(docs.skipped.values()) == 40
    assert docs == [str(src[i]["text"]).strip() for i in range(40) if str(src[i]["text"]).strip()]
    # mock text has no sentence boundaries: single segments work, pairs are skipped + counted
    insts, _ = create_instances(docs, tok, PretrainingConfig(64, "none"))
    assert insts and all(len(x["input_ids"]) <= 64 for x in insts)
    with pytest.raises(ValueError, match="no usable documents"):
        create_instances(docs, tok, PretrainingConfig(64, "sop"))


def test_tfds_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match=r"tfds does not know the dataset 'wikipedya'"):
        sources.tfds_source("wikipedya", split="train")
    with pytest.raises(ValueError, match=r"cannot open the dataset 'glue/sst3'.*sst3"):
        with tfds.testing.mock_data(num_examples=2):
            sources.tfds_source("glue/sst3", split="train")


def test_tfds_not_prepared_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared"):
        sources.tfds_source("lm1b", split="train", data_dir=str(tmp_path))
