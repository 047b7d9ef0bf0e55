"""The BERT-family encoder: properties that must hold, whatever the weights."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer import (
    ConfigError,
    Encoder,
    EncoderModel,
    albert_config,
    bert_config,
    electra_config,
    encoder_config,
    roberta_config,
    transformer_config,
)
from jaxformer.models.bert import layer_plan

V = 97


def init(cfg, length=12, seed=0):
    model = EncoderModel(cfg)
    params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, length), jnp.int32))["params"])
    return model, params


def ids(b, t, seed=0, lo=5):
    return np.random.RandomState(seed).randint(lo, V, (b, t)).astype(np.int32)


@pytest.fixture(scope="module")
def bert():
    return init(
        bert_config(
            "tiny",
            vocab_size=V,
            head="mlm",
            num_layers=2,
            hidden_size=64,
            num_heads=4,
            intermediate_size=128,
        )
    )


def test_packed_rows_equal_each_sequence_alone(bert):
    model, params = bert
    a, b = ids(1, 7, seed=1), ids(1, 5, seed=2)
    fwd = jax.jit(lambda **kw: model.apply({"params": params}, **kw).last_hidden_state)
    alone_a = fwd(input_ids=a)[0]
    alone_b = fwd(input_ids=b)[0]
    packed = np.concatenate([a, b, np.zeros((1, 4), np.int32)], axis=1)  # 7 + 5 + 4 pad
    seg = np.array([[1] * 7 + [2] * 5 + [0] * 4])
    out = fwd(input_ids=packed, segment_ids=seg)[0]  # positions restart
    np.testing.assert_allclose(out[:7], alone_a, atol=1e-5)
    np.testing.assert_allclose(out[7:12], alone_b, atol=1e-5)
    assert np.isfinite(np.asarray(out)).all()


def test_padding_does_not_change_real_tokens(bert):
    model, params = bert
    x = ids(1, 6)
    padded = np.concatenate([x, np.zeros((1, 3), np.int32)], 1)
    mask = np.array([[1] * 6 + [0] * 3])
    f = jax.jit(lambda i, m: model.apply({"params": params}, i, attention_mask=m).last_hidden_state)
    np.testing.assert_allclose(f(padded, mask)[0, :6], f(x, np.ones_like(x))[0], atol=1e-5)


def test_mlm_positions_gather_the_full_logits(bert):
    model, params = bert
    x = ids(2, 10)
    pos = np.array([[1, 4, 9], [0, 2, 3]])
    full = model.apply({"params": params}, x).mlm_logits
    part = model.apply({"params": params}, x, mlm_positions=pos).mlm_logits
    assert part.shape == (2, 3, V)
    np.testing.assert_allclose(
        part, np.take_along_axis(np.asarray(full), pos[..., None], 1), atol=1e-5
    )


@pytest.mark.parametrize(
    "kw", [dict(), dict(pre_ln=True), dict(family="albert", sharing="all", embedding_size=32)]
)
def test_sparse_last_layer_equals_the_dense_last_layer(kw):
    """The last layer at [CLS] + mlm_positions only gives the same MLM logits, NSP logits and
    gradients as the full last layer, with padding and with packed segments."""
    import dataclasses

    cfg = bert_config(
        "tiny",
        vocab_size=V,
        head="pretraining",
        num_layers=2,
        hidden_size=64,
        num_heads=4,
        intermediate_size=128,
        **kw,
    )
    assert cfg.sparse_last_layer
    model, params = init(cfg)
    dense = EncoderModel(dataclasses.replace(cfg, sparse_last_layer=False))
    x = ids(2, 12)
    pos = np.array([[1, 4, 9], [0, 2, 11]])
    batches = [
        dict(attention_mask=np.array([[1] * 12, [1] * 10 + [0] * 2])),
        dict(segment_ids=np.array([[1] * 6 + [2] * 6, [1] * 9 + [0] * 3])),
    ]

    def run(m, p, extra):
        out = m.apply({"params": p}, x, mlm_positions=pos, **extra)
        return out.mlm_logits, out.pair_logits

    for extra in batches:
        for a, b in zip(run(model, params, extra), run(dense, params, extra)):
            np.testing.assert_allclose(a, b, atol=1e-5)
        loss = lambda m, e=extra: lambda p: sum(jnp.sum(jnp.sin(o)) for o in run(m, p, e))
        ga, gb = jax.grad(loss(model))(params), jax.grad(loss(dense))(params)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ga), jax.tree.leaves(gb)):
            if "key" in jax.tree_util.keystr(path) and "bias" in jax.tree_util.keystr(path):
                continue  # exactly zero in exact arithmetic: only rounding noise to compare
            np.testing.assert_allclose(a, b, atol=2e-5 * max(1.0, float(np.abs(b).max())))
    hidden = model.apply({"params": params}, x, mlm_positions=pos).last_hidden_state
    assert hidden.shape == (2, 4, 64)  # [CLS] + the 3 scored rows


def test_bfloat16_within_2e2_relative_of_float32():
    cfg = bert_config("tiny", vocab_size=V, head="pretraining")
    model, params = init(cfg)
    x = ids(2, 12)
    f32 = model.apply({"params": params}, x)
    b16 = EncoderModel(cfg.replace(dtype="bfloat16")).apply({"params": params}, x)
    assert b16.last_hidden_state.dtype == jnp.bfloat16
    for name in ("last_hidden_state", "mlm_logits", "pooled"):
        ref = np.asarray(getattr(f32, name), np.float64)
        got = np.asarray(getattr(b16, name), np.float64)
        rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
        assert rel < 2e-2, (name, rel)


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_is_numerically_neutral(bert, policy):
    model, params = bert
    x = ids(2, 8)
    remat = EncoderModel(model.cfg.replace(remat_policy=policy))
    loss = lambda m: lambda p: m.apply({"params": p}, x).mlm_logits.sum()
    g0 = jax.grad(loss(model))(params)
    g1 = jax.grad(loss(remat))(params)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_scan_layers_equals_unrolled_layers(bert):
    model, params = bert
    scanned = EncoderModel(model.cfg.replace(scan_layers=True))
    sp = dict(params)
    enc = dict(params["encoder"])
    stack = lambda name: jax.tree.map(
        lambda *xs: jnp.stack(xs), *[enc.pop(f"{name}_{i}") for i in range(2)]
    )
    enc["layers"] = {"attention": stack("attention"), "mlp": stack("mlp")}
    sp["encoder"] = enc
    shapes = jax.eval_shape(
        lambda: nn.unbox(scanned.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    )
    assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, sp)
    x = ids(2, 8)
    np.testing.assert_allclose(
        scanned.apply({"params": sp}, x).mlm_logits,
        model.apply({"params": params}, x).mlm_logits,
        atol=1e-5,
    )


def count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize(
    "sharing,n_attn,n_mlp", [("none", 4, 4), ("all", 1, 1), ("attention", 1, 4), ("ffn", 4, 1)]
)
def test_albert_sharing_schemes_create_the_right_blocks(sharing, n_attn, n_mlp):
    cfg = albert_config("tiny", vocab_size=V, num_layers=4, sharing=sharing)
    shapes = jax.eval_shape(
        lambda: nn.unbox(EncoderModel(cfg).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    )["params"]["encoder"]
    assert sum(k.startswith("attention_") for k in shapes) == n_attn
    assert sum(k.startswith("mlp_") for k in shapes) == n_mlp
    assert "embed_proj" in shapes  # E=32 != H=128: the factorized projection exists
    assert shapes["embeddings"]["word"]["embedding"].shape == (V, 32)


def test_albert_groups_follow_hf_assignment():
    cfg = albert_config("tiny", vocab_size=V, num_layers=6, num_hidden_groups=3, inner_group_num=2)
    # layer i runs group int(i / (6 / 3)); each group has 2 inner blocks
    assert layer_plan(cfg) == [
        (0, 0),
        (1, 1),
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
        (2, 2),
        (3, 3),
        (4, 4),
        (5, 5),
        (4, 4),
        (5, 5),
    ]


def test_shared_layers_change_outputs_when_shared_weights_change():
    cfg = albert_config("tiny", vocab_size=V, num_layers=3, sharing="all")
    model, params = init(cfg)
    x = ids(1, 6)
    base = model.apply({"params": params}, x).last_hidden_state
    p2 = jax.tree.map(lambda a: a, params)
    p2["encoder"]["attention_0"]["attention"]["query"]["bias"] = (
        p2["encoder"]["attention_0"]["attention"]["query"]["bias"] + 0.5
    )
    assert not np.allclose(model.apply({"params": p2}, x).last_hidden_state, base)


def test_roberta_positions_skip_padding():
    from jaxformer.models.bert import default_position_ids

    cfg = roberta_config("tiny", vocab_size=V)
    x = jnp.array([[0, 5, 6, 2, 1, 1]])  # pad id 1
    np.testing.assert_array_equal(default_position_ids(cfg, x), [[2, 3, 4, 5, 1, 1]])


def test_named_sizes():
    c = bert_config("base")
    assert (c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size) == (12, 768, 12, 3072)
    c = bert_config("large")
    assert (c.num_layers, c.hidden_size, c.num_heads) == (24, 1024, 16)
    assert bert_config("mini").num_heads == 4 and bert_config("tiny").num_heads == 2
    a = albert_config("xlarge")
    assert (a.hidden_size, a.embedding_size, a.sharing) == (2048, 128, "all")
    e, g = electra_config("base"), electra_config("base", generator=True)
    assert e.hidden_size == 768 and g.hidden_size == 256 and g.embedding_size == 768
    assert encoder_config("roberta", "base").position_offset == 2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(hidden_size=96, num_heads=5), "not divisible by num_heads"),
        (dict(hiden_size=96), "Did you mean 'hidden_size'"),
        (dict(embedding_size=256, sharing="all"), "factorized embeddings"),
        (dict(family="gpt"), "family='gpt'"),
        (dict(num_hidden_groups=2), "need sharing='all'"),
        (dict(num_labels=0), "num_labels must be >= 1, got 0"),
        (dict(embedding_size=0), "embedding_size must be >= 1 or None, got 0"),
    ],
)
def test_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        bert_config("tiny", **kwargs)


def test_unknown_size_is_an_error():
    with pytest.raises(ConfigError, match="unknown size 'bsae'.*'base'"):
        bert_config("bsae")


def test_the_bare_encoder_shares_the_call_of_the_head_models(bert):
    model, params = bert
    x = ids(2, 10)
    mask = np.ones_like(x)
    mask[1, 7:] = 0
    types = np.zeros_like(x)
    full = model.apply({"params": params}, x, mask, types)
    bare = Encoder(model.cfg).apply({"params": params["encoder"]}, x, mask, types)
    np.testing.assert_array_equal(bare.last_hidden_state, full.last_hidden_state)
    np.testing.assert_array_equal(bare.pooled, full.pooled)
    assert bare.mlm_logits is None
    # The shared call puts mlm_positions sixth: a positional `deterministic` is refused.
    with pytest.raises(TypeError, match="no MLM head.*deterministic= by name"):
        Encoder(model.cfg).apply({"params": params["encoder"]}, x, mask, None, None, None, False)


def test_too_long_sequence_is_a_clear_error(bert):
    model, params = bert
    with pytest.raises(ValueError, match="exceeds the position table"):
        model.apply({"params": params}, np.ones((1, 513), np.int32))


def test_out_of_vocab_ids_are_a_clear_error(bert):
    model, params = bert
    with pytest.raises(
        ValueError, match=f"input_ids contains token id {V}, outside the vocabulary"
    ):
        model.apply({"params": params}, np.array([[3, V, 4]], np.int32))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.apply({"params": params}, np.array([[3, -1, 4]], np.int32))


@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_electra_generators_match_released_checkpoints_and_the_recipe(size):
    from jaxformer.tasks import electra as electra_recipe
    from jaxformer.recipes.configs import electra_pretrain

    # google/electra-{small,base,large}-generator: hidden 256, 4 heads, MLP 1024 at every size.
    g = electra_config(size, generator=True)
    assert (g.hidden_size, g.num_heads, g.intermediate_size) == (256, 4, 1024)
    d = electra_config(size)
    assert g.embedding_size == d.embedding_size and g.num_layers == d.num_layers
    # The pretraining recipe builds the same generator through the same rule.
    c = electra_pretrain(size)
    r = electra_recipe.generator_config(d, c.electra.generator_fraction)
    assert (r.hidden_size, r.num_heads, r.intermediate_size) == (256, 4, 1024)


def test_one_dtype_rule_and_one_id_check_for_every_family():
    from jaxformer.models import bert, common, modernbert, transformer

    for module in (bert, modernbert, transformer):
        assert module.dtypes is common.dtypes
        assert not hasattr(module, "check_ids") or module.check_ids is common.check_ids
    for module in (bert, modernbert):  # the encoders check ids through the one helper
        assert module.check_batch_ids is common.check_batch_ids
    with pytest.raises(ValueError, match=r"input_ids contains token id 7, outside"):
        common.check_batch_ids(np.array([[1, 7]]), 7)
    cfg = transformer_config("nano", vocab_size=20, dtype="bfloat16")
    assert common.dtypes(cfg) == (jnp.dtype("bfloat16"), jnp.dtype("float32"))
    with pytest.raises(
        ValueError,
        match=r"decoder_input_ids contains token id 20, outside the vocabulary \[0, 20\)",
    ):
        common.check_ids(np.array([[1, 20]]), 20, "decoder_input_ids")
    common.check_ids(np.array([[0, 19]]), 20)  # in range: no error
