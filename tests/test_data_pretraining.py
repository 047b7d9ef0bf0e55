"""Pretraining instances (NSP / SOP / single segments), static vs dynamic masking, packing."""

import numpy as np
import pytest

from jaxformer.data import corpus
from jaxformer.data.masking import MaskingConfig
from jaxformer.data.packing import Packer, padding_fraction
from jaxformer.data.pretraining import PretrainingConfig, create_instances, pretraining_dataset
from jaxformer.data.sources import split_sentences
from jaxformer.data.tokenizers import Tokenizer, train_tokenizer
from data_builders import plain_and_packed


class CodedTokenizer:
    """Word "t<doc>x<sentence>x<k>" -> id 10 + code: every token says where it came from."""

    family, cls_id, sep_id = "bert", 2, 3
    build_inputs = Tokenizer.build_inputs
    num_special_tokens = Tokenizer.num_special_tokens

    def tokenize_ids(self, texts):
        return [[10 + self.code(*map(int, w[1:].split("x"))) for w in t.split()] for t in texts]

    @staticmethod
    def code(doc, sent, k):
        return (doc * 100 + sent) * 100 + k

    @staticmethod
    def where(i):
        i -= 10
        return i // 10000, (i // 100) % 100, i % 100  # doc, sentence, k


def coded_documents(n_docs, rng):
    docs = []
    for d in range(n_docs):
        sents = [
            " ".join(f"t{d}x{s}x{k}" for k in range(rng.integers(3, 9)))
            for s in range(rng.integers(1, 14))
        ]
        docs.append("\n".join(sents))
    return docs


@pytest.fixture(scope="module")
def coded():
    return coded_documents(1600, np.random.default_rng(0)), CodedTokenizer()


def _segments(inst):
    ids, types = inst["input_ids"], inst["token_type_ids"]
    body = (ids != 2) & (ids != 3)
    return ids[body & (types == 0)], ids[body & (types == 1)]


def _order(ids, tok):
    d, s, k = np.array([tok.where(int(i)) for i in ids]).T
    return d, s * 100 + k  # position of each token in its document


def test_nsp_is_half_random_and_positives_are_continuations(coded):
    docs, tok = coded
    cfg = PretrainingConfig(max_seq_len=40, objective="nsp")
    insts, stats = create_instances(docs, tok, cfg, seed=1)
    labels = np.array([x["pair_label"] for x in insts])
    assert len(insts) > 2500 and abs(labels.mean() - 0.5) < 0.02
    assert stats["documents without a sentence boundary"] == sum("\n" not in d for d in docs)
    for x in insts:
        assert len(x["input_ids"]) <= cfg.max_seq_len
        a, b = _segments(x)
        (da, pa), (db, pb) = _order(a, tok), _order(b, tok)
        assert len(set(da)) == 1 and len(set(db)) == 1
        assert np.all(np.diff(pa) > 0) and np.all(np.diff(pb) > 0)  # each segment in order
        if x["pair_label"] == 0:
            assert da[0] == db[0] and pa.max() < pb.min()
        else:
            assert da[0] != db[0]


def test_sop_negatives_are_exact_swaps(coded):
    docs, tok = coded
    cfg = PretrainingConfig(max_seq_len=40, objective="sop")
    insts, _ = create_instances(docs, tok, cfg, seed=2)
    labels = np.array([x["pair_label"] for x in insts])
    assert abs(labels.mean() - 0.5) < 0.03
    exact = 0
    for x in insts:
        a, b = _segments(x)
        first, second = (b, a) if x["pair_label"] == 1 else (a, b)  # undo the swap
        (d1, p1), (d2, p2) = _order(first, tok), _order(second, tok)
        assert len(set(d1) | set(d2)) == 1 and p1.max() < p2.min()
        untruncated = len(x["input_ids"]) < cfg.max_seq_len
        if untruncated and x["pair_label"] == 1:
            # nothing trimmed: first+second is one unbroken run of the document
            full = np.concatenate([first, second])
            d, s, k = np.array([tok.where(int(i)) for i in full]).T
            step_ok = ((s[1:] == s[:-1]) & (k[1:] == k[:-1] + 1)) | (
                (s[1:] == s[:-1] + 1) & (k[1:] == 0)
            )
            assert step_ok.all()
            exact += 1
    assert exact > 100


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    docs = corpus.default_corpus(cache_dir=str(tmp_path_factory.mktemp("cache")))[:200]
    return docs, train_tokenizer(docs, "bert", vocab_size=3000)


@pytest.mark.parametrize("objective", ["nsp", "sop", "none"])
def test_no_instance_exceeds_max_seq_len_and_short_ones_exist(real, objective):
    docs, tok = real
    cfg = PretrainingConfig(max_seq_len=64, objective=objective)
    insts, _ = create_instances(docs, tok, cfg, seed=0)
    lengths = np.array([len(x["input_ids"]) for x in insts])
    assert lengths.max() <= 64
    for x in insts:
        assert x["input_ids"][0] == tok.cls_id and x["input_ids"][-1] == tok.sep_id
    # short_seq_prob: some instances target a random shorter length
    no_short, _ = create_instances(docs, tok, cfg.__class__(64, objective, 0.0), seed=0)
    short = np.mean(lengths < 32)
    print(objective, "short fraction", short, np.mean([len(x["input_ids"]) < 32 for x in no_short]))
    assert short > np.mean([len(x["input_ids"]) < 32 for x in no_short]) + 0.01


def test_single_segments_cover_the_text_in_order(real):
    docs, tok = real
    cfg = PretrainingConfig(max_seq_len=64, objective="none", short_seq_prob=0.0)
    insts, _ = create_instances(docs[:20], tok, cfg, seed=0)
    # no shuffle-independent order, so compare token multisets: nothing lost, nothing added
    sentences = [s for d in docs[:20] for s in split_sentences(d)]
    want = [i for ids in tok.tokenize_ids(sentences) for i in ids]
    got = [i for x in insts for i in x["input_ids"] if i not in (tok.cls_id,)]
    seps = got.count(tok.sep_id) - len(insts)  # separators between documents
    got = [i for i in got if i != tok.sep_id]
    assert sorted(got) == sorted(want) and 0 < seps < 20


def _original(ex):
    ids = ex["input_ids"].copy()
    real_ = ex["mlm_weights"] > 0
    ids[ex["mlm_positions"][real_]] = ex["mlm_ids"][real_]
    return ids


@pytest.mark.parametrize("pack", [False, True])
def test_dynamic_masks_change_per_epoch_static_repeat(real, pack):
    docs, tok = real
    cfg = PretrainingConfig(max_seq_len=64, objective="nsp")
    insts, _ = create_instances(docs[:60], tok, cfg, seed=0)
    n = None
    for masking in ("static", "dynamic"):
        ds = pretraining_dataset(insts, tok, cfg, masking=masking, seed=3, num_epochs=2, pack=pack)
        n = len(ds) // 2
        items = [ds[i] for i in range(2 * n)]
        epochs = [
            {
                _original(x).tobytes(): x["mlm_positions"].tobytes()
                for x in items[e * n : (e + 1) * n]
            }
            for e in range(2)
        ]
        assert epochs[0].keys() == epochs[1].keys()  # the same rows, reshuffled
        same = np.mean([epochs[0][k] == epochs[1][k] for k in epochs[0]])
        assert same == 1.0 if masking == "static" else same < 0.2
        order = [_original(x).tobytes() for x in items]
        assert order[:n] != order[n:]  # each epoch reshuffles
        again = pretraining_dataset(
            insts, tok, cfg, masking=masking, seed=3, num_epochs=2, pack=pack
        )
        for i in range(0, 2 * n, 7):
            other = again[i]
            for k in items[i]:
                np.testing.assert_array_equal(items[i][k], other[k])


def test_dupe_factor_makes_differently_segmented_copies(real):
    docs, tok = real
    one, _ = create_instances(docs[:50], tok, PretrainingConfig(64, "nsp"), seed=0)
    three, _ = create_instances(docs[:50], tok, PretrainingConfig(64, "nsp", dupe_factor=3), seed=0)
    assert 2.5 < len(three) / len(one) < 3.5
    keys = [x["input_ids"].tobytes() for x in three]
    assert len(set(keys)) > 0.9 * len(keys)


def test_packing_preserves_every_example_and_cuts_padding(real):
    docs, tok = real
    cfg = PretrainingConfig(
        max_seq_len=128,
        objective="none",
        short_seq_prob=0.5,
        masking=MaskingConfig(max_predictions=20),
    )
    insts, _ = create_instances(docs, tok, cfg, seed=0)
    ds = pretraining_dataset(insts, tok, cfg, masking="static", seed=0)
    packed = pretraining_dataset(insts, tok, cfg, masking="static", seed=0, pack=True)
    plain = {}
    for i in range(len(ds)):
        ex = ds[i]
        n = ex["attention_mask"].sum()
        k = ex["mlm_weights"] > 0
        plain[ex["input_ids"][:n].tobytes()] = (ex["mlm_positions"][k], ex["mlm_ids"][k])
    found = 0
    for r in range(len(packed)):
        row = packed[r]
        seg, pos = row["segment_ids"], row["position_ids"]
        assert np.array_equal(row["attention_mask"], (seg > 0).astype(np.int32))
        mlm_seg = seg[row["mlm_positions"]][row["mlm_weights"] > 0]
        for s in range(1, seg.max() + 1):
            where = np.flatnonzero(seg == s)
            assert np.array_equal(pos[where], np.arange(len(where)))
            assert np.all(np.diff(where) == 1)
            key = row["input_ids"][where].tobytes()
            want_pos, want_ids = plain.pop(key)
            k = (row["mlm_weights"] > 0) & (seg[row["mlm_positions"]] == s)
            np.testing.assert_array_equal(row["mlm_positions"][k] - where[0], want_pos)
            np.testing.assert_array_equal(row["mlm_ids"][k], want_ids)
            found += 1
        assert np.all(np.diff(mlm_seg) >= 0)
    assert not plain and found == len(ds)  # every example exactly once
    lengths = [len(x["input_ids"]) for x in insts]
    unpacked = padding_fraction(lengths, 128)
    with_packing = padding_fraction(lengths, 128, num_rows=len(packed))
    measured = 1 - sum(packed[r]["attention_mask"].sum() for r in range(len(packed))) / (
        len(packed) * 128
    )
    assert with_packing == pytest.approx(measured)
    print(f"padding fraction: unpacked {unpacked:.3f}, packed {with_packing:.3f}")
    assert with_packing < unpacked / 3


def test_packer_plan_respects_all_budgets():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 500)
    preds = rng.integers(0, 10, 500)
    packer = Packer(64, 0, max_segments=4, max_predictions=16)
    rows = packer.plan(lengths, preds)
    assert sorted(i for r in rows for i in r) == list(range(500))
    for r in rows:
        assert lengths[r].sum() <= 64 and preds[r].sum() <= 16 and len(r) <= 4
    with pytest.raises(ValueError, match="exceeds seq_len"):
        packer.plan([65])


def test_bad_inputs_are_clear(real):
    docs, tok = real
    with pytest.raises(ValueError, match="objective"):
        create_instances(docs, tok, PretrainingConfig(objective="mlm"))
    with pytest.raises(ValueError, match="NSP needs at least 2 documents"):
        create_instances(["One. Two. Three."], tok, PretrainingConfig(objective="nsp"))
    with pytest.raises(ValueError, match="no usable documents"):
        create_instances(["no sentence boundary at all"], tok, PretrainingConfig(objective="sop"))
    _, stats = create_instances(
        docs[:30] + ["a single run-on sentence without an end"],
        tok,
        PretrainingConfig(objective="sop"),
    )
    assert stats["documents without a sentence boundary"] >= 1


def test_packed_and_unpacked_batches_give_the_same_per_example_loss(real):
    import jax
    import jax.numpy as jnp
    from jaxformer.models import EncoderModel, bert_config

    docs, tok = real
    u, p = plain_and_packed(docs, tok, 64)
    assert len(u["input_ids"]) == 24  # one row per instance
    assert len(p["input_ids"]) < len(u["input_ids"])
    model = EncoderModel(
        bert_config("tiny", vocab_size=tok.vocab_size, head="mlm", max_position_embeddings=64)
    )
    params = model.init(jax.random.key(0), jnp.asarray(u["input_ids"][:1]))["params"]

    @jax.jit
    def losses(batch, extra):
        out = model.apply(
            {"params": params},
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            mlm_positions=batch["mlm_positions"],
            **extra,
        )
        logp = jax.nn.log_softmax(out.mlm_logits.astype(jnp.float32))
        return -jnp.take_along_axis(logp, batch["mlm_ids"][..., None], -1)[..., 0]

    def token_losses(batch, **extra):
        keys = ("input_ids", "attention_mask", "token_type_ids", "mlm_positions", "mlm_ids")
        return np.asarray(losses({k: batch[k] for k in keys}, extra))

    lu = token_losses(u)
    lp = token_losses(p, segment_ids=p["segment_ids"], position_ids=p["position_ids"])
    want = {}
    for i in range(len(u["input_ids"])):
        n, w = u["attention_mask"][i].sum(), u["mlm_weights"][i]
        want[u["input_ids"][i][:n].tobytes()] = (lu[i] * w).sum() / w.sum()
    compared = 0
    for r in range(len(p["input_ids"])):
        seg = p["segment_ids"][r]
        pred_seg = seg[p["mlm_positions"][r]] * (p["mlm_weights"][r] > 0)
        for s in range(1, seg.max() + 1):
            key = p["input_ids"][r][seg == s].tobytes()
            got = lp[r][pred_seg == s].mean()
            np.testing.assert_allclose(got, want.pop(key), rtol=2e-5)
            compared += 1
    assert compared == len(u["input_ids"]) and not want  # every instance, once
