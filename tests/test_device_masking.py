"""MLM masking on the device (`jaxformer.objectives.masking`) against the host masker's
statistics over >= 100k tokens, whole words, packed rows, keys and shapes; the host rows it
consumes; and training with data.masking="device" (loss falls, accumulation exact, ELECTRA)."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.data import corpus, create_instances, pretraining_dataset
from jaxformer.data.masking import Masker, MaskingConfig
from jaxformer.data.pretraining import PretrainingConfig
from jaxformer.data.tokenizers import train_tokenizer
from jaxformer.objectives.masking import _non_special, device_mask
import training_tiny_config as tiny

HERE = os.path.dirname(__file__)
SEQ = 128


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A bert and a roberta tokenizer, 800 rows x 128 of real text each (102k tokens), with
    a random length per row (padding at the end), and the documents."""
    docs = corpus.default_corpus(cache_dir=str(tmp_path_factory.mktemp("cache")))
    toks = {f: train_tokenizer(docs[:150], f, vocab_size=3000) for f in ("bert", "roberta")}
    rows = {}
    rng = np.random.default_rng(0)
    for f, tok in toks.items():
        stream = [i for ids in tok.tokenize_ids(docs[150:400]) for i in ids]
        ids = np.full((800, SEQ), tok.pad_id, np.int32)
        for r, k in enumerate(range(0, 800 * (SEQ - 2), SEQ - 2)):
            n = SEQ - 2 if r % 4 else int(rng.integers(8, SEQ - 2))  # a quarter padded
            row = tok.build_inputs(stream[k : k + n])[0]
            ids[r, : len(row)] = row
        rows[f] = ids
    return toks, rows, docs


def _mask(tok, ids, key, cfg, starts=None, attention=None, slots=None):
    fn = jax.jit(
        lambda k, i, a, w: device_mask(
            k,
            i,
            special_ids=tok.special_ids,
            mask_id=tok.mask_id,
            vocab_size=tok.vocab_size,
            config=cfg,
            attention_mask=a,
            word_starts=w,
            max_predictions=slots,
        )
    )
    if attention is None:
        attention = (ids != tok.pad_id).astype(np.int32)
    return jax.tree.map(np.asarray, fn(key, ids, attention, starts))


def _check_gathered_form(out, ids, tok, P):
    """Sorted positions, weights 1 then 0, unused slots zero, ids the originals, nothing
    touched outside the positions, no special or padding picked; returns picked [B, L]."""
    pos, mids, w = out["mlm_positions"], out["mlm_ids"], out["mlm_weights"]
    assert pos.shape == mids.shape == w.shape == (len(ids), P)
    assert pos.dtype == mids.dtype == np.int32 and w.dtype == np.float32
    n = w.sum(1).astype(int)
    assert np.all(n <= P)
    picked = np.zeros(ids.shape, bool)
    for b in range(len(ids)):
        k = n[b]
        assert np.all(w[b, :k] == 1) and np.all(w[b, k:] == 0)
        assert np.all(pos[b, k:] == 0) and np.all(mids[b, k:] == 0)
        assert np.all(np.diff(pos[b, :k]) > 0)
        np.testing.assert_array_equal(mids[b, :k], ids[b, pos[b, :k]])
        picked[b, pos[b, :k]] = True
    assert not np.any(picked & np.isin(ids, tok.special_ids))  # pad is a special too
    assert np.array_equal(out["input_ids"][~picked], ids[~picked])
    return picked


def test_rate_split_and_specials_over_100k_tokens(setup):
    toks, rows, _ = setup
    tok, ids = toks["bert"], rows["bert"]
    assert ids.size >= 100_000
    cfg = MaskingConfig(max_predictions=20)  # 0.15 * 126 = 18.9: the cap never binds
    out = _mask(tok, ids, jax.random.key(0), cfg)
    picked = _check_gathered_form(out, ids, tok, 20)
    maskable = ~np.isin(ids, tok.special_ids)
    # The count per row is p * c rounded stochastically: its only noise is one Bernoulli per
    # row, so the total is within 4 * sqrt(rows / 4) of p * candidates.
    c = maskable.sum(1)
    tol = 4 * np.sqrt(len(ids) * 0.25)
    assert abs(picked.sum() - 0.15 * c.sum()) < tol
    assert np.all(np.abs(picked.sum(1) - 0.15 * c) < 1)  # floor or ceil, per row
    # The host masker on the same rows, the same rule.
    masker = Masker(tok, cfg)
    rng = np.random.default_rng(0)
    host = sum(int(masker(r, rng)["mlm_weights"].sum()) for r in ids)
    assert abs(host - 0.15 * c.sum()) < tol

    new, old = out["input_ids"][picked], ids[picked]
    is_mask = new == tok.mask_id
    same = new == old
    rand = ~is_mask & ~same
    v = tok.vocab_size - len(tok.special_ids)
    want = np.array([0.8, 0.1 + 0.1 / v, 0.1 - 0.1 / v])  # a random draw can hit the original
    got = np.array([is_mask.sum(), same.sum(), rand.sum()]) / picked.sum()
    std = np.sqrt(want * (1 - want) / picked.sum())
    assert np.all(np.abs(got - want) < 4 * std), (got, want, std)
    assert not np.any(np.isin(new[rand], tok.special_ids))
    assert new[rand].min() >= 0 and new[rand].max() < tok.vocab_size


def test_random_ids_cover_exactly_the_non_special_vocabulary():
    specials = np.array([0, 1, 7, 8, 20, 39])
    got = np.asarray(_non_special(jnp.arange(40 - len(specials)), specials))
    np.testing.assert_array_equal(got, np.setdiff1d(np.arange(40), specials))


def test_count_never_above_the_slots(setup):
    toks, rows, _ = setup
    tok, ids = toks["bert"], rows["bert"][:200]
    out = _mask(tok, ids, jax.random.key(1), MaskingConfig(max_predictions=20), slots=12)
    picked = _check_gathered_form(out, ids, tok, 12)
    c = (~np.isin(ids, tok.special_ids)).sum(1)
    full = 0.15 * c >= 12
    assert full.sum() > 50 and np.all(picked.sum(1)[full] == 12)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_whole_words_kept_whole(setup, family):
    toks, rows, _ = setup
    tok, ids = toks[family], rows[family][:400]
    cfg = MaskingConfig(whole_word=True, max_predictions=20)
    starts = tok.word_starts(ids)
    out = _mask(tok, ids, jax.random.key(2), cfg, starts=starts)
    picked = _check_gathered_form(out, ids, tok, 20)
    maskable = ~np.isin(ids, tok.special_ids)
    multi = 0
    for b in range(len(ids)):
        words = np.cumsum(starts[b])
        free = np.inf
        for w in np.unique(words[maskable[b]]):
            in_word = picked[b, words == w]
            assert in_word.all() or not in_word.any(), (b, w)
            multi += in_word.all() and in_word.size > 1
            if not in_word.any():
                free = min(free, in_word.size)
        # The greedy ran to the end: every word left out is larger than the room left.
        assert picked[b].sum() + free > np.floor(0.15 * maskable[b].sum())
    assert multi > 50  # the property was exercised
    rate = picked.sum() / maskable.sum()
    masker = Masker(tok, cfg)
    rng = np.random.default_rng(2)
    host = sum(int(masker(r, rng)["mlm_weights"].sum()) for r in ids) / maskable.sum()
    assert 0.13 < rate <= 0.155 and abs(rate - host) < 0.005, (rate, host)


def test_device_rows_ship_ids_only_and_packed_specials_stay(setup):
    toks, _, docs = setup
    tok = toks["bert"]
    cfg = PretrainingConfig(  # many short instances, so rows pack several
        max_seq_len=SEQ, objective="nsp", short_seq_prob=0.8, masking=MaskingConfig(whole_word=True)
    )
    insts, _ = create_instances(docs[150:260], tok, cfg, seed=0)
    plain = pretraining_dataset(insts, tok, cfg, masking="device", seed=0)
    x = plain[0]
    assert set(x) == {"input_ids", "token_type_ids", "attention_mask", "pair_label", "word_starts"}
    assert x["word_starts"].dtype == bool and x["word_starts"].shape == (SEQ,)
    no_ww = PretrainingConfig(max_seq_len=SEQ, objective="nsp")
    assert "word_starts" not in pretraining_dataset(insts, tok, no_ww, masking="device")[0]

    packed = pretraining_dataset(insts, tok, cfg, masking="device", seed=0, pack=True)
    batch = [packed[i] for i in range(min(len(packed), 64))]
    assert not any(k.startswith("mlm_") for k in batch[0])
    assert {"segment_ids", "position_ids", "pair_label", "cls_positions"} <= set(batch[0])
    stack = {k: np.stack([b[k] for b in batch]) for k in batch[0]}
    assert (stack["segment_ids"].max(1) > 1).sum() >= 16  # rows do hold several examples
    ids = stack["input_ids"]
    slots = 28
    out = _mask(
        tok,
        ids,
        jax.random.key(3),
        cfg.masking,
        starts=stack["word_starts"],
        attention=stack["attention_mask"],
        slots=slots,
    )
    picked = _check_gathered_form(out, ids, tok, slots)
    for b in range(len(ids)):  # each segment's [CLS] and [SEP]s are never picked
        seg = stack["segment_ids"][b]
        for s in range(1, seg.max() + 1):
            span = np.flatnonzero(seg == s)
            assert ids[b, span[0]] == tok.cls_id and not picked[b, span[0]]
            seps = span[ids[b, span] == tok.sep_id]
            assert len(seps) == 2 and not picked[b, seps].any()
    maskable = ~np.isin(ids, tok.special_ids)
    assert abs(picked.sum() / maskable.sum() - 0.15) < 0.02


def test_same_key_same_masks_other_key_other_masks(setup):
    toks, rows, _ = setup
    tok, ids = toks["bert"], rows["bert"][:64]
    cfg = MaskingConfig()
    step_key = jax.random.key(5)
    a, b, c = (
        _mask(tok, ids, jax.random.fold_in(step_key, s), cfg)["mlm_positions"] for s in (1, 1, 2)
    )
    np.testing.assert_array_equal(a, b)
    assert sum(np.array_equal(x, y) for x, y in zip(a, c)) < 3


def test_shapes_under_jit_and_unknown_input():
    cfg = MaskingConfig(max_predictions=6)

    def f(key, ids):
        return device_mask(
            key, ids, special_ids=[0, 1, 2, 3, 4], mask_id=4, vocab_size=50, config=cfg
        )

    shapes = jax.eval_shape(f, jax.random.key(0), jax.ShapeDtypeStruct((3, 10), jnp.int32))
    assert shapes["input_ids"].shape == (3, 10) and shapes["mlm_positions"].shape == (3, 6)
    # More slots than tokens: the extra slots stay empty.
    ids = jnp.arange(5, 9)[None].repeat(2, 0)
    out = device_mask(
        jax.random.key(0),
        ids,
        special_ids=[0, 4],
        mask_id=4,
        vocab_size=9,
        config=cfg,
        max_predictions=6,
    )
    assert out["mlm_positions"].shape == (2, 6) and float(out["mlm_weights"].sum()) <= 2
    with pytest.raises(ValueError, match="mask_id"):
        device_mask(jax.random.key(0), ids, special_ids=[0], mask_id=4, vocab_size=9, config=cfg)


_SHARDED = """
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxformer.data.masking import MaskingConfig
from jaxformer.objectives.masking import device_mask

rng = np.random.default_rng(0)
ids = rng.integers(5, 300, (16, 64)).astype(np.int32)
ids[:, 0], ids[:, -8:] = 2, 0
starts = rng.random((16, 64)) < 0.6
sh = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
for whole in (False, True):
    cfg = MaskingConfig(max_predictions=12, whole_word=whole)

    def f(k, i, w):
        w = w if whole else None
        kw = dict(special_ids=np.arange(5), mask_id=4, vocab_size=300, config=cfg)
        return device_mask(k, i, word_starts=w, **kw)

    ref = jax.jit(f)(jax.random.key(0), ids, starts)
    g = jax.jit(f, in_shardings=(None, sh, sh), out_shardings=sh)
    args = (jax.random.key(0), jax.device_put(ids, sh), jax.device_put(starts, sh))
    hlo = g.lower(*args).compile().as_text()
    out = g(*args)
    assert all(np.array_equal(ref[k], out[k]) for k in ref), whole
    assert "all-gather" not in hlo and "all-to-all" not in hlo, whole
print("ok")
"""


@pytest.mark.slow
def test_sharded_batch_gives_the_same_masks_without_gathering_it():
    """On 4 fake devices with the batch sharded: the masks equal one device's, and the
    compiled step moves no rows between devices (no all-gather / all-to-all)."""
    import subprocess
    import sys

    root = os.path.dirname(HERE)
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    out = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


# -- training ---------------------------------------------------------------------------
def tiny_config(**over):
    return tiny.tiny_config(**{"data.masking": "device", **over})


def test_unknown_masking_is_a_clear_error():
    from jaxformer.tasks import get_task

    with pytest.raises(ValueError, match="unknown data.masking 'gpu'"):
        get_task(tiny_config(**{"data.masking": "gpu"}), "/tmp/unused")


def test_hook_masks_train_batches_and_passes_eval_batches(tmp_path):
    from jaxformer.tasks import get_task

    task = get_task(tiny_config(), str(tmp_path))
    train = next(task.train_iterator(8, 0, 1))
    assert set(train) == {"input_ids", "attention_mask", "token_type_ids"}
    out = jax.jit(task.device_batch)(train, jax.random.key(0))
    assert out["mlm_positions"].shape == (8, 4) and float(out["mlm_weights"].sum()) > 0
    evals = task.eval_batches(8, 0, 1)
    assert "mlm_positions" in evals[0]
    assert task.device_batch(evals[0], jax.random.key(0)) is evals[0]


@pytest.mark.slow
def test_tiny_run_with_device_masking_trains(tmp_path):
    """Synthetic sequences over 11 ids: the loss starts near ln(11) and falls below it, so
    the model learns from the masks the step draws; eval runs on host-masked batches."""
    from jaxformer.tasks import get_task
    from jaxformer.training.loop import train

    over = {
        "model.vocab_size": 16,
        "optimizer.lr": 1e-2,
        "log.eval_every_steps": 30,
        "log.tensorboard": False,
        "checkpoint.every_steps": 60,
    }
    train(
        tiny_config(num_train_steps=60, batch_size=32, **over), str(tmp_path), get_task, log=print
    )
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 60
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < first - 0.2 and last < np.log(11) - 0.05, (first, last)
    assert sum("eval_loss" in r for r in rows) == 2  # host-masked eval next to device masks


def _compiled(task, mesh, tx, sched, shardings, batch, accum):
    """The compiled step as `run(state, steps) -> (state, [metrics])` on this batch."""
    from jaxformer.training import sharding as sh, step as step_lib

    fn, bsh = step_lib.compile_train_step(
        step_lib.make_train_step(task, tx, sched, accum), shardings, batch, mesh
    )

    def run(state, steps=1):
        s = jax.tree.map(jnp.copy, state)  # the step donates its input
        out = []
        for _ in range(steps):
            s, m = fn(s, sh.to_global(batch, bsh, len(batch["input_ids"])))
            out.append(jax.device_get(m))
        return s, out

    return run


def test_grad_accumulation_with_device_masking_equals_one_big_step():
    """Masks are drawn on the whole batch before the split: 4 micro-batches of 8 == one
    step on 32 (dropout off). The same state and step draw the same masks; the next step
    draws others."""
    config = tiny_config(
        batch_size=32, **{"model.hidden_dropout": 0.0, "model.attention_dropout": 0.0}
    )
    task, mesh, tx, sched, state, shardings = tiny.step_setup(config)
    batch = next(task.train_iterator(32, 0, 1))
    one = _compiled(task, mesh, tx, sched, shardings, batch, 1)
    s1, m1 = one(state, 2)
    s4, m4 = _compiled(task, mesh, tx, sched, shardings, batch, 4)(state, 2)
    for a, b in zip(m1, m4):
        for k in ("loss", "mlm_accuracy", "grad_norm"):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, err_msg=k)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), s4.params, s1.params
    )
    _, again = one(state)
    assert again[0]["loss"] == m1[0]["loss"]  # same state and step: same masks (resume)
    # The same params at the next step number draw other masks, so another loss.
    _, later = one(state.replace(step=state.step + 1))
    assert later[0]["loss"] != m1[0]["loss"]


def test_electra_step_with_device_masking():
    import ml_collections

    config = tiny_config(task="electra")
    config.model.head = "rtd"
    config.electra = ml_collections.ConfigDict({"generator_fraction": 0.5, "rtd_weight": 50.0})
    task, mesh, tx, sched, state, shardings = tiny.step_setup(config)
    batch = next(task.train_iterator(8, 0, 1))
    assert "mlm_positions" not in batch
    _, m = _compiled(task, mesh, tx, sched, shardings, batch, 2)(state, 3)
    assert all(np.isfinite(x["loss"]) for x in m)
    assert all(0 < x["replaced_fraction"] < 0.3 for x in m)  # masked positions were corrupted
    assert m[-1]["loss"] < m[0]["loss"]


@pytest.mark.slow
def test_bert_nsp_whole_word_recipe_with_device_masking(setup, tmp_path):
    """The BERT recipe (WordPiece, MLM + NSP) with whole-word device masking, through the
    loop: rows carry ids, pair_label and word_starts; eval batches stay host-masked."""
    from jaxformer.training import loop
    from jaxformer.training.config_lib import load_config_file
    from jaxformer.tasks import get_task

    _, _, docs = setup
    corpus_file = tmp_path / "docs.txt"
    # One document per module: a blank line inside one would split it into paragraphs.
    keep = [d for d in docs if 500 < len(d) < 4000][:60]  # several sentences each
    text = "\n\n".join(re.sub(r"\n\s*\n", "\n", d.strip()) for d in keep)
    corpus_file.write_text(text, encoding="utf-8")
    c = load_config_file(os.path.join(os.path.dirname(HERE), "configs/bert_tiny_pretrain.py"))
    over = {
        "data.source": f"text:{corpus_file}",
        "data.masking": "device",
        "data.whole_word": True,
        "data.eval_fraction": 0.1,
        "model.vocab_size": 1024,
        "num_train_steps": 6,
        "checkpoint.every_steps": 6,
        "log.eval_every_steps": 6,
        "log.every_steps": 2,
        "log.progress": False,
        "log.tensorboard": False,
        "log.plot": False,
    }
    tiny.set_keys(c, over)
    wd = str(tmp_path / "run")
    loop.train(c, wd, get_task, log=lambda _: None)
    rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6]
    assert all(np.isfinite(r["loss"]) and "pair_loss" in r for r in rows if "loss" in r)
    assert any(np.isfinite(r.get("eval_loss", np.nan)) for r in rows)
    task = get_task(c, wd)
    batch = next(task.train_iterator(8, 0, 1))
    keys = {"input_ids", "attention_mask", "token_type_ids", "pair_label", "word_starts"}
    assert set(batch) == keys
    out = jax.jit(task.device_batch)(batch, jax.random.key(0))
    starts, picked = batch["word_starts"], np.zeros(batch["input_ids"].shape, bool)
    for b, (pos, w) in enumerate(
        zip(np.asarray(out["mlm_positions"]), np.asarray(out["mlm_weights"]))
    ):
        picked[b, pos[w > 0]] = True
    words = np.cumsum(starts, axis=1)
    for b in range(len(picked)):  # whole words through the task's own word starts
        for w in np.unique(words[b][picked[b]]):
            assert picked[b, words[b] == w].all()
