"""Encoder-decoder packing and bucketing: the data pieces (jaxformer.data.pairs) keep every
token and count what they drop; packed rows give every pair the loss it has unpacked."""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.data import pairs as P
from jaxformer.models.transformer import Transformer, transformer_config
from jaxformer.objectives.seq2seq import compute_loss, shift_right

PAD, EOS, START = 0, 1, 0
SRC_LEN, TGT_LEN = 24, 20


def _random_pairs(n, seed=0, longest=11, first=2):
    """Pairs whose first source token (first + i) names the pair; no EOS yet."""
    rs = np.random.RandomState(seed)
    out = []
    for i in range(n):
        s = rs.randint(3, 50, rs.randint(1, longest))
        s[0] = first + i
        out.append((s, rs.randint(3, 50, rs.randint(1, longest))))
    return out


def _unpack(batch):
    """Packed batch -> list of (source, target, decoder input) per segment, and checks that
    the segment ids number the pairs 1..k contiguously, then 0 (padding)."""
    got = []
    for r in range(batch["input_ids"].shape[0]):
        for side in ("segment_ids", "decoder_segment_ids"):
            seg = batch[side][r]
            k = seg.max()
            change = np.flatnonzero(np.diff(seg)) + 1
            assert list(seg[np.r_[0, change]]) == list(range(1, k + 1)) + (
                [0] if seg[-1] == 0 else []
            )
        for k in range(1, batch["segment_ids"][r].max() + 1):
            s, t = batch["segment_ids"][r] == k, batch["decoder_segment_ids"][r] == k
            got.append(
                (
                    tuple(batch["input_ids"][r][s]),
                    tuple(batch["labels"][r][t]),
                    tuple(batch["decoder_input_ids"][r][t]),
                )
            )
    return got


def test_pack_pairs_keeps_every_token_and_counts_what_it_drops():
    pairs = _random_pairs(40)
    pairs += [(np.arange(3, 3 + SRC_LEN), [5, 6])]  # SRC_LEN tokens + EOS: too long
    pairs += [([7, 8], np.arange(3, 3 + TGT_LEN))]  # target too long
    pairs += [([], [4]), ([4], [])]  # an empty side
    pairs += [(np.arange(3, 3 + SRC_LEN - 1), np.arange(3, 3 + TGT_LEN - 1))]  # exactly fits
    stats = P.PairStats()
    kw = dict(pad_id=PAD, start_id=START, eos_id=EOS, window=16, max_segments=4)
    batches = list(P.pack_pairs(pairs, 3, SRC_LEN, TGT_LEN, stats=stats, **kw))
    assert (stats.kept, stats.dropped_too_long, stats.dropped_empty) == (41, 2, 2)
    want = Counter((tuple(s) + (EOS,), tuple(t) + (EOS,)) for s, t in pairs if len(s) and len(t))
    want = Counter({k: v for k, v in want.items() if len(k[0]) <= SRC_LEN and len(k[1]) <= TGT_LEN})
    got = [g for b in batches for g in _unpack(b)]
    assert Counter((s, t) for s, t, _ in got) == want  # every kept pair, token for token
    for _, t, d in got:  # teacher forcing restarts at every pair
        assert d == (START,) + t[:-1]
    for b in batches:
        assert b["input_ids"].shape[1:] == (SRC_LEN,) and b["labels"].shape[1:] == (TGT_LEN,)
        np.testing.assert_array_equal(b["attention_mask"], b["segment_ids"] > 0)
        np.testing.assert_array_equal(b["labels_mask"], b["decoder_segment_ids"] > 0)
        assert b["segment_ids"].max() <= 4
    assert [b["input_ids"].shape[0] for b in batches[:-1]] == [3] * (len(batches) - 1)
    assert stats.rows < stats.kept / 2  # several pairs per row
    assert stats.source_tokens == sum(len(s) for s, _ in want.elements())
    # deterministic; drop_remainder keeps only full batches
    again = list(P.pack_pairs(pairs, 3, SRC_LEN, TGT_LEN, **kw))
    for a, b in zip(batches, again, strict=True):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    full = list(P.pack_pairs(pairs, 3, SRC_LEN, TGT_LEN, drop_remainder=True, **kw))
    assert all(b["input_ids"].shape[0] == 3 for b in full)


def test_bucket_batches():
    pairs = _random_pairs(60, seed=1, longest=20) + [(np.arange(3, 40), [4])]
    stats = P.PairStats()
    bounds = (8, 16, 24)
    batches = list(
        P.bucket_batches(pairs, bounds, pad_id=PAD, tokens_per_batch=64, eos_id=EOS, stats=stats)
    )
    assert stats.dropped_too_long == 1 and stats.kept == 60
    seen = []
    for b in batches:
        n = b["input_ids"].shape[1]
        assert n in bounds and b["input_ids"].shape == b["labels"].shape
        assert b["input_ids"].shape[0] <= 64 // n
        longer = np.maximum(b["attention_mask"].sum(1), b["labels_mask"].sum(1))
        lower = max([x for x in bounds if x < n], default=0)
        assert (longer <= n).all() and (longer > lower).all()  # the smallest bucket that fits
        for r in range(len(longer)):
            s = b["input_ids"][r][b["attention_mask"][r] == 1]
            t = b["labels"][r][b["labels_mask"][r] == 1]
            seen.append((tuple(s), tuple(t)))
    want = [(tuple(s) + (EOS,), tuple(t) + (EOS,)) for s, t in pairs[:60]]
    assert sorted(seen) == sorted(want)
    with pytest.raises(ValueError, match="exactly one of batch_size or tokens_per_batch"):
        next(P.bucket_batches(pairs, bounds, pad_id=PAD))


def test_readers_pair_store_and_tfds(tmp_path):
    import tensorflow_datasets as tfds

    from data_builders import prepare_pairs
    from jaxformer.data.store import PairStore

    rows = [{"de": f"Guten Morgen {i} Welt.", "en": f"Good morning {i} world."} for i in range(6)]
    prepare_pairs(str(tmp_path), rows, tokenizer_family="bert", vocab_size=120)
    store = PairStore(str(tmp_path / "pairs"))
    got = list(P.read_pairs(str(tmp_path / "pairs"), indices=[5, 0]))
    for (s, t), i in zip(got, [5, 0], strict=True):
        np.testing.assert_array_equal(s, store[i][0])
        np.testing.assert_array_equal(t, store[i][1])
    assert len(list(P.read_pairs(store))) == 6

    class WordLengths:  # any tokenizer with encode(list[str]) -> list[list[int]]
        def encode(self, texts):
            return [[3 + len(w) for w in t.split()] for t in texts]

    with tfds.testing.mock_data(num_examples=7):
        texts = list(P.tfds_text_pairs("wmt14_translate/de-en", split="train"))
        ids = list(P.tfds_pair_ids("wmt14_translate/de-en", WordLengths(), chunk=3))
    assert len(texts) == len(ids) == 7
    assert ids == list(zip(*(WordLengths().encode(side) for side in zip(*texts))))


# ---- the model: packed rows == unpacked rows ----------------------------------------------
@pytest.fixture(scope="module")
def model_and_params():
    cfg = transformer_config(
        "nano",
        vocab_size=64,
        max_position_embeddings=32,
        decoder_num_heads=4,
        hidden_dropout=0.0,
        eos_token_id=EOS,
    )
    model = Transformer(cfg)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), **model.dummy_inputs())["params"]
    # larger weights, so a leak across pairs moves the loss visibly
    params = jax.tree_util.tree_map(lambda p: p * 3.0, params)
    return model, params


def _token_nll(model, params, batch, segments: bool):
    """Per-token NLL [b, t] of `batch["labels"]` (jit'd; segment ids passed if asked)."""

    @jax.jit
    def f(params, b):
        seg = {k: b[k] for k in ("segment_ids", "decoder_segment_ids")} if segments else {}
        out = model.apply(
            {"params": params},
            b["input_ids"],
            b["attention_mask"],
            b["decoder_input_ids"],
            b["labels_mask"],
            **seg,
        )
        logp = jax.nn.log_softmax(out.logits, -1)
        return -jnp.take_along_axis(logp, b["labels"][..., None], -1)[..., 0]

    return np.asarray(f(params, batch))


def _per_pair_loss(nll, batch, packed: bool):
    """{pair name (its first source token): mean NLL over its target tokens}."""
    losses = {}
    for r in range(nll.shape[0]):
        segs = batch["segment_ids"][r] if packed else batch["attention_mask"][r]
        dsegs = batch["decoder_segment_ids"][r] if packed else batch["labels_mask"][r]
        for k in range(1, segs.max() + 1):
            name = int(batch["input_ids"][r][segs == k][0])
            losses[name] = float(nll[r][dsegs == k].mean())
    return losses


def test_packed_rows_give_each_pair_its_unpacked_loss(model_and_params):
    model, params = model_and_params
    pairs = _random_pairs(9, seed=3, longest=9, first=10)
    packed = next(P.pack_pairs(pairs, 16, SRC_LEN, TGT_LEN, pad_id=PAD, start_id=START, eos_id=EOS))
    assert packed["segment_ids"].max() >= 3  # rows really hold several pairs
    flat = next(P.bucket_batches(pairs, [12], pad_id=PAD, batch_size=16, eos_id=EOS))
    flat["decoder_input_ids"] = np.asarray(shift_right(flat["labels"], START, PAD))
    flat_nll = _token_nll(model, params, flat, segments=False)
    ref = _per_pair_loss(flat_nll, flat, packed=False)
    got = _per_pair_loss(_token_nll(model, params, packed, segments=True), packed, packed=True)
    assert sorted(got) == sorted(ref) == list(range(10, 19))
    diff = max(abs(got[k] - ref[k]) for k in ref)
    print(f"packed vs unpacked per-pair loss: max |diff| {diff:.2e}")
    assert diff < 1e-5
    # control: the same rows without segment ids leak across pairs
    leak = _per_pair_loss(_token_nll(model, params, packed, segments=False), packed, packed=True)
    assert max(abs(leak[k] - ref[k]) for k in ref) > 1e-2
    # the objective takes packed batches as they come (its own start tokens and segments)
    loss_fn = jax.jit(lambda p, b: compute_loss(model, p, b, label_smoothing=0.0)[1])
    m = loss_fn(params, packed)
    assert float(m["num_tokens"]) == flat["labels_mask"].sum()
    np.testing.assert_allclose(float(m["nll_sum"]), flat_nll[flat["labels_mask"] == 1].sum(), 1e-5)
    with pytest.raises(ValueError, match="need both segment_ids"):
        jax.eval_shape(
            lambda p: model.apply(
                {"params": p},
                packed["input_ids"],
                packed["attention_mask"],
                packed["decoder_input_ids"],
                decoder_segment_ids=packed["decoder_segment_ids"],
            ),
            params,
        )
