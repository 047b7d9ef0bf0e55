"""`data.pack`: packed rows through PretrainTask (loss equal to the unpacked rows), a tiny
packed training run, and the one-line error for objectives packed rows cannot train."""

import json
import os
import re

import jax
import numpy as np
import pytest

from jaxformer.data import corpus
from data_builders import plain_and_packed
from training_tiny_config import set_keys
from jaxformer.data.tokenizers import train_tokenizer
from jaxformer.models import bert_config, modernbert_config, roberta_config
from jaxformer.training.defaults import base_config
from jaxformer.tasks import get_task

SEQ = 64


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    docs = corpus.default_corpus(cache_dir=str(tmp_path_factory.mktemp("cache")))
    return docs, train_tokenizer(docs[:120], "bert", vocab_size=1024)


def _model(family: str, vocab: int) -> dict:
    small = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        dtype="float32",
    )
    if family == "modernbert":
        return modernbert_config("tiny", head="mlm", max_position_embeddings=SEQ, **small).to_dict()
    make = roberta_config if family == "roberta" else bert_config
    extra = {"pad_token_id": 0} if family == "roberta" else {}  # the bert tokenizer's pad
    return make(
        "tiny", head="mlm", max_position_embeddings=SEQ + (2 if extra else 0), **small, **extra
    ).to_dict()


@pytest.mark.parametrize("family", ["bert", "roberta", "modernbert"])
def test_packed_rows_give_the_unpacked_mlm_loss_sum(real, family, tmp_path):
    """The same statically masked instances, one per row or packed several per row: the
    task's MLM loss summed over every prediction is the same (segments attend only within
    themselves and positions restart per segment, with RoBERTa's offset)."""
    docs, tok = real
    u, p = plain_and_packed(docs, tok, SEQ)
    assert len(p["input_ids"]) < len(u["input_ids"])
    assert p["segment_ids"].max() > 1
    assert u["mlm_weights"].sum() == p["mlm_weights"].sum() > 0

    c = base_config(_model(family, tok.vocab_size))
    c.data.seq_len = SEQ
    task = get_task(c, str(tmp_path))
    # Weights well above init scale, so the outputs lean on context (the check below).
    params = jax.tree.map(lambda x: 4 * x, task.init_params(jax.random.key(0)))

    def loss_sum(batch):
        loss, metrics = jax.jit(task.loss_fn, static_argnums=4)(
            params, batch, jax.random.key(1), {"mlm": 1.0}, True
        )
        return float(loss)

    want, got = loss_sum(u), loss_sum(p)
    assert np.isfinite(want) and want > 0
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # Without the segments the packed row attends across examples: a loss off by well over
    # the tolerance above (10x), so the equality does test the segment mask.
    mixed = {k: v for k, v in p.items() if k not in ("segment_ids", "position_ids")}
    assert abs(loss_sum(mixed) - want) > 1e-4 * want, (got, want)


def test_electra_generator_sees_the_segments(real, tmp_path):
    """ELECTRA on packed rows: the generator's MLM loss sum equals the unpacked one (the
    discriminator's input is sampled, so only its finiteness is compared)."""
    import ml_collections

    docs, tok = real
    u, p = plain_and_packed(docs, tok, SEQ)
    model = _model("bert", tok.vocab_size)
    model["head"] = "rtd"
    c = base_config(model, task="electra")
    c.data.seq_len = SEQ
    c.electra = ml_collections.ConfigDict({"generator_fraction": 0.5, "rtd_weight": 50.0})
    task = get_task(c, str(tmp_path))
    params = jax.tree.map(lambda x: 4 * x, task.init_params(jax.random.key(0)))
    fn = jax.jit(task.loss_fn, static_argnums=4)
    norms = {"mlm": 1.0, "rtd": 1.0}
    (lu, mu), (lp, mp) = (fn(params, b, jax.random.key(1), norms, True) for b in (u, p))
    assert np.isfinite(float(lu)) and np.isfinite(float(lp))
    np.testing.assert_allclose(float(mp["mlm_loss"]), float(mu["mlm_loss"]), rtol=1e-5)
    mixed = {k: v for k, v in p.items() if k != "segment_ids"}
    off = float(fn(params, mixed, jax.random.key(1), norms, True)[1]["mlm_loss"])
    assert abs(off - float(mu["mlm_loss"])) > 1e-4 * float(mu["mlm_loss"])


def _text_source(docs, tmp_path) -> str:
    keep = [d for d in docs if 300 < len(d) < 3000][:60]
    path = tmp_path / "docs.txt"
    path.write_text("\n\n".join(re.sub(r"\n\s*\n", "\n", d.strip()) for d in keep), "utf-8")
    return f"text:{path}"


@pytest.mark.slow
@pytest.mark.parametrize("masking", ["dynamic", "device"])
def test_tiny_packed_run_trains_and_evaluates(real, masking, tmp_path, monkeypatch):
    """train.py's loop on packed rows of a text source: finite, falling loss and eval
    metrics; train and eval rows really hold several segments."""
    from jaxformer.training import loop

    docs, _ = real
    monkeypatch.setenv("JAXFORMER_CACHE", str(tmp_path / "cache"))
    c = base_config(_model("bert", 512))
    over = {
        "data.source": _text_source(docs, tmp_path),
        "data.pack": True,
        "data.masking": masking,
        "data.seq_len": SEQ,
        "data.max_predictions": 10,
        "data.eval_fraction": 0.1,
        "batch_size": 8,
        "num_train_steps": 30,
        "optimizer.lr": 3e-3,
        "optimizer.warmup_steps": 3,
        "checkpoint.every_steps": 30,
        "checkpoint.best_metric": "",
        "log.every_steps": 1,
        "log.eval_every_steps": 15,
        "log.eval_batches": 2,
        "log.progress": False,
        "log.tensorboard": False,
        "log.plot": False,
    }
    set_keys(c, over)
    wd = tmp_path / "run"
    loop.train(c, str(wd), get_task, log=lambda _: None)
    rows = [json.loads(line) for line in open(wd / "metrics.jsonl")]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 30 and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    print(f"packed rows, {masking} masking: loss {first:.3f} -> {last:.3f} (first/last 5 steps)")
    assert last < first - 0.3, (first, last)
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    assert len(evals) == 2 and all(np.isfinite(evals))

    task = get_task(c, str(wd))
    it = task.train_iterator(8, 0, 1)
    batch = next(it)
    it.close()
    assert batch["segment_ids"].max() > 1
    assert ("mlm_positions" in batch) == (masking != "device")
    ev = task.eval_batches(8, 0, 1)[0]
    assert ev["segment_ids"].max() > 1 and "mlm_positions" in ev  # packed, host-masked
    assert os.path.exists(wd / "tokenizer" / "tokenizer.json")


@pytest.mark.parametrize("objective", ["nsp", "sop"])
def test_pack_with_a_pair_objective_is_a_one_line_error(objective, tmp_path):
    from jaxformer.recipes import configs as recipes

    c = recipes.bert_pretrain("tiny")
    c.data.objective, c.data.pack = objective, True
    with pytest.raises(ValueError, match=r"^data.pack=true supports objective='none' only; ") as e:
        get_task(c, str(tmp_path))
    assert "\n" not in str(e.value)
    c = base_config(_model("bert", 128))
    c.data.source, c.data.pack = "synthetic", True
    with pytest.raises(ValueError, match="data.source='synthetic' rows are not packed"):
        get_task(c, str(tmp_path))
