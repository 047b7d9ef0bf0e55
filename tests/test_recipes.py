"""Recipe pieces: frozen encoders, the generated keyword task, fine-tuning losses."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxformer import EncoderModel, bert_config
from jaxformer.tasks import finetune as ft

V = 53


@pytest.fixture(scope="module")
def classifier():
    cfg = bert_config(
        "tiny",
        vocab_size=V,
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        head="sequence_classification",
        num_labels=2,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    model = EncoderModel(cfg)
    params = nn.unbox(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
    return model, params


class _Frozen:
    """Just what FineTuneTask.wrap_optimizer reads."""

    freeze_encoder = True
    wrap_optimizer = ft.FineTuneTask.wrap_optimizer

    def __init__(self, model):
        self.model = model

    def init_params(self, rng):
        return self.model.init(rng, jnp.zeros((1, 8), jnp.int32))["params"]


def test_frozen_encoder_changes_no_encoder_parameter_bit_for_bit(classifier):
    model, params = classifier
    # Weight decay would move a "frozen" weight even with zero gradients: the wrapped
    # optimizer must zero the whole update, decay included.
    tx = _Frozen(model).wrap_optimizer(optax.adamw(1e-2, weight_decay=0.1))
    opt = tx.init(params)
    x = np.random.RandomState(0).randint(5, V, (4, 8)).astype(np.int32)
    y = np.array([0, 1, 1, 0], np.int32)

    @jax.jit
    def step(p, o):
        def loss(p):
            out = model.apply({"params": p}, x)
            return ft.task_loss(model.cfg, out, {"label": y})[0]

        g = jax.grad(loss)(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o

    p = params
    for _ in range(3):
        p, opt = step(p, opt)
    assert ft.frozen_encoder_unchanged(params, p)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(params["classifier"]), jax.tree.leaves(p["classifier"]))
    ]
    assert all(changed)  # the head trains
    # The optimizer state can be laid out like the params (what sharded training needs).
    optax.tree_map_params(tx, lambda p: p, opt)


def test_unfrozen_optimizer_is_untouched():
    class T:
        freeze_encoder = False

    tx = optax.sgd(1.0)
    assert ft.FineTuneTask.wrap_optimizer(T(), tx) is tx


def test_merge_encoder_takes_pretrained_encoder_and_keeps_fresh_head(classifier):
    _, params = classifier
    pre = jax.tree.map(lambda a: np.asarray(a) + 1.0, params)
    merged = ft.merge_encoder(params, pre)
    for a, b in zip(jax.tree.leaves(merged["encoder"]), jax.tree.leaves(pre["encoder"])):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(merged["classifier"]), jax.tree.leaves(params["classifier"])):
        np.testing.assert_array_equal(a, b)
    bad = jax.tree.map(lambda a: a, pre)
    bad["encoder"]["pooler"]["bias"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"pooler.*shape \(7,\)"):
        ft.merge_encoder(params, bad)


def test_keyword_task_labels_follow_the_rule_and_are_balanced():
    docs = [
        "Alpha beta gamma delta epsilon. " * 3,
        "\n".join(
            f"Sentence number {i} mentions {'banana' if i % 3 else 'cherry'} and other words here."
            for i in range(300)
        ),
    ]
    examples, keywords = ft.keyword_task(docs, seed=0)
    labels = np.array([e["label"] for e in examples])
    assert abs(labels.mean() - 0.5) < 1e-9
    for e in examples:
        assert e["label"] == int(bool(set(ft.data._words(e["text"])) & set(keywords)))
    with pytest.raises(ValueError, match="usable sentences"):
        ft.keyword_task(["Too short."], seed=0)


def test_task_losses_match_numpy(classifier):
    model, params = classifier
    x = np.random.RandomState(1).randint(5, V, (3, 8)).astype(np.int32)
    out = model.apply({"params": params}, x)
    y = np.array([1, 0, 1])
    loss, m = ft.task_loss(model.cfg, out, {"label": y})
    lg = np.asarray(out.logits, np.float64)
    lse = np.log(np.exp(lg).sum(-1))
    np.testing.assert_allclose(loss, np.mean(lse - lg[np.arange(3), y]), rtol=1e-5)
    np.testing.assert_allclose(m["accuracy"], np.mean(lg.argmax(-1) == y))
    reg = model.cfg.replace(num_labels=1)

    class Out:
        logits = jnp.array([[0.5], [2.0]])

    mse, _ = ft.task_loss(reg, Out, {"label": np.array([1.0, 1.0])})
    np.testing.assert_allclose(mse, (0.25 + 1.0) / 2)


def test_token_and_qa_losses_match_numpy():
    from types import SimpleNamespace

    r = np.random.RandomState(2)
    logits = r.randn(2, 5, 3).astype(np.float32)
    labels = np.array([[-100, 1, 2, -100, 0], [-100, 0, -100, -100, -100]])
    weights = (labels != -100).astype(np.float32)
    cfg = bert_config("tiny", vocab_size=V, head="token_classification", num_labels=3)
    loss, m = ft.task_loss(
        cfg,
        SimpleNamespace(logits=jnp.asarray(logits)),
        {"labels": labels, "label_weights": weights},
    )
    lse = np.log(np.exp(logits.astype(np.float64)).sum(-1))
    keep = labels != -100
    ce = lse[keep] - logits[keep, labels[keep]]
    np.testing.assert_allclose(loss, ce.mean(), rtol=1e-5)  # -100 slots do not count
    np.testing.assert_allclose(m["accuracy"], np.mean(logits[keep].argmax(-1) == labels[keep]))

    start, end = r.randn(3, 6).astype(np.float32), r.randn(3, 6).astype(np.float32)
    sp, ep = np.array([1, 2, 5]), np.array([3, 2, 5])
    qa = cfg.replace(head="question_answering")
    loss, m = ft.task_loss(
        qa,
        SimpleNamespace(start_logits=jnp.asarray(start), end_logits=jnp.asarray(end)),
        {"start_positions": sp, "end_positions": ep},
    )

    def nll(x, y):
        x = x.astype(np.float64)
        return np.mean(np.log(np.exp(x).sum(-1)) - x[np.arange(len(y)), y])

    np.testing.assert_allclose(loss, (nll(start, sp) + nll(end, ep)) / 2, rtol=1e-5)
    both = (start.argmax(-1) == sp) & (end.argmax(-1) == ep)
    np.testing.assert_allclose(m["span_accuracy"], both.mean())


def test_merge_encoder_drops_unused_pretrained_parts_and_names_missing_ones():
    from jaxformer.tasks.finetune import merge_encoder

    fresh = {
        "encoder": {"layer": {"kernel": np.zeros((2, 3), np.float32)}},
        "qa": {"kernel": np.ones(3, np.float32)},
    }
    pre = {
        "encoder": {
            "layer": {"kernel": np.full((2, 3), 7.0, np.float32)},
            "pooler": {"kernel": np.ones((3, 3), np.float32)},
        }
    }
    out = merge_encoder(fresh, pre)
    np.testing.assert_array_equal(out["encoder"]["layer"]["kernel"], 7.0)
    assert "pooler" not in out["encoder"] and out["qa"] is fresh["qa"]
    with pytest.raises(ValueError, match=r"no parameter \['layer'\]\['kernel'\]"):
        merge_encoder(fresh, {"encoder": {"layer": {}}})
    with pytest.raises(ValueError, match=r"has shape \(3, 3\), the model expects \(2, 3\)"):
        merge_encoder(fresh, {"encoder": {"layer": {"kernel": np.ones((3, 3), np.float32)}}})
