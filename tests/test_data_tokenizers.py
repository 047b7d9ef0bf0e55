"""Tokenizers: training, round trips, special tokens, save/load, parity with transformers."""

import json
import os

import numpy as np
import pytest

from jaxformer.data import corpus
from jaxformer.data.sources import split_sentences
from jaxformer.data.tokenizers import MissingSpecialTokenError, load_tokenizer, train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Return the number of items in a container, or raise TypeError if it has no length.",
    "Café naïve résumé: Über-straße, 3.14 and 42!",
    "tabs\tand  double  spaces, (parentheses) and 'quotes'.",
]
UNICODE = ["emoji 🙂 and 中文 and ﬁ ligature\tand Ωmega", "  leading and trailing  "]


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    return corpus.default_corpus(cache_dir=str(tmp_path_factory.mktemp("cache")))[:120]


@pytest.fixture(scope="module")
def toks(docs):
    extra = TEXTS * 5 + UNICODE * 5
    return {
        f: train_tokenizer(docs + extra, f, vocab_size=2000, min_frequency=1)
        for f in ("bert", "roberta", "albert")
    }


def _sentences(docs, n=300):
    return [s for d in docs for s in split_sentences(d)][:n] + TEXTS


def test_wordpiece_pieces_rebuild_the_normalized_words(toks, docs):
    tok = toks["bert"]
    assert any(t.startswith("##") for t in tok.hf.get_vocab())
    for text in _sentences(docs):
        words = [
            w
            for w, _ in tok.hf.pre_tokenizer.pre_tokenize_str(tok.hf.normalizer.normalize_str(text))
        ]
        enc = tok.encode(text, add_special_tokens=False)
        if tok.unk_id in enc.ids:
            continue
        rebuilt = []
        for t in enc.tokens:
            if t.startswith("##"):
                rebuilt[-1] += t[2:]
            else:
                rebuilt.append(t)
        assert rebuilt == words
        assert tok.decode(enc.ids).replace(" ", "") == "".join(words)


def test_wordpiece_case_and_accent_options(docs):
    text = "Café Über"
    lower = train_tokenizer(docs[:20] + [text] * 5, "bert", vocab_size=500, min_frequency=1)
    cased = train_tokenizer(
        docs[:20] + [text] * 5,
        "bert",
        vocab_size=500,
        min_frequency=1,
        lowercase=False,
        strip_accents=False,
    )
    assert lower.decode(lower.encode(text).ids) == "cafe uber"
    assert cased.decode(cased.encode(text).ids) == text


def test_bpe_round_trip_is_exact_with_no_unknowns(toks, docs):
    tok = toks["roberta"]
    for text in _sentences(docs) + UNICODE + ["unseen: ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ∮"]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok.unk_id not in ids
        assert tok.decode(ids) == text


def test_unigram_round_trip_up_to_normalization(toks, docs):
    tok = toks["albert"]
    for text in _sentences(docs):
        ids = tok.encode(text, add_special_tokens=False).ids
        expected = tok.hf.normalizer.normalize_str(text)  # NFKC + lowercase, spaces kept
        if tok.unk_id not in ids:
            assert tok.decode(ids) == expected


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_pair_template_and_build_inputs_agree(toks, family):
    tok = toks[family]
    a, b = TEXTS[0], TEXTS[1]
    enc = tok.encode(a, b)
    ia, ib = tok.tokenize_ids([a, b])
    ids, types = tok.build_inputs(ia, ib)
    assert enc.ids == ids and enc.type_ids == types
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    if family == "roberta":  # <s> A </s></s> B </s>, all type 0
        assert ids[len(ia) + 1 : len(ia) + 3] == [tok.sep_id] * 2 and set(types) == {0}
    else:  # [CLS] A [SEP] B [SEP], B and its [SEP] are type 1
        assert types == [0] * (len(ia) + 2) + [1] * (len(ib) + 1)
    single = tok.encode(a)
    assert single.ids == tok.build_inputs(ia)[0] and set(single.type_ids) == {0}
    assert tok.num_special_tokens(True) == len(ids) - len(ia) - len(ib)


def test_offsets_point_at_the_token_text(toks):
    tok = toks["bert"]
    text = TEXTS[1]
    enc = tok.encode(text)
    for t, (s, e), special in zip(enc.tokens, enc.offsets, enc.special_tokens_mask):
        if special:
            assert (s, e) == (0, 0)
        elif t != "[UNK]":
            assert text[s:e].lower() == t.removeprefix("##")


def test_word_starts(toks):
    bert, roberta = toks["bert"], toks["roberta"]
    enc = bert.encode("unbelievably tokenization")
    starts = bert.word_starts(np.array(enc.ids))
    assert list(starts) == [not t.startswith("##") for t in enc.tokens]
    enc = roberta.encode("Hello tokenization world")
    starts = roberta.word_starts(np.array(enc.ids))
    # the first word carries no Ġ but follows <s>, so it starts a word too
    expected = [i <= 1 or t.startswith("Ġ") or t == "</s>" for i, t in enumerate(enc.tokens)]
    assert list(starts) == expected


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_save_and_load_round_trip(toks, tmp_path, family):
    tok = toks[family]
    tok.save(str(tmp_path))
    for path in (str(tmp_path), str(tmp_path / "tokenizer.json")):
        loaded = load_tokenizer(path)
        assert loaded.family == family
        assert loaded.encode(TEXTS[2], TEXTS[3]).ids == tok.encode(TEXTS[2], TEXTS[3]).ids
        assert (loaded.mask_id, loaded.pad_id) == (tok.mask_id, tok.pad_id)


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_tokenizer_json_matches_transformers(toks, tmp_path, family):
    from transformers import PreTrainedTokenizerFast

    tok = toks[family]
    tok.save(str(tmp_path))
    s = tok.specials
    ref = PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "tokenizer.json"),
        cls_token=s.cls,
        sep_token=s.sep,
        mask_token=s.mask,
        pad_token=s.pad,
        unk_token=s.unk,
    )
    ours = load_tokenizer(str(tmp_path / "tokenizer.json"))
    for a, b in [(TEXTS[0], None), (TEXTS[2], TEXTS[3]), (UNICODE[0], TEXTS[1])]:
        want = ref(a, b, return_offsets_mapping=True, return_token_type_ids=True)
        got = ours.encode(a, b)
        assert got.ids == want["input_ids"]
        assert got.type_ids == want["token_type_ids"]
        assert [tuple(o) for o in got.offsets] == [tuple(o) for o in want["offset_mapping"]]


def test_vocab_txt_directory_matches_transformers_bert(toks, tmp_path):
    from transformers import BertTokenizer

    vocab = toks["bert"].hf.get_vocab()
    with open(tmp_path / "vocab.txt", "w") as f:
        f.write("\n".join(sorted(vocab, key=vocab.get)) + "\n")
    with open(tmp_path / "tokenizer_config.json", "w") as f:
        json.dump({"do_lower_case": True}, f)
    ref = BertTokenizer(vocab=str(tmp_path / "vocab.txt"), do_lower_case=True)
    ours = load_tokenizer(str(tmp_path))
    assert ours.family == "bert"
    for a, b in [(TEXTS[2], TEXTS[1]), (UNICODE[0], None), ("Héllo, WORLD!!", "中文 ok")]:
        want = ref(a, b, return_token_type_ids=True)
        got = ours.encode(a, b)
        assert got.ids == want["input_ids"] and got.type_ids == want["token_type_ids"]


def test_vocab_json_merges_directory_matches_transformers_roberta(toks, tmp_path):
    from transformers import RobertaTokenizer

    toks["roberta"].hf.model.save(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["merges.txt", "vocab.json"]
    ref = RobertaTokenizer(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"))
    ours = load_tokenizer(str(tmp_path))
    assert ours.family == "roberta"
    for a, b in [(TEXTS[0], TEXTS[3]), (UNICODE[0], None)]:
        assert ours.encode(a, b).ids == ref(a, b)["input_ids"]


def test_missing_special_token_is_a_clear_error(toks, tmp_path):
    data = json.loads(toks["bert"].hf.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "[MASK]"]
    del data["model"]["vocab"]["[MASK]"]
    data["post_processor"] = None
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data))
    with pytest.raises(MissingSpecialTokenError, match=r"mask token '\[MASK\]'"):
        load_tokenizer(str(path), family="bert")


def test_unknown_family_and_missing_path():
    with pytest.raises(ValueError, match="unknown tokenizer family"):
        train_tokenizer(["a b c"], "gpt5")
    with pytest.raises(FileNotFoundError):
        load_tokenizer("/nonexistent/tokenizer")
