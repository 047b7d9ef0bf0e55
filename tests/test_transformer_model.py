"""The encoder-decoder Transformer: config, parameter layout, masks, cache, objective."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.models.configs import ConfigError
from jaxformer.models.seq2seq_configs import OLD_NAMES
from jaxformer.models.transformer import (
    TRANSFORMER_SIZES,
    Transformer,
    TransformerConfig,
    transformer_config,
)
from jaxformer.objectives import seq2seq as obj

V = 40


def _batch(seed=0, b=3, s=7, t=6):
    rs = np.random.RandomState(seed)
    x = rs.randint(3, V, (b, s))
    mask = np.ones_like(x)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    x[mask == 0] = 0
    y = rs.randint(3, V, (b, t))
    return jnp.array(x), jnp.array(mask), jnp.array(y)


@pytest.fixture(scope="module")
def post_ln():
    cfg = transformer_config(
        "nano", vocab_size=V, max_position_embeddings=16, num_encoder_layers=2, num_decoder_layers=2
    )
    model = Transformer(cfg)
    x, m, y = _batch()
    variables = model.init(jax.random.key(0), x, m, y)
    return model, variables


def test_named_sizes_match_the_paper():
    base, big = transformer_config("base"), transformer_config("big")
    shape = lambda c: (c.num_encoder_layers, c.hidden_size, c.intermediate_size, c.num_heads)
    assert shape(base) == (6, 512, 2048, 8) and shape(big) == (6, 1024, 4096, 16)
    assert big.hidden_dropout == 0.3
    assert {"nano", "tiny"} <= set(TRANSFORMER_SIZES)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"hidden_size": 30, "num_heads": 4}, "divisible"),
        ({"hidden_act": "swsh"}, "swish"),
        ({"position_layout": "halfs"}, "halves"),
        ({"eos_token_id": V}, "outside the target vocabulary"),
        ({"share_embeddings": True, "target_vocab_size": V + 1}, "one vocabulary"),
        ({"hidden_dropout": 1.0}, r"\[0, 1\)"),
        ({"intermediate_size": 0}, "intermediate_size must be >= 1, got 0"),
        ({"target_vocab_size": 0}, "target_vocab_size must be >= 1 or None, got 0"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        transformer_config("nano", vocab_size=V, **kwargs)


def test_old_field_names_still_work_with_a_warning():
    new = transformer_config(
        "nano",
        vocab_size=V,
        hidden_size=16,
        intermediate_size=24,
        decoder_intermediate_size=40,
        max_position_embeddings=20,
        hidden_dropout=0.2,
        hidden_act="swish",
        initializer_range=0.3,
    )
    old_kw = {
        "d_model": 16,
        "d_ff": 24,
        "decoder_d_ff": 40,
        "max_len": 20,
        "dropout": 0.2,
        "activation": "swish",
        "init_std": 0.3,
    }
    assert set(old_kw) == set(OLD_NAMES)
    base = {k: v for k, v in new.to_dict().items() if k not in OLD_NAMES.values()}
    for make in (
        lambda: TransformerConfig(**base, **old_kw),
        lambda: TransformerConfig.from_dict({**base, **old_kw}),  # an old run's model_config.json
        lambda: transformer_config("nano", vocab_size=V).replace(**old_kw),
    ):
        with pytest.warns(DeprecationWarning) as rec:
            cfg = make()
        assert cfg == new and cfg.to_dict() == new.to_dict()
        named = {str(w.message) for w in rec}
        for old, current in OLD_NAMES.items():
            assert any(f"{old!r}" in m and f"{current!r}" in m for m in named), (old, named)
    for old, current in OLD_NAMES.items():
        with pytest.warns(DeprecationWarning, match=f"use .{current}"):
            assert getattr(new, old) == getattr(new, current)
    with pytest.raises(ConfigError, match="both 'd_model' and 'hidden_size'"):
        TransformerConfig(d_model=16, hidden_size=16)
    with pytest.raises(ConfigError, match="both 'max_len' and 'max_position_embeddings'"):
        TransformerConfig.from_dict({"max_len": 20, "max_position_embeddings": 20})
    with pytest.raises(AttributeError, match="no attribute 'hiden_size'"):
        _ = new.hiden_size


def test_unknown_field_suggests_nearest():
    with pytest.raises(ConfigError, match="hidden_size"):
        transformer_config("nano", hiden_size=64)
    with pytest.raises(ConfigError, match="tiny"):
        transformer_config("tinny")


def test_params_carry_logical_axes(post_ln):
    _, variables = post_ln
    specs = nn.get_partition_spec(variables)["params"]
    names = {
        a
        for spec in jax.tree_util.tree_leaves(
            specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec)
        )
        for a in spec
        if a is not None
    }
    assert names == {"embed", "heads", "kv", "mlp", "vocab"}
    enc = specs["encoder"]["layer_0"]
    assert tuple(enc["self_attention"]["query"]["kernel"]) == ("embed", "heads", "kv")
    assert tuple(specs["shared_embedding"]["embedding"]) == ("vocab", "embed")


def test_forward_shapes_and_padding_invariance(post_ln):
    model, variables = post_ln
    x, m, y = _batch()
    out = model.apply(variables, x, m, y)
    assert out.logits.shape == (3, 6, V) and out.logits.dtype == jnp.float32
    assert out.encoder_hidden_state.shape == (3, 7, 32)
    # Padded source positions do not change the real ones: row 2 holds 2 real tokens.
    short = model.apply(variables, x[2:, :2], m[2:, :2], y[2:])
    np.testing.assert_allclose(short.logits, out.logits[2:], atol=1e-5)
    # Causality: changing target input 4 leaves the logits of positions 0..3 alone.
    y2 = y.at[:, 4].set(3)
    out2 = model.apply(variables, x, m, y2)
    np.testing.assert_allclose(out2.logits[:, :4], out.logits[:, :4], atol=1e-6)
    assert not np.allclose(out2.logits[:, 4:], out.logits[:, 4:])


def test_dropout_only_when_not_deterministic(post_ln):
    model, variables = post_ln
    x, m, y = _batch()
    cfg = model.cfg.replace(hidden_dropout=0.3)
    train = Transformer(cfg)
    a = train.apply(variables, x, m, y, deterministic=False, rngs={"dropout": jax.random.key(1)})
    b = train.apply(variables, x, m, y, deterministic=True)
    assert not np.allclose(a.logits, b.logits)
    np.testing.assert_allclose(b.logits, model.apply(variables, x, m, y).logits, atol=1e-6)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "pre_ln": True,
            "share_embeddings": False,
            "target_vocab_size": V + 5,
            "tie_output": False,
            "final_logits_bias": True,
            "position_layout": "halves",
            "hidden_act": "swish",
        },
    ],
)
def test_cached_steps_equal_teacher_forcing(overrides):
    cfg = transformer_config(
        "nano", vocab_size=V, max_position_embeddings=16, num_decoder_layers=2, **overrides
    )
    model = Transformer(cfg)
    x, m, y = _batch(seed=3, t=8)
    params = model.init(jax.random.key(2), x, m, y)["params"]
    full = model.apply({"params": params}, x, m, y).logits  # [b, t, V]
    if cfg.pre_ln:
        assert "final_norm" in params["decoder"] and "output" in params
    dec = model.clone(use_cache=True)
    enc = model.apply({"params": params}, x, m, method="encode")
    shapes = jax.eval_shape(
        lambda: dec.apply({"params": params}, enc, m, y, method="decode", mutable=["cache"])[1][
            "cache"
        ]
    )
    cache = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    steps = []
    for i in range(y.shape[1]):
        logits, upd = dec.apply(
            {"params": params, "cache": cache},
            enc if i == 0 else None,
            m,
            y[:, i : i + 1],
            method="decode",
            use_cached_kv=i > 0,
            mutable=["cache"],
        )
        cache = upd["cache"]
        steps.append(logits[:, 0])
    np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-5, rtol=0)


def test_shared_embeddings_are_one_table(post_ln):
    _, variables = post_ln
    p = variables["params"]
    assert "shared_embedding" in p and "source_embedding" not in p and "output" not in p


def test_model_errors(post_ln):
    model, variables = post_ln
    x, m, y = _batch()
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.apply(variables, jnp.zeros((1, 17), jnp.int32), None, y[:1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.apply(variables, x.at[0, 0].set(V), m, y)
    with pytest.raises(ValueError, match="decoder_input_ids is required"):
        model.apply(variables, x, m)


# -- objective -----------------------------------------------------------------------------------
def test_shift_right():
    labels = jnp.array([[5, 6, 1, -100], [7, 1, 0, 0]])
    np.testing.assert_array_equal(obj.shift_right(labels, start_id=0), [[0, 5, 6, 1], [0, 7, 1, 0]])


def test_smoothed_cross_entropy_matches_explicit_distribution():
    logits = jax.random.normal(jax.random.key(0), (2, 3, 7)) * 3
    labels = jnp.array([[1, 2, 3], [4, 5, 0]])
    q = jax.nn.one_hot(labels, 7) * 0.9 + (1 - jax.nn.one_hot(labels, 7)) * 0.1 / 6
    ref = -(q * jax.nn.log_softmax(logits)).sum(-1) + (q * jnp.log(q)).sum(-1)
    np.testing.assert_allclose(obj.smoothed_cross_entropy(logits, labels, 0.1), ref, atol=1e-5)
    # Without smoothing it is the NLL; predicting the smoothed target exactly scores 0.
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(obj.smoothed_cross_entropy(logits, labels, 0.0), nll, atol=1e-6)
    np.testing.assert_allclose(obj.smoothed_cross_entropy(jnp.log(q), labels, 0.1), 0.0, atol=1e-5)


def test_metrics_count_only_real_tokens():
    logits = jax.random.normal(jax.random.key(1), (2, 4, 9))
    labels = jnp.argmax(logits, -1).at[1, 2:].set(0)
    w = jnp.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    loss, m = obj.seq2seq_loss(logits, labels, w, 0.0)
    assert m["num_tokens"] == 6 and m["accuracy"] == 1.0
    # Garbage in the padded positions changes nothing.
    loss2, _ = obj.seq2seq_loss(logits.at[1, 2:].set(100.0), labels, w, 0.0)
    np.testing.assert_allclose(loss, loss2, atol=1e-6)
    np.testing.assert_allclose(m["perplexity"], np.exp(loss), rtol=1e-5)


def test_compute_loss_trains_down(post_ln):
    """A few AdamW steps on one batch reduce the teacher-forced loss (end to end)."""
    import optax

    model, variables = post_ln
    x, m, y = _batch()
    batch = {"input_ids": x, "attention_mask": m, "labels": y, "labels_mask": jnp.ones_like(y)}
    tx = optax.adam(3e-3)
    params = variables["params"]
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        (loss, _), g = jax.value_and_grad(obj.compute_loss, argnums=1, has_aux=True)(
            model, p, batch
        )
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    losses = []
    for _ in range(30):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_wraps_every_layer_and_is_numerically_neutral(policy):
    """Per-layer activation checkpointing gives the same loss and gradients (dropout on:
    the recomputation draws the same masks)."""
    import dataclasses

    cfg = transformer_config("tiny", vocab_size=60, num_encoder_layers=3, num_decoder_layers=3)
    ids = np.random.RandomState(0).randint(3, 60, (4, 48)).astype(np.int32)
    mask = np.ones_like(ids)

    def loss_of(c):
        model = Transformer(c)

        def loss(p):
            out = model.apply(
                {"params": p},
                ids,
                mask,
                ids,
                deterministic=False,
                rngs={"dropout": jax.random.key(3)},
            )
            return jnp.mean(out.logits.astype(jnp.float32) ** 2)

        return model, jax.jit(jax.value_and_grad(loss))

    model, plain = loss_of(cfg)
    params = nn.unbox(model.init(jax.random.key(1), ids, mask, ids)["params"])
    _, remat = loss_of(dataclasses.replace(cfg, remat_policy=policy))
    (l0, g0), (l1, g1) = plain(params), remat(params)
    np.testing.assert_allclose(l1, l0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # The layers are under jax.checkpoint (the plain model has none): 3 encoder + 3 decoder.
    import re

    count = lambda f: len(re.findall(r"\b(?:checkpoint|remat2?)\[", str(jax.make_jaxpr(f)(params))))
    assert count(remat) == 6 and count(plain) == 0
