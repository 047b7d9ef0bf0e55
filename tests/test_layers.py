"""Layers against independent float64 numpy references and hand-computed cases."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.layers import MultiHeadAttention, attend, masks, sinusoidal_table
from jaxformer.layers.feedforward import FeedForward


def np_attention(q, k, v, mask):
    """float64 reference: softmax(q k^T / sqrt(d)) v per head, masked keys excluded."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
    m = np.broadcast_to(np.asarray(mask), logits.shape)
    logits = np.where(m, logits, -np.inf)
    mx = np.max(np.where(m, logits, -1e300), axis=-1, keepdims=True)
    e = np.where(m, np.exp(logits - mx), 0.0)
    denom = e.sum(-1, keepdims=True)
    p = np.divide(e, denom, out=np.zeros_like(e), where=denom > 0)  # all-masked rows: 0
    return np.einsum("bnqk,bknd->bqnd", p, v)


@pytest.fixture(scope="module")
def qkv():
    r = np.random.RandomState(0)
    return [r.randn(2, 5, 3, 4).astype(np.float32) for _ in range(3)]


@pytest.mark.parametrize("kernel", ["xla", "einsum"])
def test_attend_matches_numpy_with_padding_and_causal(qkv, kernel):
    q, k, v = qkv
    am = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    mask = masks.combine(masks.padding_mask(jnp.asarray(am)), masks.causal_mask(5))
    out = jax.jit(lambda *a: attend(*a, kernel=kernel))(q, k, v, mask)
    np.testing.assert_allclose(out, np_attention(q, k, v, mask), atol=1e-5)


@pytest.mark.parametrize("kernel", ["xla", "einsum"])
def test_fully_masked_rows_are_zero_not_nan(qkv, kernel):
    q, k, v = qkv
    seg = jnp.array([[1, 1, 2, 0, 0], [1, 1, 1, 1, 1]])
    kv_seg = jnp.array([[1, 1, 2, 3, 3], [1, 1, 1, 1, 1]])
    mask = masks.segment_mask(seg, kv_seg)  # query segment 0 (padding) sees no key
    out = np.asarray(attend(q, k, v, mask, kernel=kernel))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0, 3:], 0.0)
    np.testing.assert_allclose(out, np_attention(q, k, v, mask), atol=1e-5)


def test_attention_dropout_drops_probabilities_and_is_identity_when_deterministic(qkv):
    q, k, v = qkv
    det = attend(q, k, v, None, dropout_rate=0.5, deterministic=True)
    np.testing.assert_allclose(det, np_attention(q, k, v, np.ones((1, 1, 5, 5), bool)), atol=1e-5)
    a = attend(q, k, v, None, dropout_rate=0.5, dropout_rng=jax.random.key(1), deterministic=False)
    b = attend(q, k, v, None, dropout_rate=0.5, dropout_rng=jax.random.key(2), deterministic=False)
    assert not np.allclose(a, det) and not np.allclose(a, b)


def test_mha_projections_match_einsum_reference():
    x = np.random.RandomState(1).randn(2, 6, 8).astype(np.float32)
    mha = MultiHeadAttention(num_heads=2, head_dim=4)
    p = nn.unbox(mha.init(jax.random.key(0), x)["params"])
    out = mha.apply({"params": p}, x)
    proj = {
        n: np.einsum("bte,ehd->bthd", x, p[n]["kernel"]) + p[n]["bias"]
        for n in ("query", "key", "value")
    }
    ref = np_attention(proj["query"], proj["key"], proj["value"], np.ones((1, 1, 6, 6), bool))
    ref = np.einsum("bthd,hde->bte", ref, p["out"]["kernel"]) + p["out"]["bias"]
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_mha_cross_attention_uses_kv_inputs():
    r = np.random.RandomState(2)
    xq, xkv = r.randn(1, 3, 8).astype(np.float32), r.randn(1, 7, 8).astype(np.float32)
    mha = MultiHeadAttention(num_heads=2, head_dim=4)
    p = nn.unbox(mha.init(jax.random.key(0), xq, xkv)["params"])
    out = mha.apply({"params": p}, xq, xkv)
    assert out.shape == (1, 3, 8)
    out2 = mha.apply({"params": p}, xq, xkv + 1.0)
    assert not np.allclose(out, out2)


def test_decode_cache_equals_full_causal_pass():
    x = np.random.RandomState(3).randn(2, 6, 8).astype(np.float32)
    full = MultiHeadAttention(num_heads=2, head_dim=4)
    p = nn.unbox(full.init(jax.random.key(0), x)["params"])
    ref = full.apply({"params": p}, x, mask=masks.causal_mask(6))
    dec = MultiHeadAttention(num_heads=2, head_dim=4, decode=True)
    cache = dec.init(jax.random.key(0), x)["cache"]
    step = jax.jit(lambda c, xt: dec.apply({"params": p, "cache": c}, xt, mutable=["cache"]))
    outs = []
    for t in range(6):
        o, upd = step(cache, x[:, t : t + 1])
        cache = upd["cache"]
        outs.append(o)
    np.testing.assert_allclose(np.concatenate(outs, 1), ref, atol=1e-5)


def test_masks_hand_computed():
    np.testing.assert_array_equal(masks.causal_mask(3)[0, 0], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(
        masks.causal_mask(2, 4, offset=1)[0, 0], [[1, 1, 0, 0], [1, 1, 1, 0]]
    )
    seg = jnp.array([[1, 1, 2, 0]])
    np.testing.assert_array_equal(
        masks.segment_mask(seg)[0, 0], [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    )
    pad = masks.padding_mask(jnp.array([[1, 1, 0]]))
    assert pad.shape == (1, 1, 1, 3) and pad.tolist() == [[[[True, True, False]]]]
    assert masks.combine(None, None) is None


def test_sinusoidal_layouts_follow_the_formulas():
    t = sinusoidal_table(50, 8)
    pos, i = 17, 3  # dims 6 (sin) and 7 (cos) share frequency 10000^(-6/8)
    w = 10000.0 ** (-2 * i / 8)
    np.testing.assert_allclose(
        [t[pos, 2 * i], t[pos, 2 * i + 1]], [np.sin(pos * w), np.cos(pos * w)], rtol=1e-6
    )
    h = sinusoidal_table(50, 8, layout="halves")
    np.testing.assert_allclose(
        [h[pos, i], h[pos, 4 + i]], [np.sin(pos * w), np.cos(pos * w)], rtol=1e-6
    )
    np.testing.assert_array_equal(t[0, 0::2], 0.0)
    np.testing.assert_array_equal(t[0, 1::2], 1.0)
    with pytest.raises(ValueError, match="even dimension"):
        sinusoidal_table(4, 7)


@pytest.mark.parametrize(
    "act,fn",
    [
        ("gelu", lambda x: 0.5 * x * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2)))),
        ("gelu_new", lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
        ("relu", lambda x: np.maximum(x, 0)),
    ],
)
def test_feedforward_matches_numpy(act, fn):
    x = np.random.RandomState(4).randn(2, 3, 8).astype(np.float32)
    ff = FeedForward(16, act)
    p = nn.unbox(ff.init(jax.random.key(0), x)["params"])
    h = fn(x.astype(np.float64) @ p["wi"]["kernel"] + p["wi"]["bias"])
    np.testing.assert_allclose(
        ff.apply({"params": p}, x), h @ p["wo"]["kernel"] + p["wo"]["bias"], atol=1e-5
    )


def test_dropout_keeps_the_rate_and_the_expectation():
    from jaxformer.layers import Dropout, dropout
    from jaxformer.layers.dropout import keep_mask

    for shape in [(64, 128, 96), (5, 33)]:  # even and odd last dims
        keep, q = keep_mask(jax.random.key(3), shape, 0.9)
        assert keep.shape == shape and abs(q - 0.9) < 1e-5
        n = keep.size
        assert abs(float(keep.mean()) - q) < 4 * np.sqrt(q * (1 - q) / n)
    x = jnp.ones((256, 512))
    y = dropout(x, 0.1, jax.random.key(0))
    kept = np.asarray(y) != 0
    np.testing.assert_allclose(np.asarray(y)[kept], 1.0 / q, rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 4 * np.sqrt(0.1 / 0.9 / y.size)  # E[y] = x
    # Different keys give different masks; the module is the identity when deterministic.
    assert (np.asarray(dropout(x, 0.1, jax.random.key(1))) != np.asarray(y)).any()
    d = Dropout(0.1)
    assert (d.apply({}, x, deterministic=True) == x).all()
    z = d.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    assert 0.85 < float((np.asarray(z) != 0).mean()) < 0.95
