"""MLM masking statistics over >= 100k tokens, whole-word masking, seeding."""

import numpy as np
import pytest

from jaxformer.data import corpus
from jaxformer.data.masking import Masker, MaskingConfig, dense_labels
from jaxformer.data.tokenizers import train_tokenizer

SEQ = 128


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    docs = corpus.default_corpus(cache_dir=str(tmp_path_factory.mktemp("cache")))
    toks = {f: train_tokenizer(docs[:150], f, vocab_size=3000) for f in ("bert", "roberta")}
    seqs = {}
    for f, tok in toks.items():
        stream = [i for ids in tok.tokenize_ids(docs[150:400]) for i in ids]
        rows = [
            tok.build_inputs(stream[k : k + SEQ - 2])[0]
            for k in range(0, len(stream) - SEQ, SEQ - 2)
        ][:800]  # 800 x 128 = 102k
        seqs[f] = np.array(rows, np.int32)
    return toks, seqs


def _mask_all(masker, seqs, seed):
    rng = np.random.default_rng(seed)
    return [masker(s, rng) for s in seqs]


def test_masking_rates_over_100k_tokens(setup):
    toks, seqs = setup
    tok, seqs = toks["bert"], seqs["bert"]
    assert seqs.size >= 100_000
    masker = Masker(tok, MaskingConfig(max_predictions=20))
    outs = _mask_all(masker, seqs, 0)
    special = np.isin(seqs, tok.special_ids)
    selected = sum(int(o["mlm_weights"].sum()) for o in outs)
    assert abs(selected / (~special).sum() - 0.15) < 0.005
    kinds = np.zeros(3)
    for seq, o in zip(seqs, outs):
        n = int(o["mlm_weights"].sum())
        pos = o["mlm_positions"][:n]
        assert np.all(np.diff(pos) > 0) and not np.any(np.isin(seq[pos], tok.special_ids))
        assert np.array_equal(o["mlm_ids"][:n], seq[pos])
        assert np.all(o["mlm_weights"][n:] == 0)
        untouched = np.ones(SEQ, bool)
        untouched[pos] = False
        assert np.array_equal(o["input_ids"][untouched], seq[untouched])
        new = o["input_ids"][pos]
        is_mask = new == tok.mask_id
        same = new == seq[pos]
        kinds += [is_mask.sum(), same.sum(), (~is_mask & ~same).sum()]
        assert not np.any(np.isin(new[~is_mask], tok.special_ids))  # random never special
    frac = kinds / kinds.sum()
    np.testing.assert_allclose(frac, [0.8, 0.1, 0.1], atol=0.01)


def test_dense_labels_match_a_loop(setup):
    toks, seqs = setup
    masker = Masker(toks["bert"])
    outs = _mask_all(masker, seqs["bert"][:8], 1)
    stack = {k: np.stack([o[k] for o in outs]) for k in outs[0]}
    labels = dense_labels(stack["mlm_positions"], stack["mlm_ids"], stack["mlm_weights"], SEQ)
    want = np.full((8, SEQ), -100)
    for b, o in enumerate(outs):
        for p, i, w in zip(o["mlm_positions"], o["mlm_ids"], o["mlm_weights"]):
            if w:
                want[b, p] = i
    np.testing.assert_array_equal(labels, want)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_whole_word_masking_never_splits_a_word(setup, family):
    toks, seqs = setup
    tok, seqs = toks[family], seqs[family][:300]
    masker = Masker(tok, MaskingConfig(whole_word=True))
    selected = candidates = 0
    multi_piece_words = 0
    for seq, o in zip(seqs, _mask_all(masker, seqs, 2)):
        words = np.cumsum(tok.word_starts(seq))
        picked = np.zeros(SEQ, bool)
        picked[o["mlm_positions"][o["mlm_weights"] > 0]] = True
        for w in np.unique(words):
            in_word = picked[words == w]
            assert in_word.all() or not in_word.any()
            multi_piece_words += (words == w).sum() > 1 and in_word.all()
        selected += picked.sum()
        candidates += (~np.isin(seq, tok.special_ids)).sum()
    assert multi_piece_words > 50  # the property was exercised
    assert 0.13 < selected / candidates <= 0.155  # skipping overflowing words costs a little


def test_same_seed_same_masks_other_seed_other_masks(setup):
    toks, seqs = setup
    masker = Masker(toks["bert"])
    a, b, c = (_mask_all(masker, seqs["bert"][:50], s) for s in (7, 7, 8))
    assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert sum(np.array_equal(x["mlm_positions"], y["mlm_positions"]) for x, y in zip(a, c)) < 5


def test_short_sequences_keep_the_expected_rate(setup):
    # stochastic rounding: 10 maskable tokens give 1.5 predictions on average, not round()=2
    toks, _ = setup
    tok = toks["bert"]
    seq = np.array(tok.build_inputs(list(range(10, 20)))[0])
    masker = Masker(tok)
    rng = np.random.default_rng(0)
    counts = [masker(seq, rng)["mlm_weights"].sum() for _ in range(4000)]
    assert abs(np.mean(counts) - 1.5) < 0.05


def test_whole_word_needs_word_starts(setup):
    from jaxformer.data.masking import mask_tokens

    with pytest.raises(ValueError, match="word_starts"):
        mask_tokens(
            np.arange(10),
            np.random.default_rng(0),
            mask_id=4,
            special_ids=np.array([0]),
            random_ids=np.arange(5, 10),
            config=MaskingConfig(whole_word=True),
        )
