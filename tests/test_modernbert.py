"""ModernBERT model and its layers against independent references: numpy float64 for
rotary, the window and GeGLU; each sequence alone for packed rows; float32 for bf16;
transformers' defaults and the paper's parameter counts for the named sizes."""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxformer
from jaxformer.convert.modernbert import hf_config_from_modernbert, param_shapes
from jaxformer.layers import masks
from jaxformer.layers.attention import attend
from jaxformer.layers.embeddings import segment_positions
from jaxformer.layers.feedforward import GatedFeedForward
from jaxformer.layers.rotary import apply_rotary, rotary_tables
from jaxformer.models.configs import ConfigError
from jaxformer.models.modernbert import ModernBertModel
from jaxformer.models.modernbert_configs import ModernBertConfig, modernbert_config

TINY = dict(vocab_size=101, local_window=4, max_position_embeddings=32)


def test_rotary_matches_complex_rotation():
    """Pair (i, i + d/2) rotates by angle p * theta^(-2i/d): a complex product in float64."""
    rng = np.random.default_rng(0)
    b, t, n, d, theta = 2, 7, 3, 8, 500.0
    x = rng.normal(size=(b, t, n, d)).astype(np.float32)
    pos = rng.integers(0, 50, (b, t))
    got = np.asarray(apply_rotary(jnp.asarray(x), *rotary_tables(jnp.asarray(pos), d, theta)))
    z = x[..., : d // 2].astype(np.float64) + 1j * x[..., d // 2 :]
    ang = pos[:, :, None, None] * theta ** (-np.arange(0, d, 2) / d)
    w = z * np.exp(1j * ang)
    np.testing.assert_allclose(got, np.concatenate([w.real, w.imag], -1), atol=2e-5)


def test_rotary_scores_depend_on_relative_position_only():
    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32) for _ in range(2))

    def score(pq, pk):
        rq = apply_rotary(q, *rotary_tables(jnp.array([[pq]]), 16, 10000.0))
        rk = apply_rotary(k, *rotary_tables(jnp.array([[pk]]), 16, 10000.0))
        return float(jnp.sum(rq * rk))

    assert score(3, 1) == pytest.approx(score(13, 11), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def test_sliding_window_mask_is_the_band():
    m = np.asarray(masks.sliding_window_mask(6, 7, 2))[0, 0]
    want = np.array([[abs(i - j) <= 2 for j in range(7)] for i in range(6)])
    np.testing.assert_array_equal(m, want)


def test_segment_positions_restart_per_segment():
    seg = jnp.array([[1, 1, 1, 2, 2, 3, 0, 0]])
    np.testing.assert_array_equal(segment_positions(seg), [[0, 1, 2, 0, 1, 0, 0, 1]])


@pytest.mark.parametrize("kernel", ["xla", "einsum"])
def test_attend_local_window_against_numpy(kernel):
    """Both kernels against a float64 softmax over the band and the padding mask."""
    rng = np.random.default_rng(2)
    b, t, n, d, w = 2, 9, 2, 4, 2
    q, k, v = (rng.normal(size=(b, t, n, d)).astype(np.float32) for _ in range(3))
    pad = np.ones((b, t), bool)
    pad[1, 6:] = False
    got = attend(*map(jnp.asarray, (q, k, v)), masks.padding_mask(jnp.asarray(pad)),
                 kernel=kernel, local_window=w)  # fmt: skip
    logits = np.einsum("bqnd,bknd->bnqk", q, k).astype(np.float64) / math.sqrt(d)
    allowed = pad[:, None, None, :] & (np.abs(np.arange(t)[:, None] - np.arange(t)) <= w)
    logits = np.where(allowed, logits, -1e30)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    want = np.einsum("bnqk,bknd->bqnd", p, v)
    # query 8 of row 1 is padding whose window holds only padding: zeros by contract
    want[1, 8] = 0.0
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_geglu_against_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 6)).astype(np.float32)
    ff = GatedFeedForward(5, "gelu", use_bias=True)
    params = jax.tree.map(lambda a: a + 0.1, ff.init(jax.random.key(0), jnp.asarray(x)))
    got = np.asarray(ff.apply(params, jnp.asarray(x)))
    p = jax.tree.map(np.asarray, nn.unbox(params))["params"]
    h = np.einsum("bte,egm->btgm", x, p["wi"]["kernel"]) + p["wi"]["bias"]
    gelu = lambda z: 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    want = (gelu(h[..., 0, :]) * h[..., 1, :]) @ p["wo"]["kernel"] + p["wo"]["bias"]
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    cfg = modernbert_config("tiny", head="mlm", **TINY)
    model = ModernBertModel(cfg)
    params = model.init(jax.random.key(0), **model.dummy_inputs(1, 16))["params"]
    return model, params


def test_packed_row_equals_each_sequence_alone(tiny):
    """Two sequences (7 and 9 tokens, longer than the +-2 window) and 2 pads in one row:
    attention, the window and the rotary positions all stay within each segment."""
    model, params = tiny
    rng = np.random.default_rng(4)
    a, b = rng.integers(3, 101, 7), rng.integers(3, 101, 9)
    row = np.concatenate([a, b, [0, 0]])[None]
    seg = np.array([[1] * 7 + [2] * 9 + [0, 0]])
    apply = jax.jit(model.apply)
    packed = np.asarray(apply({"params": params}, row, segment_ids=seg).last_hidden_state)[0]
    alone_a = np.asarray(apply({"params": params}, a[None]).last_hidden_state)[0]
    alone_b = np.asarray(apply({"params": params}, b[None]).last_hidden_state)[0]
    np.testing.assert_allclose(packed[:7], alone_a, atol=1e-5)
    np.testing.assert_allclose(packed[7:16], alone_b, atol=1e-5)
    # and the packing is not trivially equal: without segment ids the rows mix
    mixed = np.asarray(apply({"params": params}, row).last_hidden_state)[0]
    assert np.abs(mixed[7:16] - alone_b).max() > 1e-3


def test_bf16_within_2e2_of_float32(tiny):
    model, params = tiny
    ids = np.random.default_rng(5).integers(3, 101, (2, 24))
    mask = np.ones_like(ids)
    mask[1, 15:] = 0
    f32 = model.apply({"params": params}, ids, mask)
    bf16 = ModernBertModel(model.cfg.replace(dtype="bfloat16")).apply({"params": params}, ids, mask)
    for name in ("last_hidden_state", "mlm_logits"):
        ref = np.asarray(getattr(f32, name))[mask == 1]
        got = np.asarray(getattr(bf16, name), np.float32)[mask == 1]
        assert getattr(bf16, name).dtype == jnp.bfloat16
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        assert rel <= 2e-2, (name, rel)


def test_sliding_layers_use_the_window(tiny):
    """The same weights with a window covering the row give other outputs (the band acts)."""
    model, params = tiny
    ids = np.random.default_rng(6).integers(3, 101, (1, 20))
    narrow = model.apply({"params": params}, ids).last_hidden_state
    wide = ModernBertModel(model.cfg.replace(local_window=64)).apply({"params": params}, ids)
    assert np.abs(np.asarray(narrow) - np.asarray(wide.last_hidden_state)).max() > 1e-3


def test_remat_gives_the_same_gradients(tiny):
    model, params = tiny
    ids = jnp.asarray(np.random.default_rng(7).integers(3, 101, (2, 12)))

    def loss(p, m):
        return jnp.mean(m.apply({"params": p}, ids).mlm_logits ** 2)

    g0 = jax.grad(loss)(params, model)
    g1 = jax.grad(loss)(params, ModernBertModel(model.cfg.replace(remat_policy="full")))
    for x, y in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def test_too_long_input_is_a_clear_error(tiny):
    model, params = tiny
    with pytest.raises(ValueError, match="length 33 exceeds max_position_embeddings=32"):
        model.apply({"params": params}, np.ones((1, 33), np.int32))


def test_unknown_layer_type_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"layer_types\[1\]='local'.*sliding_attention"):
        ModernBertConfig(num_layers=2, layer_types=("full_attention", "local"))
    hf = hf_config_from_modernbert(modernbert_config("tiny", **TINY))
    hf["layer_types"][2] = "chunked_attention"
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ConfigError, match=r"layer_types\[2\]='chunked_attention'"):
        jaxformer.from_pretrained(str(tmp_path))
    with pytest.raises(ConfigError, match="layer_types has 2 entries but num_layers=3"):
        modernbert_config("tiny", layer_types=("full_attention",) * 2)


def test_base_size_is_transformers_default():
    """modernbert_config('base') writes the config transformers' ModernBertConfig()
    defaults to (the released ModernBERT-base shape)."""
    transformers = pytest.importorskip("transformers")
    ours = hf_config_from_modernbert(modernbert_config("base"))
    theirs = transformers.ModernBertConfig().to_dict()
    for key, value in ours.items():
        if key in ("architectures", "id2label", "label2id", "dtype"):
            continue
        assert theirs[key] == value, key


@pytest.mark.parametrize("size, millions", [("base", 149), ("large", 395)])
def test_named_sizes_have_the_papers_parameter_counts(size, millions):
    """ModernBERT-base has 149M and -large 395M parameters (Warner et al. 2024, table 1)."""
    shapes = param_shapes(modernbert_config(size))
    total = sum(math.prod(s) for s in shapes.values())
    assert round(total / 1e6) == millions


def test_flops_match_hand_count():
    """ModernBERT-base layer at T = 1024, per token, forward:
    q, k, v, out 4 x 2 x 768^2 = 4,718,592; GeGLU in 2 x 768 x 2304 = 3,538,944 and out
    2 x 1152 x 768 = 1,769,472; scores and values 2 x 2 x 1024 x 768 = 3,145,728."""
    from jaxformer import benchmarking as B

    layer = 4_718_592 + 3_538_944 + 1_769_472 + 3_145_728
    cfg = modernbert_config("base", head="mlm")
    fwd = B.encoder_flops(cfg, 1024, "infer", predictions=308)
    assert fwd["layers"] == 22 * layer
    assert fwd["head"] == pytest.approx((2 * 768 * 768 + 2 * 768 * 50368) * 308 / 1024)
    assert B.encoder_flops(cfg, 1024, "train", 308)["total"] == pytest.approx(3 * fwd["total"])


def test_flops_match_xla_cost_analysis():
    """Our count of the forward pass against XLA's count of the compiled program (which
    adds the element-wise work: norms, GELU, softmax, rotary)."""
    from jaxformer import benchmarking as B

    b, t = 2, 64
    cfg = modernbert_config(
        "tiny", head="mlm", hidden_size=256, num_heads=4, intermediate_size=384, vocab_size=500
    )
    model = ModernBertModel(cfg)
    ids = jnp.ones((b, t), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.key(0), ids)["params"]
    fwd = jax.jit(lambda p: model.apply({"params": p}, ids).mlm_logits)
    cost = fwd.lower(params).compile().cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"]
    ours = B.encoder_flops(cfg, t, "infer", predictions=t)["total"] * b * t
    assert ours <= xla <= 1.05 * ours, (ours, xla)  # measured: 1.009
