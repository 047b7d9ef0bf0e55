"""The translation task: generated corpus, tokenizer, tfds WMT path, and the training recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.data import translation_task as tt


@pytest.mark.parametrize(
    "n, words",
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (95, "ninety five"),
        (100, "one hundred"),
        (110, "one hundred ten"),
        (4307, "four thousand three hundred seven"),
        (20000, "twenty thousand"),
        (999999, ("nine hundred ninety nine thousand nine hundred ninety nine")),
    ],
)
def test_number_to_words(n, words):
    assert tt.number_to_words(n) == words


@pytest.fixture(scope="module")
def corpus():
    c = tt.make_number_corpus(num_train=2000, num_test=200, seed=1)
    tok = tt.train_tokenizer([s for p in c["train"] for s in p])
    return c, tok


def test_corpus_split_is_disjoint_and_deterministic(corpus):
    c, _ = corpus
    train, test = {s for s, _ in c["train"]}, {s for s, _ in c["test"]}
    assert len(train) == 2000 and len(test) == 200 and not train & test
    assert tt.make_number_corpus(num_train=2000, num_test=200, seed=1) == c
    with pytest.raises(ValueError, match="distinct numbers"):
        tt.make_number_corpus(num_train=100, num_test=20, max_digits=2)


def test_tokenizer_and_arrays_round_trip(corpus):
    c, tok = corpus
    assert (tok.pad_id, tok.eos_id) == (0, 1)
    arrays = tt.encode_pairs(tok, c["test"])
    assert set(arrays) == {"input_ids", "attention_mask", "labels", "labels_mask"}
    # Digits are one token each, EOS closes both sides.
    src, _ = c["test"][0]
    n = int(arrays["attention_mask"][0].sum())
    assert n == len(src) + 1 and arrays["input_ids"][0, n - 1] == tok.eos_id
    assert tok.decode(arrays["labels"]) == [t for _, t in c["test"]]
    with pytest.raises(ValueError, match="max 2"):
        tt.encode_pairs(tok, c["test"], max_source_len=2)


def test_batches_cover_an_epoch(corpus):
    c, tok = corpus
    arrays = tt.encode_pairs(tok, c["train"][:100])
    seen = [b["input_ids"] for b in tt.batches(arrays, 32, repeat=False, shuffle=False)]
    assert [len(b) for b in seen] == [32, 32, 32, 4]
    it = tt.batches(arrays, 32, seed=0)
    assert all(len(next(it)["labels"]) == 32 for _ in range(5))


@pytest.mark.parametrize("name", ["wmt14_translate/de-en", "wmt_t2t_translate/de-en"])
def test_tfds_wmt_path_with_mock_data(name):
    tfds = pytest.importorskip("tensorflow_datasets")
    from jaxformer.models.transformer import Transformer, transformer_config
    from jaxformer.objectives.seq2seq import compute_loss

    with tfds.testing.mock_data(num_examples=8):
        pairs = tt.tfds_translation_pairs(name, split="train", source_lang="en", target_lang="de")
        with pytest.raises(KeyError, match="fields"):
            tt.tfds_translation_pairs(name, split="train", source_lang="fr", target_lang="de")
    assert len(pairs) == 8 and all(isinstance(s, str) and isinstance(t, str) for s, t in pairs)
    tok = tt.train_tokenizer([s for p in pairs for s in p], kind="bpe", vocab_size=60)
    batch = {k: jnp.asarray(v) for k, v in tt.encode_pairs(tok, pairs).items()}
    model = Transformer(transformer_config("nano", vocab_size=tok.vocab_size, max_len=128))
    params = model.init(
        jax.random.key(0), batch["input_ids"], batch["attention_mask"], batch["labels"]
    )["params"]
    loss, metrics = compute_loss(model, params, batch)
    assert np.isfinite(loss) and metrics["num_tokens"] == batch["labels_mask"].sum()


@pytest.mark.slow
def test_recipe_learns_held_out_numbers():
    """A shortened recipe (the full one is in docs/seq2seq.md: 100% EM in ~4 min)."""
    from jaxformer.seq2seq_train import train_translation

    r = train_translation(num_train=10000, num_test=300, steps=900, verbose=False)
    assert r["greedy"]["exact_match"] >= 80.0 and r["beam"]["exact_match"] >= 80.0
    assert r["greedy"]["bleu"] >= 90.0
