"""Parity with transformers' T5ForConditionalGeneration (random tiny models, float32, eval):
T5 v1.0 (ReLU, tied and rescaled output) and v1.1 / Flan-T5 (gated GELU, untied)."""

import jax
import numpy as np
import pytest

import torch
import transformers

import jaxformer
from jaxformer.convert import t5 as conv
from jaxformer.models.configs import ConfigError
from jaxformer.models.t5 import T5, T5Config
import seq2seq_reference as s2s

PAD, EOS, VOCAB, MAX_NEW = 0, 1, 97, 9


def _hf_model(proj: str, tie: bool):
    cfg = transformers.T5Config(
        d_model=40,
        d_kv=12,  # 3 x 12 != 40
        num_heads=3,
        d_ff=56,
        num_layers=2,
        num_decoder_layers=3,
        vocab_size=VOCAB,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        feed_forward_proj=proj,
        tie_word_embeddings=tie,
        dropout_rate=0.1,
    )
    torch.manual_seed(1)
    model = transformers.T5ForConditionalGeneration(cfg).eval()
    # Wider weights than T5's init and norm scales away from 1, so that the mapping of each
    # tensor shows; a larger EOS row (v1.1) so that some generations end early.
    torch.manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
            elif name == "shared.weight":
                # v1.1's output is not rescaled by d_model^-0.5: a narrower table keeps its
                # logits as large as v1.0's.
                p.normal_(0.0, 1.0 if tie else 0.25)
                p[EOS] *= 1.0 if tie else 1.4
            else:  # queries and keys narrower: T5 does not scale the attention logits
                p.normal_(0.0, 0.15 if name.endswith((".q.weight", ".k.weight")) else 0.5)
    return model


def _inputs(seed=0, src_len=11):
    return s2s.padded_batch(seed, src_len, VOCAB, low=2, pad=PAD, start=PAD)


@pytest.fixture(scope="module", params=[("relu", True), ("gated-gelu", False)], ids=["v1", "v1.1"])
def pair(request):
    hf = _hf_model(*request.param)
    cfg = T5Config.from_hf(hf.config)
    return s2s.converted(hf, cfg, T5, conv.params_from_t5_state_dict)


def test_config_mapping(pair):
    hf, model, _ = pair
    cfg = model.cfg
    v1 = hf.config.feed_forward_proj == "relu"
    assert cfg.is_gated != v1 and cfg.activation == ("relu" if v1 else "gelu_new")
    assert cfg.scale_decoder_outputs == cfg.tie_word_embeddings == v1
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (PAD, EOS, PAD)
    assert T5Config.from_hf(cfg.to_hf()) == cfg


def test_unsupported_variant_is_named():
    with pytest.raises(ConfigError, match="feed_forward_proj='gated-swiglu'"):
        T5Config(feed_forward_proj="gated-swiglu")
    with pytest.raises(ConfigError, match="feed_forward_proj='relu-gated'"):
        T5Config.from_hf({"vocab_size": 10, "d_model": 4, "feed_forward_proj": "relu-gated"})


@pytest.mark.parametrize("src_len", [11, 48], ids=["short", "long"])
def test_encoder_states_and_logits_match(pair, src_len):
    """Teacher forcing within 1e-4; 48 tokens is more than twice the bucket range (20)."""
    hf, model, params = pair
    x, mask, y, ymask = _inputs(src_len=src_len)
    ref = s2s.hf_forward(hf, x, mask, y, ymask)
    out = model.apply({"params": params}, x, mask, y, ymask)
    enc, logits = s2s.max_diffs(out, ref, mask, ymask)  # padded positions are not compared
    print(f"max |diff| encoder {enc:.2e} logits {logits:.2e}")
    assert enc < 1e-4 and logits < 1e-4


def _hf_generate(hf, x, mask, num_beams):
    gc = transformers.GenerationConfig(
        num_beams=num_beams,
        do_sample=False,
        max_new_tokens=MAX_NEW,
        decoder_start_token_id=PAD,
        eos_token_id=EOS,
        pad_token_id=PAD,
        # transformers 5.24 sizes T5's decoder cache by the encoder's layer count, which
        # fails for num_decoder_layers != num_layers; the uncached path is the same model.
        use_cache=False,
    )
    return _after_eos_pad(s2s.hf_generate(hf, x, mask, gc, PAD))


def _after_eos_pad(ids):
    """Positions after the first EOS -> PAD (transformers' beam search fills them with EOS
    when pad_token_id is 0)."""
    ended = np.cumsum(ids == EOS, axis=1) - (ids == EOS) > 0
    return np.where(ended, PAD, ids)


@pytest.mark.parametrize("num_beams", [1, 4], ids=["greedy", "beam4"])
def test_generate_matches_transformers(pair, num_beams):
    hf, model, params = pair
    x, mask, _, _ = _inputs(seed=1)
    ref = _hf_generate(hf, x, mask, num_beams)
    ours = s2s.generate_as_transformers(model, params, x, mask, MAX_NEW, num_beams)
    np.testing.assert_array_equal(_after_eos_pad(ours), ours)  # ours pads after EOS
    np.testing.assert_array_equal(ours, ref)
    assert len(set(map(tuple, ours))) > 1  # not vacuous
    assert (ours == EOS).any()  # some hypotheses end before the limit


def test_save_and_load_round_trip(pair, tmp_path):
    hf, model, params = pair
    x, mask, y, _ = _inputs(seed=2)
    # ours -> HF directory -> transformers, and transformers' save -> ours
    theirs, ours, _ = s2s.round_trip_logits(hf, model, params, x, mask, y, str(tmp_path))
    np.testing.assert_allclose(*theirs, atol=1e-6)
    np.testing.assert_allclose(*ours, atol=1e-6)


def test_cached_decoding_matches_full_prefix(pair):
    """The cache path (bias of one query against all cached keys) equals re-running the
    whole prefix without a cache."""
    _, model, params = pair
    x, mask, _, _ = _inputs(seed=3)
    a = jaxformer.generate(model, params, x, mask, max_length=MAX_NEW, use_cache=True)
    b = jaxformer.generate(model, params, x, mask, max_length=MAX_NEW, use_cache=False)
    np.testing.assert_array_equal(np.asarray(a.sequences), np.asarray(b.sequences))
    np.testing.assert_allclose(np.asarray(a.scores), np.asarray(b.scores), atol=1e-5)


def test_relative_buckets_match_transformers():
    from jaxformer.models.t5 import relative_position_bucket

    rel = torch.arange(-60, 61)
    for bidirectional in (True, False):
        ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
            rel, bidirectional=bidirectional, num_buckets=8, max_distance=20
        ).numpy()
        ours = relative_position_bucket(jax.numpy.asarray(rel.numpy()), bidirectional, 8, 20)
        np.testing.assert_array_equal(np.asarray(ours), ref)


@pytest.mark.parametrize("kernel", ["einsum", "xla", "cudnn"])
def test_attend_bias_and_scale_match_numpy(kernel):
    """The additive bias and the explicit scale on every kernel path (cudnn falls back to xla
    when a bias is given) against a float64 reference, with a padding mask."""
    from jaxformer.layers.kernels import attend

    rs = np.random.RandomState(0)
    q, k, v = (rs.randn(2, n, 3, 5).astype(np.float32) for n in (4, 6, 6))
    bias = rs.randn(1, 3, 4, 6).astype(np.float32)
    keep = np.ones((2, 6), bool)
    keep[1, 4:] = False
    out = attend(q, k, v, keep[:, None, None, :], kernel=kernel, bias=bias, scale=1.0)
    logits = np.einsum("bqnd,bknd->bnqk", q, k).astype(np.float64) + bias
    logits = np.where(keep[:, None, None, :], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(out), np.einsum("bnqk,bknd->bqnd", p, v), atol=1e-5)


def _small_v11(**fields):
    """A small T5 v1.1 (gated GELU, untied, unscaled output) with `fields`, and ids for it."""
    cfg = T5Config(
        vocab_size=31,
        d_model=16,
        d_kv=4,
        num_heads=2,
        d_ff=24,
        num_layers=1,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        scale_decoder_outputs=False,
        **fields,
    )
    return T5(cfg), np.arange(12).reshape(2, 6) % 31


def test_dropout_training_step_runs():
    """Dropout everywhere T5 has it (attention probabilities through einsum with the bias)."""
    model, ids = _small_v11(num_decoder_layers=1, dropout_rate=0.2)
    params = model.init(jax.random.key(0), ids, None, ids)["params"]
    run = lambda s: (
        model.apply(
            {"params": params},
            ids,
            None,
            ids,
            deterministic=False,
            rngs={"dropout": jax.random.key(s)},
        ).logits
    )
    eval_ = model.apply({"params": params}, ids, None, ids).logits
    assert np.isfinite(np.asarray(run(1))).all()
    assert not np.allclose(run(1), run(2)) and not np.allclose(run(1), eval_)


def test_untied_head_survives_transformers(tmp_path):
    """A v1.1 model whose lm_head differs from the shared table: transformers loads our save
    with that head (it unties when both tensors are present and differ), same logits."""
    import flax.linen as nn

    model, ids = _small_v11(num_decoder_layers=2)
    params = nn.unbox(model.init(jax.random.key(0), ids, None, ids)["params"])
    jaxformer.save_pretrained(model, params, str(tmp_path))
    hf = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
    head = hf.lm_head.weight.detach().numpy()
    np.testing.assert_array_equal(head, np.asarray(params["output"]["kernel"]).T)
    assert not np.allclose(head, hf.shared.weight.detach().numpy())
    ref = s2s.hf_forward(hf, ids, np.ones_like(ids), ids).logits.numpy()
    ours = model.apply({"params": params}, ids, None, ids).logits
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-5)
    model2, params2 = jaxformer.from_pretrained(str(tmp_path))
    assert model2.cfg == model.cfg
    np.testing.assert_array_equal(params2["output"]["kernel"], params["output"]["kernel"])
