"""The corpus store: prepare (text, JSONL, tfds), determinism, resume, bad input; the lazy
examples built from it (NSP/SOP/full sentences, packing, masking modes); exact iterator
resume; and PretrainTask reading `store:DIR`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxformer.data import DataIterator, MaskingConfig, PretrainingConfig, corpus
from jaxformer.data.lazy import StoreExamples, held_out_warning, permute, store_batches
from jaxformer.data.sources import read_text_files, split_sentences
from jaxformer.data.store import PairStore, Store, StoreError, prepare
from data_builders import prepare_pairs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_text(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")


@pytest.fixture(scope="module")
def docs():
    return corpus.stdlib_docstring_documents(300_000)


@pytest.fixture(scope="module")
def built(tmp_path_factory, docs):
    """Two text files and a store of them (bert, vocab 2048), several shards."""
    d = tmp_path_factory.mktemp("store")
    half = len(docs) // 2
    _write_text(d / "a.txt", docs[:half])
    _write_text(d / "b.txt", docs[half:])
    out = str(d / "store")
    prepare(
        [str(d / "*.txt")],
        out,
        tokenizer_family="bert",
        vocab_size=2048,
        workers=1,
        progress=False,
        chunk_bytes=60_000,
    )
    store = Store(out)
    return d, store, store.tokenizer()


# ---- prepare ----------------------------------------------------------------------------
def test_store_holds_every_sentence_of_every_document(built):
    d, store, tok = built
    want = read_text_files(str(d / "*.txt"))  # the eager reader: an independent reference
    assert store.num_documents == len(want) and len(store.manifest["shards"]) > 2
    for i in (0, 1, len(want) // 2, len(want) - 1):
        ids = [x for x in tok.tokenize_ids(split_sentences(want[i])) if x]
        got = store.document(i)
        assert [list(x) for x in got] == ids
    m = store.manifest
    assert m["counts"]["tokens"] == sum(len(t) for t in store.tokens)
    assert m["tokenizer"]["vocab_size"] == tok.vocab_size <= 2048
    assert [i["name"] for i in m["inputs"]] == [str(d / "a.txt"), str(d / "b.txt")]


def _tree(path):
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.relpath(os.path.join(root, f), path)] = fh.read()
    return out


def test_prepare_is_byte_identical_with_any_worker_count(built, tmp_path):
    d, store, _ = built
    kw = dict(tokenizer_family="bert", vocab_size=2048, progress=False, chunk_bytes=60_000)
    prepare([str(d / "*.txt")], str(tmp_path / "w2"), workers=2, **kw)
    assert _tree(tmp_path / "w2") == _tree(store.path)


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_tokenizer_training_is_byte_identical_across_processes(family, tmp_path):
    code = (
        "import sys; from jaxformer.data import corpus, train_tokenizer;"
        "docs = corpus.stdlib_docstring_documents(200_000);"
        f"train_tokenizer(docs, {family!r}, vocab_size=1500).save(sys.argv[1])"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    for run in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / run)], env=env, check=True)
    a, b = ((tmp_path / r / "tokenizer.json").read_bytes() for r in "ab")
    assert a == b and len(json.loads(a)["model"]["vocab"]) >= 1000


def test_prepare_jsonl_and_non_utf8_lines(tmp_path, built):
    _, store, tok = built
    tok_dir = os.path.join(store.path, "tokenizer")
    lines = [json.dumps({"body": f"Doc {i} one. Doc {i} two.", "id": i}) for i in range(6)]
    raw = ("\n".join(lines[:3]) + "\n").encode() + b"\xff\xfe broken\n"
    raw += ("\n".join(lines[3:]) + "\n").encode()
    (tmp_path / "x.jsonl").write_bytes(raw)
    with pytest.raises(ValueError, match=r"x.jsonl: line at byte \d+ is not UTF-8"):
        prepare(str(tmp_path / "x.jsonl"), str(tmp_path / "s1"), format="jsonl",
                field="body", tokenizer=tok_dir, progress=False)  # fmt: skip
    m = prepare(
        str(tmp_path / "x.jsonl"),
        str(tmp_path / "s2"),
        format="jsonl",
        field="body",
        tokenizer=tok_dir,
        errors="skip",
        progress=False,
    )
    assert m["skipped"] == {"non-UTF-8 lines": 1} and m["counts"]["documents"] == 6
    s = Store(str(tmp_path / "s2"))
    assert [list(x) for x in s.document(4)] == tok.tokenize_ids(["Doc 4 one.", "Doc 4 two."])


def test_prepare_from_tfds_mock_data(tmp_path, built):
    import tensorflow_datasets as tfds

    from jaxformer.data.sources import tfds_source

    _, store, tok = built
    with tfds.testing.mock_data(num_examples=30):
        m = prepare(
            [],
            str(tmp_path / "s"),
            format="tfds:wikipedia/20230601.en",
            tokenizer=os.path.join(store.path, "tokenizer"),
            workers=1,
            progress=False,
        )
        src = tfds_source("wikipedia/20230601.en", split="train")
        texts = [src[i]["text"] for i in range(30)]
    texts = [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
    want = [[x for x in tok.tokenize_ids(split_sentences(t)) if x] for t in texts]
    want = [w for w in want if w]
    s = Store(str(tmp_path / "s"))
    assert s.num_documents == len(want) == m["counts"]["documents"]
    assert [list(x) for x in s.document(len(want) - 1)] == want[-1]


def test_pair_store(tmp_path, built):
    _, store, tok = built
    rows = [{"de": f"Guten Morgen {i}.", "en": f"Good morning {i}."} for i in range(5)]
    rows.insert(2, {"de": "", "en": "empty source"})
    m = prepare_pairs(str(tmp_path), rows, tokenizer=os.path.join(store.path, "tokenizer"))
    assert m["counts"] == {"pairs": 5} and m["skipped"] == {"pairs with an empty side": 1}
    ps = PairStore(str(tmp_path / "pairs"))
    src, tgt = ps[4]
    assert list(src) == tok.tokenize_ids(["Guten Morgen 4."])[0]
    assert list(tgt) == tok.tokenize_ids(["Good morning 4."])[0]
    with pytest.raises(StoreError, match="pairs store, not a pretraining store"):
        Store(str(tmp_path / "pairs"))


# ---- resume and bad stores ---------------------------------------------------------------
def test_damaged_shards_are_named_and_resume_redoes_only_them(built, tmp_path):
    import shutil

    d, store, _ = built
    out = str(tmp_path / "copy")
    shutil.copytree(store.path, out)
    before = _tree(out)
    shards = os.path.join(out, "shards")
    mtimes = {f: os.stat(os.path.join(shards, f)).st_mtime_ns for f in os.listdir(shards)}
    with open(os.path.join(shards, "00001.tokens.npy"), "r+b") as f:
        f.truncate(200)
    with pytest.raises(StoreError, match=r"00001.tokens.npy has 200 bytes.*--resume"):
        Store(out)
    with open(os.path.join(shards, "00001.tokens.npy"), "wb") as f:
        f.write(before["shards/00001.tokens.npy"])
    mtimes["00001.tokens.npy"] = os.stat(os.path.join(shards, "00001.tokens.npy")).st_mtime_ns
    with open(os.path.join(shards, "00002.tokens.npy"), "r+b") as f:
        f.seek(300)
        byte = f.read(1)
        f.seek(300)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(StoreError, match=r"00002.tokens.npy fails its CRC-32 check"):
        Store(out)
    os.remove(os.path.join(shards, "00003.sentences.npy"))
    with pytest.raises(StoreError, match=r"00003.sentences.npy is missing"):
        Store(out, verify=False)
    # A killed prepare leaves no manifest: the store is absent, and says how to finish it.
    os.remove(os.path.join(out, "manifest.json"))
    with pytest.raises(StoreError, match="unfinished.*--resume"):
        Store(out)
    kw = dict(tokenizer_family="bert", vocab_size=2048, progress=False, chunk_bytes=60_000)
    with pytest.raises(FileExistsError, match="--resume"):
        prepare(str(d / "*.txt"), out, **kw)
    prepare(str(d / "*.txt"), out, workers=1, resume=True, **kw)
    assert _tree(out) == before
    redone = {
        f for f in os.listdir(shards) if os.stat(os.path.join(shards, f)).st_mtime_ns != mtimes[f]
    }
    assert redone == {f"0000{k}.{n}" for k in (2, 3) for n in ("tokens.npy", "sentences.npy",
                      "documents.npy", "json")}  # fmt: skip


def test_bad_stores_and_inputs_are_clear_errors(built, tmp_path):
    import shutil

    _, store, _ = built
    out = str(tmp_path / "v")
    shutil.copytree(store.path, out)
    path = os.path.join(out, "manifest.json")
    m = json.load(open(path))
    m["format_version"] = 99
    json.dump(m, open(path, "w"))
    with pytest.raises(StoreError, match="format version 99.*reads version 1.*prepare it again"):
        Store(out)
    with pytest.raises(StoreError, match="not a store"):
        Store(str(tmp_path))
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(StoreError, match="holds no text"):
        prepare(str(tmp_path / "empty.txt"), str(tmp_path / "e1"), progress=False)
    with pytest.raises(StoreError, match="no documents in the input"):
        prepare(str(tmp_path / "empty.txt"), str(tmp_path / "e2"), progress=False,
                tokenizer=os.path.join(store.path, "tokenizer"))  # fmt: skip
    assert not os.path.exists(tmp_path / "e2" / "manifest.json")
    with pytest.raises(FileNotFoundError, match="matches no file"):
        prepare(str(tmp_path / "nothing*.txt"), str(tmp_path / "e3"), progress=False)


# ---- lazy examples ----------------------------------------------------------------------
def _doc_streams(store):
    return [np.concatenate(store.document(i)).astype(np.int32).tobytes()
            for i in range(store.num_documents)]  # fmt: skip


def _contains(streams, ids):
    """Documents whose token stream holds `ids` contiguously."""
    key, out = np.asarray(ids, np.int32).tobytes(), []
    for i, s in enumerate(streams):
        p = s.find(key)
        while p >= 0 and p % 4:
            p = s.find(key, p + 1)
        if p >= 0:
            out.append(i)
    return out


def _pairs(ex, n):
    out = []
    for i in range(n):
        for seg in ex.segments(i):
            ids = seg.ids
            sep = np.flatnonzero(ids == ex.tok.sep_id)
            out.append((ids[1 : sep[0]], ids[sep[0] + 1 : sep[1]], seg.label, len(ids)))
    return out


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_pairs_follow_bert(built, objective):
    _, store, tok = built
    cfg = PretrainingConfig(max_seq_len=64, objective=objective, short_seq_prob=0.1)
    ex = StoreExamples(store, tok, cfg, seed=3, masking="device")
    labels = np.array([ex.segments(i)[0].label for i in range(len(ex))])
    assert len(labels) > 1000
    assert abs(labels.mean() - 0.5) < 0.05, labels.mean()  # 3 sigma at 1000
    streams = _doc_streams(store)
    checked = 0
    for a, b, label, n in _pairs(ex, 600):
        assert n <= 64 and len(a) and len(b)
        if n >= 64 - 1:
            continue  # truncated: the ends were trimmed
        checked += 1
        joined = np.concatenate([a, b] if label == 0 or objective == "nsp" else [b, a])
        together = _contains(streams, joined)
        if objective == "sop" or label == 0:
            assert together, (objective, label)  # in order (or exactly swapped back)
        else:  # NSP "not next": B from another document, A and B not contiguous
            assert not together and set(_contains(streams, b)) - set(_contains(streams, a))
    assert checked > 20


def test_nsp_rate_holds_over_thousands_of_instances(built):
    _, store, tok = built
    ex = StoreExamples(store, tok, PretrainingConfig(64, "nsp", dupe_factor=3), masking="device")
    labels = np.array([s.label for i in range(len(ex)) for s in ex.segments(i)])
    assert len(labels) > 3500 and abs(labels.mean() - 0.5) < 0.025  # 3 sigma


@pytest.mark.parametrize("objective", ["nsp", "sop", "none"])
@pytest.mark.parametrize("pack", [False, True])
def test_rows_never_exceed_max_seq_len_and_short_ones_exist(built, objective, pack):
    _, store, tok = built
    cfg = PretrainingConfig(max_seq_len=64, objective=objective, short_seq_prob=0.2)
    ex = StoreExamples(store, tok, cfg, masking="device", pack=pack)
    lengths = []
    for i in range(0, len(ex), 7):
        row = ex.example(i)
        assert row["input_ids"].shape == (64,)
        n = int(row["attention_mask"].sum())
        assert (row["input_ids"][n:] == tok.pad_id).all()
        lengths += [len(s.ids) for s in ex.segments(i)]
        if pack:
            seg = row["segment_ids"]
            assert seg.max() == len(ex.segments(i)) and (seg[:n] > 0).all()
    assert max(lengths) <= 64 and min(lengths) < 40


@pytest.mark.parametrize("objective", ["nsp", "none"])
def test_batch_lays_out_each_rows_instances_in_order(built, objective):
    """The vectorised batch against a row-by-row layout of `segments` (the reference)."""
    import pickle

    _, store, tok = built
    mask = MaskingConfig(whole_word=True)
    cfg = PretrainingConfig(64, objective, short_seq_prob=0.6, masking=mask)
    ex = StoreExamples(store, tok, cfg, masking="device", pack=True, max_segments=4)
    rows = [3, 0, len(ex) - 1, 17, 3, 8, 9]
    got = pickle.loads(pickle.dumps(ex)).batch(rows, [0] * 7)  # as a loader worker gets it
    for r, i in enumerate(rows):
        segs, at = ex.segments(i), 0
        for s, seg in enumerate(segs):
            n = len(seg.ids)
            np.testing.assert_array_equal(got["input_ids"][r, at : at + n], seg.ids)
            np.testing.assert_array_equal(got["token_type_ids"][r, at : at + n], seg.types)
            np.testing.assert_array_equal(got["position_ids"][r, at : at + n], np.arange(n))
            assert (got["segment_ids"][r, at : at + n] == s + 1).all()
            assert got["word_starts"][r, at : at + n][seg.starts].all()
            if objective == "nsp":
                assert got["cls_positions"][r, s] == at and got["pair_label"][r, s] == seg.label
            at += n
        assert (got["input_ids"][r, at:] == tok.pad_id).all()
        assert not got["segment_ids"][r, at:].any() and got["attention_mask"][r].sum() == at
        if objective == "nsp":
            assert got["pair_weights"][r].sum() == len(segs)
            assert not got["pair_label"][r, len(segs) :].any()
    assert len({len(ex.segments(i)) for i in rows}) > 1  # rows of different instance counts


def test_full_sentences_cross_documents_with_a_separator(built):
    _, store, tok = built
    cfg = PretrainingConfig(max_seq_len=128, objective="none", short_seq_prob=0.0)
    ex = StoreExamples(store, tok, cfg, masking="device")
    streams = _doc_streams(store)
    crossed = 0
    for i in range(len(ex)):
        ids = ex.segments(i)[0].ids[1:-1]  # without [CLS] ... [SEP]
        parts = np.split(ids, np.flatnonzero(ids == tok.sep_id))
        parts = [p[1:] if k else p for k, p in enumerate(parts)]
        crossed += len(parts) > 1
        for p in parts:
            assert len(p) and _contains(streams, p)
    assert crossed > 10


def test_masking_modes(built):
    _, store, tok = built
    cfg = PretrainingConfig(64, "nsp", masking=MaskingConfig(max_predictions=10, whole_word=True))
    dev = StoreExamples(store, tok, cfg, masking="device", pack=True).batch(range(8), [0] * 8)
    assert "mlm_positions" not in dev and tok.mask_id not in dev["input_ids"]
    assert dev["word_starts"].dtype == bool and dev["word_starts"].shape == (8, 64)
    assert {"segment_ids", "position_ids", "pair_label", "cls_positions"} <= set(dev)
    plain = PretrainingConfig(64, "nsp", masking=MaskingConfig(max_predictions=10))
    assert "word_starts" not in StoreExamples(store, tok, plain, masking="device").example(0)
    static = StoreExamples(store, tok, plain, masking="static")
    dynamic = StoreExamples(store, tok, plain, masking="dynamic")
    for ex, same in ((static, True), (dynamic, False)):
        a, b = ex.example(5, epoch=0), ex.example(5, epoch=1)
        assert (a["mlm_positions"] == b["mlm_positions"]).all() == same
        pos = a["mlm_positions"][a["mlm_weights"] > 0]
        unmasked = dev_row = StoreExamples(store, tok, plain, masking="device").example(5)
        assert (a["mlm_ids"][: len(pos)] == unmasked["input_ids"][pos]).all()
        assert (np.delete(a["input_ids"], pos) == np.delete(dev_row["input_ids"], pos)).all()


def test_packed_rows_give_the_same_per_example_loss_as_unpacked(built):
    import jax
    import jax.numpy as jnp

    from jaxformer.models import EncoderModel, bert_config

    _, store, tok = built
    cfg = PretrainingConfig(max_seq_len=64, objective="none", short_seq_prob=0.6)
    ex = StoreExamples(store, tok, cfg, masking="static", pack=True)
    p = ex.batch(range(6), [0] * 6)
    assert p["segment_ids"].max() > 1
    # Each packed segment on its own row, masked exactly as in the packed row.
    rows, where = [], []
    for r in range(6):
        seg, w = p["segment_ids"][r], p["mlm_weights"][r] > 0
        for s in range(1, seg.max() + 1):
            at = np.flatnonzero(seg == s)
            keep = w & (seg[p["mlm_positions"][r]] == s)
            n, pos = len(at), p["mlm_positions"][r][keep] - at[0]
            u = {"input_ids": np.full(64, tok.pad_id, np.int32), "attention_mask": np.zeros(64)}
            u["input_ids"][:n], u["attention_mask"][:n] = p["input_ids"][r][at], 1
            u["mlm_positions"] = np.zeros(ex.max_predictions, np.int32)
            u["mlm_positions"][: len(pos)] = pos
            rows.append(u)
            where.append((r, keep))
    model = EncoderModel(
        bert_config("tiny", vocab_size=tok.vocab_size, head="mlm", max_position_embeddings=64)
    )
    params = model.init(jax.random.key(0), jnp.zeros((1, 64), jnp.int32))["params"]

    def losses(ids, mask, pos, targets, **extra):
        out = model.apply({"params": params}, ids, attention_mask=mask, mlm_positions=pos, **extra)
        logp = jax.nn.log_softmax(out.mlm_logits.astype(jnp.float32))
        return np.asarray(jnp.take_along_axis(logp, targets[..., None], -1)[..., 0])

    lp = losses(p["input_ids"], p["attention_mask"], p["mlm_positions"], p["mlm_ids"],
                segment_ids=p["segment_ids"], position_ids=p["position_ids"])  # fmt: skip
    for u, (r, keep) in zip(rows, where):
        k = int(keep.sum())
        if not k:
            continue
        targets = np.zeros(ex.max_predictions, np.int32)
        targets[:k] = p["mlm_ids"][r][keep]
        lu = losses(u["input_ids"][None], u["attention_mask"][None], u["mlm_positions"][None],
                    targets[None])[0]  # fmt: skip
        np.testing.assert_allclose(lu[:k].mean(), lp[r][keep].mean(), rtol=2e-5)


def test_permutation_and_iterator_resume_exactly(built):
    _, store, tok = built
    assert sorted(permute(np.arange(1000), 1000, 7)) == list(range(1000))
    assert list(permute(np.arange(1000), 1000, 7)) != list(permute(np.arange(1000), 1000, 8))
    ex = StoreExamples(store, tok, PretrainingConfig(64, "sop"), masking="dynamic")
    it = DataIterator(store_batches(ex, 4, seed=1), prefetch=2)
    for _ in range(3):
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(3)]
    it.close()
    again = DataIterator(store_batches(ex, 4, seed=1), prefetch=2)
    again.set_state(json.loads(json.dumps(state)))
    for w in want:
        g = next(again)
        assert all((g[k] == w[k]).all() for k in w)
    again.close()
    # Two processes read disjoint halves of the same global batches.
    halves = [store_batches(ex, 2, seed=1, process_index=i, process_count=2)[3] for i in (0, 1)]
    whole = store_batches(ex, 4, seed=1)[3]
    both = np.concatenate([h["input_ids"] for h in halves])
    assert sorted(map(bytes, both)) == sorted(map(bytes, whole["input_ids"]))


def test_held_out_warning():
    assert held_out_warning(40, 32) is None
    assert "fewer than one eval batch of 32" in held_out_warning(5, 32)


# ---- the task ---------------------------------------------------------------------------
def _task(store_path, workdir, **data):
    from jaxformer.recipes import configs as recipes
    from jaxformer.tasks import get_task

    c = recipes.bert_pretrain("tiny")
    c.data.source = f"store:{store_path}"
    for k, v in data.items():
        setattr(c.data, k, v) if k != "vocab_size" else setattr(c.model, k, v)
    return get_task(c, str(workdir))


def test_task_reads_the_store_and_checks_it(built, tmp_path):
    _, store, tok = built
    task = _task(store.path, tmp_path / "w1", masking="device", eval_fraction=0.01)
    it = task.train_iterator(16, 0, 1)
    b = next(it)
    it.close()
    assert set(b) == {"input_ids", "attention_mask", "token_type_ids", "pair_label"}
    assert b["input_ids"].shape == (16, 64)
    ev = task.eval_batches(256, 0, 1)
    assert task.eval_warning and "fewer than one eval batch" in task.eval_warning
    assert len(ev) == 1 and "mlm_positions" in ev[0]
    assert task._eval_docs[1] == store.num_documents
    assert os.path.exists(tmp_path / "w1" / "tokenizer" / "tokenizer.json")
    with pytest.raises(ValueError, match=rf"{tok.vocab_size} ids but model.vocab_size=100"):
        _task(store.path, tmp_path / "w2", vocab_size=100)._load_data()


def test_prepare_command(built, tmp_path, capsys):
    from jaxformer.cli import main

    d, store, _ = built
    tok = os.path.join(store.path, "tokenizer")
    out = str(tmp_path / "s")
    args = ["prepare", "--input", str(d / "a.txt"), "--output", out, "--no-progress"]
    assert main(args + ["--tokenizer", tok, "--workers", "1"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["documents"] == Store(out).num_documents > 0
    assert main(args + ["--tokenizer", tok]) == 2
    assert "already holds a prepared store: pass --resume" in capsys.readouterr().err
    assert main(["prepare", "--input", str(d / "a.txt"), "--output", str(tmp_path / "t")]) == 2
    assert "give --tokenizer DIR, or --tokenizer-family and --vocab-size" in capsys.readouterr().err
    assert main(args[:-1] + ["--format", "csv", "--tokenizer", tok, "--resume"]) == 2
    assert "--format must be text, jsonl or tfds:NAME" in capsys.readouterr().err
