"""Pretraining objectives: hand/numpy references and ELECTRA's sampling properties."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import EncoderModel, bert_config, electra_config
from jaxformer.objectives import pretraining as obj

V = 61


def np_ce(logits, targets):
    logits = np.asarray(logits, np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]


def masked_batch(b=3, t=12, p=4, seed=0):
    r = np.random.RandomState(seed)
    ids = r.randint(5, V, (b, t)).astype(np.int32)
    ids[:, 0] = 1  # [CLS]-like, never masked
    pos = np.stack([np.sort(r.choice(np.arange(1, t - 2), p, replace=False)) for _ in range(b)])
    w = np.ones((b, p), np.float32)
    w[0, -1] = 0.0  # one padding prediction slot
    pos[0, -1] = 0
    orig = np.take_along_axis(ids, pos, 1).copy()
    masked = ids.copy()
    rows = np.arange(b)[:, None]
    masked[rows, pos] = np.where(w > 0, 3, ids[rows, pos])  # 3 = [MASK]
    am = np.ones((b, t), np.int32)
    am[1, -2:] = 0
    return dict(
        input_ids=masked,
        attention_mask=am,
        token_type_ids=np.zeros_like(ids),
        mlm_positions=pos.astype(np.int32),
        mlm_ids=orig.astype(np.int32),
        mlm_weights=w,
        pair_label=np.array([0, 1, 1], np.int32),
    ), ids


def test_mlm_and_pair_losses_match_numpy():
    cfg = bert_config(
        "tiny", vocab_size=V, head="pretraining", hidden_size=32, num_heads=2, intermediate_size=64
    )
    model = EncoderModel(cfg)
    batch, _ = masked_batch()
    params = nn.unbox(model.init(jax.random.key(0), jnp.asarray(batch["input_ids"]))["params"])
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        attention_mask=batch["attention_mask"],
        mlm_positions=batch["mlm_positions"],
    )
    loss, m = obj.mlm_pair_loss(out, batch)
    ce = np_ce(out.mlm_logits, batch["mlm_ids"])
    w = batch["mlm_weights"]
    mlm_ref = (ce * w).sum() / w.sum()  # the padding slot does not count
    pair_ref = np_ce(out.pair_logits, batch["pair_label"]).mean()
    np.testing.assert_allclose(m["mlm_loss"], mlm_ref, rtol=1e-5)
    np.testing.assert_allclose(m["pair_loss"], pair_ref, rtol=1e-5)
    np.testing.assert_allclose(loss, mlm_ref + pair_ref, rtol=1e-5)


@pytest.fixture(scope="module")
def electra():
    gen = EncoderModel(electra_config("tiny", generator=True, vocab_size=V, head="mlm"))
    disc = EncoderModel(electra_config("tiny", vocab_size=V, head="rtd"))
    x = jnp.zeros((1, 12), jnp.int32)
    params = {
        "generator": nn.unbox(gen.init(jax.random.key(0), x)["params"]),
        "discriminator": nn.unbox(disc.init(jax.random.key(1), x)["params"]),
    }
    return gen, disc, params


def test_electra_samples_replace_exactly_the_masked_positions(electra):
    gen, _, params = electra
    batch, original = masked_batch()
    gen_params = obj.share_embeddings(params["generator"], params["discriminator"])
    for seed in range(3):
        logits = gen.apply(
            {"params": gen_params}, batch["input_ids"], mlm_positions=batch["mlm_positions"]
        ).mlm_logits
        corrupted, labels = obj.corrupt(logits, batch, jax.random.key(seed))
        corrupted, labels = np.asarray(corrupted), np.asarray(labels)
        chosen = np.zeros_like(original, bool)
        rows = np.arange(3)[:, None]
        chosen[rows, batch["mlm_positions"]] = batch["mlm_weights"] > 0
        chosen[0, 0] = False  # the padding slot points at position 0 with weight 0
        # Outside the masked positions the input is untouched (not even the [MASK] id).
        np.testing.assert_array_equal(corrupted[~chosen], batch["input_ids"][~chosen])
        assert not (corrupted[chosen] == 3).any() or (original[chosen] == 3).any()
        # "Replaced" exactly where the sample differs from the original token.
        np.testing.assert_array_equal(labels, (corrupted != original).astype(int))
        assert labels[~chosen].sum() == 0


def test_electra_discriminator_loss_sends_no_gradient_into_the_generator(electra):
    gen, disc, params = electra
    batch, _ = masked_batch()
    rng = jax.random.key(0)

    def rtd_only(p):
        _, m = obj.electra_loss(gen, disc, p, batch, rng, rtd_weight=50.0)
        return m["rtd_loss"]

    def mlm_only(p):
        _, m = obj.electra_loss(gen, disc, p, batch, rng)
        return m["mlm_loss"]

    g = jax.grad(rtd_only)(params)
    gen_grads = {k: v for k, v in g["generator"]["encoder"].items() if k != "embeddings"}
    gen_grads["mlm"] = g["generator"]["mlm"]
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(gen_grads))
    # ...while the discriminator and the generator's own MLM loss do produce gradients.
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g["discriminator"])) > 0
    g2 = jax.grad(mlm_only)(params)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(g2["generator"]["mlm"])) > 0


def test_electra_total_is_mlm_plus_lambda_rtd(electra):
    gen, disc, params = electra
    batch, _ = masked_batch()
    loss, m = obj.electra_loss(gen, disc, params, batch, jax.random.key(3), rtd_weight=50.0)
    np.testing.assert_allclose(loss, m["mlm_loss"] + 50.0 * m["rtd_loss"], rtol=1e-6)
    assert 0.0 <= float(m["rtd_precision"]) <= 1.0 and 0.0 <= float(m["rtd_recall"]) <= 1.0


def test_shared_embeddings_are_the_discriminators(electra):
    _, _, params = electra
    shared = obj.share_embeddings(params["generator"], params["discriminator"])
    assert shared["encoder"]["embeddings"] is params["discriminator"]["encoder"]["embeddings"]
    assert "mlm" in shared and "embed_proj" in shared["encoder"]


def test_top1_correct_equals_argmax_without_ties():
    from jaxformer.objectives.losses import top1_correct

    rng = np.random.RandomState(0)
    logits = rng.randn(4, 7, 50).astype(np.float32)
    targets = rng.randint(0, 50, (4, 7))
    targets[0, :3] = logits[0, :3].argmax(-1)  # some hits for sure
    want = (logits.argmax(-1) == targets).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(top1_correct(logits, targets)), want)
    # An exact tie for the maximum counts as correct (argmax would pick the first index).
    tied = np.zeros((1, 3), np.float32)
    assert float(top1_correct(tied, np.array([2]))[0]) == 1.0


def test_one_label_smoothed_cross_entropy():
    from jaxformer.objectives import losses, seq2seq

    logits = jax.random.normal(jax.random.key(3), (2, 5, 11)) * 2
    labels = jnp.array([[1, 2, 3, -100, 0], [4, 5, 6, 7, 10]])
    for eps in (0.0, 0.1, 1.0):
        want = losses.cross_entropy_with_logits(logits, jnp.maximum(labels, 0), eps)[0]
        got = seq2seq.smoothed_cross_entropy(logits, labels, eps)
        np.testing.assert_array_equal(got, want)
        assert np.isfinite(np.asarray(got)).all()
    # eps = 1 puts 1/(V-1) on every non-label token: a hand-computed float64 case.
    lp = np.asarray(jax.nn.log_softmax(logits), np.float64)
    q = (1 - np.eye(11)[np.maximum(np.asarray(labels), 0)]) / 10
    ref = -(q * lp).sum(-1) + (q * np.log(np.where(q > 0, q, 1))).sum(-1)
    np.testing.assert_allclose(seq2seq.smoothed_cross_entropy(logits, labels, 1.0), ref, atol=1e-5)
