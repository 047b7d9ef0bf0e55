"""Attention kernels against a float64 numpy reference and the einsum kernel, the Pallas
kernels (splash, Pallas GPU) in interpret mode; `auto` per backend with the backend mocked."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.layers import kernels as K
from jaxformer.layers import masks

B, T, N, D = 2, 128, 2, 16  # T = the Pallas block, so the fused kernels take the shape


def reference(q, k, v, mask):
    """float64 softmax attention; rows that see no key are zeros."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1])
    m = np.broadcast_to(np.asarray(mask), logits.shape) if mask is not None else None
    if m is not None:
        logits = np.where(m, logits, -np.inf)
    mx = np.max(logits, -1, keepdims=True)
    p = np.exp(logits - np.where(np.isfinite(mx), mx, 0))
    s = p.sum(-1, keepdims=True)
    p = np.where(s > 0, p / np.where(s > 0, s, 1), 0)
    return np.einsum("bnqk,bknd->bqnd", p, v)


@pytest.fixture(scope="module")
def qkv():
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    return [jax.random.normal(kk, (B, T, N, D), jnp.float32) for kk in ks]


def _lengths_mask(lengths, left=False):
    pos = np.arange(T)[None, :]
    n = np.asarray(lengths)[:, None]
    m = pos >= T - n if left else pos < n
    return masks.padding_mask(jnp.asarray(m.astype(np.int32)))


def _packed_mask():
    seg = np.zeros((B, T), np.int32)
    seg[0, :50], seg[0, 50:110] = 1, 2  # 18 padding positions
    seg[1, :30], seg[1, 30:31], seg[1, 31:128] = 1, 2, 3  # a one-token segment, no padding
    return masks.make_attention_mask(jnp.asarray((seg > 0).astype(np.int32)), jnp.asarray(seg))


MASKS = {
    "none": lambda: None,
    "right_padding": lambda: _lengths_mask([100, 128]),
    "left_padding": lambda: _lengths_mask([100, 60], left=True),
    "packed": _packed_mask,
    "causal": lambda: masks.causal_mask(T),
}
SCALE = 1.0 / np.sqrt(D)


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("kernel", ["einsum", "xla", "cudnn", "splash", "pallas"])
def test_kernel_matches_float64_reference(monkeypatch, qkv, kernel, mask_name):
    q, k, v = qkv
    mask = MASKS[mask_name]()
    if kernel == "cudnn":  # cuDNN cannot run on CPU: its lengths path with jax's XLA backend
        monkeypatch.setattr(K, "_cudnn", functools.partial(K._cudnn, implementation="xla"))
        monkeypatch.setattr(K, "_cudnn_fits", lambda q: True)  # float32 here: exact check
    out = jax.jit(functools.partial(K.attend, kernel=kernel, interpret=True))(q, k, v, mask)
    want = reference(q, k, v, mask)
    np.testing.assert_allclose(np.asarray(out), want, atol=2e-5, rtol=2e-5)
    einsum = K.attend(q, k, v, mask, kernel="einsum")
    np.testing.assert_allclose(np.asarray(out), np.asarray(einsum), atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("kernel", ["splash", "pallas"])
def test_pallas_kernel_gradients_match_einsum(qkv, kernel):
    q, k, v = qkv
    mask = _packed_mask()
    w = jax.random.normal(jax.random.PRNGKey(1), (B, T, N, D))

    def loss(kern, q, k, v):
        return jnp.sum(w * K.attend(q, k, v, mask, kernel=kern, interpret=True))

    got = jax.jit(jax.grad(functools.partial(loss, kernel), argnums=(0, 1, 2)))(q, k, v)
    want = jax.grad(functools.partial(loss, "einsum"), argnums=(0, 1, 2))(q, k, v)
    for g, r in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=5e-5, rtol=5e-5)


def test_key_lengths_and_prefix_check():
    lengths, prefix = K.key_lengths(_lengths_mask([100, 128]))
    assert lengths.tolist() == [100, 128] and bool(prefix)
    _, prefix = K.key_lengths(_lengths_mask([100, 60], left=True))
    assert not bool(prefix)


def test_segment_ids_from_mask_exact_for_packing_not_for_causal():
    ids, exact = K.segment_ids_from_mask(_packed_mask())
    assert bool(exact)
    assert ids[0, :50].tolist() == [0] * 50 and ids[0, 50:110].tolist() == [50] * 60
    assert ids[0, 110:].tolist() == [-1] * 18  # padding rows see no key
    _, exact = K.segment_ids_from_mask(jnp.broadcast_to(masks.causal_mask(T), (B, 1, T, T)))
    assert not bool(exact)


@pytest.mark.parametrize(
    "backend,dropout,want",
    [
        ("gpu", False, "cudnn"),
        ("cuda", False, "cudnn"),
        ("tpu", False, "splash"),
        ("cpu", False, "xla"),
        ("rocm", False, "xla"),
        ("gpu", True, "einsum"),
        ("tpu", True, "einsum"),
        ("cpu", True, "einsum"),
    ],
)
def test_auto_resolves_per_backend(monkeypatch, backend, dropout, want):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert K.resolve_kernel("auto", dropout=dropout) == want
    assert K.resolve_kernel("xla", dropout=dropout) == ("einsum" if dropout else "xla")


@pytest.mark.parametrize("backend,called", [("gpu", "_cudnn"), ("tpu", "_with_segments")])
def test_auto_dispatches_per_backend(monkeypatch, qkv, backend, called):
    """`attend(kernel="auto")` under a mocked backend calls that backend's kernel; with
    dropout on it takes the einsum path instead and applies dropout."""
    q, k, v = qkv
    calls = []
    real = getattr(K, called)
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    if called == "_cudnn":  # cuDNN itself cannot run on CPU: its lengths path via XLA
        monkeypatch.setattr(K, "_cudnn_fits", lambda q: True)
        monkeypatch.setattr(
            K, "_cudnn", lambda *a: calls.append(a) or real(*a, implementation="xla")
        )
    else:
        monkeypatch.setattr(K, "_with_segments", lambda *a: calls.append(a) or real(*a))
    mask = _lengths_mask([100, 128])
    out = K.attend(q, k, v, mask, kernel="auto")
    assert len(calls) == 1
    np.testing.assert_allclose(np.asarray(out), reference(q, k, v, mask), atol=2e-5)
    rng = jax.random.PRNGKey(3)
    dropped = K.attend(
        q, k, v, mask, kernel="auto", dropout_rate=0.5, dropout_rng=rng, deterministic=False
    )
    assert len(calls) == 1  # dropout: not the fused kernel
    manual = K._einsum(q, k, v, mask, SCALE, 0.5, rng)
    np.testing.assert_allclose(np.asarray(dropped), np.asarray(manual), atol=1e-6)
    assert not np.allclose(np.asarray(dropped), np.asarray(out), atol=1e-3)


def test_unknown_kernel_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'; use one of auto"):
        K.resolve_kernel("flash")


def test_cudnn_envelope():
    bf16 = jnp.zeros((1, 16, 2, 64), jnp.bfloat16)
    assert K._cudnn_fits(bf16)
    assert not K._cudnn_fits(bf16.astype(jnp.float32))  # float32 compute: xla
    assert not K._cudnn_fits(jnp.zeros((1, 16, 2, 160), jnp.bfloat16))
    assert not K._cudnn_fits(bf16[:, :1])  # a decoding step


@pytest.mark.parametrize("kernel", ["splash", "pallas"])
def test_encoder_with_pallas_kernel_matches_xla_on_packed_rows(kernel):
    """The model-level wiring: a packed batch through the encoder with each Pallas kernel
    (interpret mode) gives the xla kernel's hidden states."""
    from jaxformer.models import EncoderModel, bert_config

    cfg = bert_config(
        "tiny", vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64
    )
    seg = np.zeros((2, T), np.int32)
    seg[0, :70], seg[0, 70:120], seg[1, :128] = 1, 2, 1
    ids = np.random.default_rng(0).integers(5, 64, (2, T)).astype(np.int32)
    mask = (seg > 0).astype(np.int32)
    model = EncoderModel(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(ids))["params"]

    def hidden(kern):
        m = EncoderModel(cfg.replace(attention_kernel=kern))
        return m.apply(
            {"params": params}, ids, attention_mask=mask, segment_ids=seg
        ).last_hidden_state

    want = np.asarray(hidden("xla"))
    np.testing.assert_allclose(np.asarray(hidden(kernel)), want, atol=1e-5, rtol=1e-5)
