"""The WMT recipe's data path: the feed that trains the encoder-decoder (packed rows with
segment ids, over-length pairs dropped and counted, exact resume) and
configs/transformer_base_wmt.py through train.py on mocked wmt14_translate."""

import json
import os

import numpy as np
import pytest

from jaxformer.data import pairs as P

PAD, EOS, START = 0, 1, 0
L = 12


def _pairs(n, seed=0):
    """Pairs whose tokens (>= 3) name the pair: pair i's first source token is 100 + i.
    Every fifth pair is one token over the limit on one side (EOS counted)."""
    rs = np.random.RandomState(seed)
    out = []
    for i in range(n):
        s, t = rs.randint(3, 50, rs.randint(1, 8)), rs.randint(3, 50, rs.randint(1, 8))
        if i % 5 == 4:
            s, t = (rs.randint(3, 50, L), t) if i % 10 == 4 else (s, rs.randint(3, 50, L))
        s[0] = 100 + i
        out.append((s, t))
    return out


PAIRS = _pairs(40)


def _feed(pairs, pack, **kw):
    kept, stats = P.count_pairs(*P.pair_lengths(pairs), L)
    feed = P.PairFeed(
        pairs, kept, 4, L, pad_id=PAD, start_id=START, eos_id=EOS, pack=pack, window=16, **kw
    )
    return feed, kept, stats


def test_packed_feed_rows_carry_segment_ids_on_both_sides():
    """Every packed row, read back by its segment ids, is the pairs it holds: source + EOS
    where `segment_ids == k`, target + EOS in the labels and START + target in the decoder
    inputs where `decoder_segment_ids == k`; masks are the segment ids > 0. An epoch (in
    chunks of 16) holds each pair that fits exactly once and none of the over-length ones."""
    pairs = P.PairArrays([s for s, _ in PAIRS], [t for _, t in PAIRS])
    feed, kept, stats = _feed(pairs, pack=True)
    assert stats.dropped_too_long == 8 and stats.kept == 32 and len(kept) == 32
    seen = []
    for c in range(2):  # 2 chunks of 16 = one epoch of the 32 kept pairs
        for b in feed.batches(c):
            assert b["input_ids"].shape == (4, L) and b["labels"].shape == (4, L)
            assert (b["attention_mask"] == (b["segment_ids"] > 0)).all()
            assert (b["labels_mask"] == (b["decoder_segment_ids"] > 0)).all()
            for r in range(4):
                ks = set(b["segment_ids"][r]) - {0}
                assert ks == set(b["decoder_segment_ids"][r]) - {0}
                for k in sorted(ks):
                    src = b["input_ids"][r][b["segment_ids"][r] == k]
                    at = b["decoder_segment_ids"][r] == k
                    i = int(src[0]) - 100
                    want_s, want_t = pairs[i]
                    assert list(src) == [*want_s, EOS]
                    assert list(b["labels"][r][at]) == [*want_t, EOS]
                    assert list(b["decoder_input_ids"][r][at]) == [START, *want_t]
                    seen.append(i)
    assert sorted(seen) == sorted(kept.tolist())
    assert not {i for i in range(40) if i % 5 == 4} & set(seen)


def test_feed_resumes_exactly_and_reshuffles_each_epoch():
    """The state is the position: a feed set to another's state yields the same batches
    (process blocks included); epoch 2 visits the pairs in another order."""
    pairs = P.PairArrays([s for s, _ in PAIRS], [t for _, t in PAIRS])
    for pack in (True, False):
        a, _, _ = _feed(pairs, pack)
        for _ in range(5):
            next(a)
        b, _, _ = _feed(pairs, pack, process_index=1, process_count=2)
        b.set_state(a.get_state())
        for _ in range(6):
            x, y = next(a), next(b)
            assert all((x[k][2:] == y[k]).all() for k in x)
    bucketed, _, _ = _feed(pairs, pack=False)
    first = [int(r[0]) for c in (0, 1) for b in bucketed.batches(c) for r in b["input_ids"]]
    second = [int(r[0]) for c in (2, 3) for b in bucketed.batches(c) for r in b["input_ids"]]
    assert sorted(first) == sorted(second) and first != second


@pytest.mark.slow
def test_wmt_recipe_trains_on_mocked_wmt14_with_packing(tmp_path):
    """configs/transformer_base_wmt.py through train.py (in-process), tiny, packed, on mocked
    wmt14_translate: it trains (finite losses, every step), summary.json reports the pairs
    dropped as too long equal to a count made here with the run's saved tokenizer, and eval
    BLEU is reported."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from jaxformer import launch
    from jaxformer.data import load_tokenizer
    from jaxformer.data.translation_task import tfds_translation_pairs

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run, seq_len, steps = str(tmp_path / "wmt"), 10, 4
    argv = [
        "--config",
        os.path.join(root, "configs", "transformer_base_wmt.py"),
        "--workdir",
        run,
        *(
            f"--config.model.{k}={v}"
            for k, v in dict(
                vocab_size=256,
                hidden_size=32,
                num_heads=2,
                intermediate_size=64,
                num_encoder_layers=1,
                num_decoder_layers=1,
                max_position_embeddings=32,
            ).items()
        ),
        f"--config.data.seq_len={seq_len}",
        "--config.data.pack=true",
        "--config.data.window=64",
        "--config.batch_size=8",
        f"--config.num_train_steps={steps}",
        "--config.optimizer.warmup_steps=2",
        f"--config.log.eval_every_steps={steps}",
        "--config.log.every_steps=1",
        "--config.log.eval_batches=1",
        "--config.decode.num_beams=1",
        "--config.decode.examples=8",
        "--config.checkpoint.every_steps=0",
        "--config.log.progress=false",
        "--config.log.plot=false",
        "--config.log.tensorboard=false",
    ]
    with tfds.testing.mock_data(num_examples=64):
        assert launch.main(argv) == 0
        train = tfds_translation_pairs("wmt14_translate/de-en", "train")
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["step"] == steps
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == steps and np.isfinite(losses).all()

    tok = load_tokenizer(os.path.join(run, "tokenizer"))
    sides = [tok.tokenize_ids(list(side)) for side in zip(*train)]
    over = sum(max(len(s), len(t)) + 1 > seq_len for s, t in zip(*sides) if s and t)
    assert 0 < over < len(train)
    data = summary["data"]
    assert data["dropped_too_long"] == over and data["pairs"] == len(train) == 64
    assert data["kept"] + data["dropped_too_long"] + data["dropped_empty"] == 64
    assert 0.0 <= summary["eval_bleu"] <= 100.0 and "eval_exact_match" in summary


def test_seq2seq_task_reads_a_pair_store(tmp_path):
    """`data.source=store:DIR` (a `jaxformer prepare --pairs` store of JSONL pairs): the task
    holds the store's last pairs out (their texts are the references), counts the training
    pairs over `data.seq_len` as a count made here from the store does, and feeds packed
    rows of its ids."""
    from jaxformer.data.store import PairStore, prepare
    from jaxformer.tasks.seq2seq import Seq2SeqTask
    from jaxformer.training.config_lib import load_config_file

    rs = np.random.RandomState(0)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    lines = [
        {
            "source": " ".join(rs.choice(words, rs.randint(1, 12))),
            "target": " ".join(rs.choice(words, rs.randint(1, 12))),
        }
        for _ in range(50)
    ]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = str(tmp_path / "store")
    prepare(
        [str(src)],
        out,
        format="jsonl",
        pairs=True,
        tokenizer_family="roberta",
        vocab_size=300,
        workers=1,
        progress=False,
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    c = load_config_file(os.path.join(root, "configs", "transformer_tiny_numbers.py"))
    c.data.source, c.data.seq_len, c.data.pack, c.data.eval_fraction = f"store:{out}", 8, True, 0.1
    c.model.vocab_size, c.model.max_position_embeddings = 300, 32
    task = Seq2SeqTask(c, str(tmp_path / "run"))

    store = PairStore(out)
    train = [store[i] for i in range(45)]
    over = sum(max(len(s), len(t)) + 1 > 8 for s, t in train)
    assert 0 < over < 45
    assert task.data_stats["pairs"] == 45 and task.data_stats["dropped_too_long"] == over
    held = [(x["source"], x["target"]) for x in lines[45:]]
    fits = [p for p, ids in zip(held, [store[i] for i in range(45, 50)]) if max(map(len, ids)) < 8]
    assert task.eval_pairs == fits
    batch = next(task.train_iterator(4, 0, 1))
    assert batch["segment_ids"].shape == (4, 8) and batch["segment_ids"].max() >= 1
    kept_ids = {tuple(s) + (task.tokenizer.eos_id,) for s, t in train if max(len(s), len(t)) < 8}
    for r in range(4):
        for k in set(batch["segment_ids"][r]) - {0}:
            assert tuple(batch["input_ids"][r][batch["segment_ids"][r] == k]) in kept_ids
