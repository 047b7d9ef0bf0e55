"""The translation task: generated corpus, tokenizer, tfds WMT path, and the numbers recipe
trained through train.py and served."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.data import translation_task as tt

# Steps of the end-to-end run: measured to reach BLEU >= 99 (docs/seq2seq.md).
NUMBERS_STEPS = 800


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
    model = Transformer(
        transformer_config("nano", vocab_size=tok.vocab_size, max_position_embeddings=128)
    )
    params = model.init(
        jax.random.key(0), batch["input_ids"], batch["attention_mask"], batch["labels"]
    )["params"]
    loss, metrics = compute_loss(model, params, batch)
    assert np.isfinite(loss) and metrics["num_tokens"] == batch["labels_mask"].sum()


def test_saved_tokenizer_serves_as_the_pipelines_read_it(corpus, tmp_path):
    """What a seq2seq run writes (`Seq2SeqTokenizer.save`) loads as the tokenizer the
    pipelines use: the same ids, `</s>` (EOS) as the separator, pad 0."""
    from jaxformer.data import load_tokenizer

    c, tok = corpus
    loaded = load_tokenizer(tok.save(str(tmp_path / "tok")))
    sources = [s for s, _ in c["test"][:20]] + [t for _, t in c["test"][:20]]
    assert loaded.tokenize_ids(sources) == tok.tokenize_ids(sources) == tok.encode(sources)
    assert (loaded.sep_id, loaded.pad_id) == (tok.sep_id, tok.pad_id) == (tok.eos_id, 0)
    row = tok.encode([c["test"][0][1]])[0] + [tok.eos_id, 0, 0]
    assert tok.decode(row) == c["test"][0][1]  # one row -> one text, cut at EOS
    assert loaded.decode(row[:-3]) == c["test"][0][1]


def test_translation_scores_count_exact_matches():
    from jaxformer.tasks.seq2seq import translation_scores

    refs = ["one two three four", "five six seven eight"]
    assert translation_scores(refs, refs) == {"bleu": pytest.approx(100.0), "exact_match": 100.0}
    half = translation_scores(["one two three four", "five six seven"], refs)
    assert half["exact_match"] == 50.0 and 0.0 < half["bleu"] < 100.0


@pytest.mark.slow
def test_numbers_through_train_py_reach_bleu_99_and_are_served(tmp_path, capsys):
    """The numbers recipe through train.py (in-process): the held-out BLEU the loop reports
    reaches 99 in summary.json and metrics.jsonl, and `jaxformer translate --model RUN`
    turns held-out numbers (never in training) into the right words."""
    import json
    import os

    from jaxformer import cli, launch

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = str(tmp_path / "numbers")
    argv = [
        "--config",
        os.path.join(root, "configs", "transformer_tiny_numbers.py"),
        "--workdir",
        run,
        f"--config.num_train_steps={NUMBERS_STEPS}",
        f"--config.log.eval_every_steps={NUMBERS_STEPS // 2}",
        "--config.checkpoint.every_steps=0",
        "--config.log.progress=false",
        "--config.log.plot=false",
    ]
    assert launch.main(argv) == 0
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["step"] == NUMBERS_STEPS
    assert summary["eval_bleu"] >= 99.0, summary
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    bleu = {r["step"]: r["eval_bleu"] for r in rows if "eval_bleu" in r}
    assert sorted(bleu) == [NUMBERS_STEPS // 2, NUMBERS_STEPS]
    assert bleu[NUMBERS_STEPS] == summary["eval_bleu"]
    assert os.path.isfile(os.path.join(run, "model_config.json"))

    # The same held-out split the task made (train.py's data.synthetic_examples, seed 0).
    held_out = tt.make_number_corpus(20000, 256, seed=0)["test"][-24:]
    capsys.readouterr()
    texts = [s for s, _ in held_out]
    assert cli.main(["translate", "--model", run, "--json", "--beam", "1", *texts]) == 0
    got = [r["translation"] for r in json.loads(capsys.readouterr().out)]
    right = sum(g == w for g, (_, w) in zip(got, held_out))
    assert right >= 23, list(zip(got, held_out))
