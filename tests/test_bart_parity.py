"""Parity with transformers' BartForConditionalGeneration and MBartForConditionalGeneration
(random tiny models with unequal encoder/decoder heads and FFN widths, float32, eval)."""

import numpy as np
import pytest

import torch
import transformers

import jaxformer
from jaxformer.convert import bart as conv
from jaxformer.models.bart import Bart, BartConfig
from jaxformer.models.configs import ConfigError
import seq2seq_reference as s2s

PAD, EOS, VOCAB, MAX_NEW, LANG = 1, 2, 97, 9, 50


def _hf_model(kind: str):
    mbart = kind == "mbart"
    cls = transformers.MBartConfig if mbart else transformers.BartConfig
    cfg = cls(
        vocab_size=VOCAB,
        d_model=40,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=5,
        encoder_ffn_dim=56,
        decoder_ffn_dim=44,
        max_position_embeddings=24,
        scale_embedding=True,
        init_std=0.3,
        forced_bos_token_id=LANG if mbart else None,
    )
    model_cls = (
        transformers.MBartForConditionalGeneration
        if mbart
        else transformers.BartForConditionalGeneration
    )
    torch.manual_seed(0)
    model = model_cls(cfg).eval()
    if mbart:  # transformers 5 keeps the forced language token in the generation config
        model.generation_config.forced_bos_token_id = LANG
    with torch.no_grad():  # norms and the logits bias away from their init values
        model.final_logits_bias.normal_()
        model.final_logits_bias[0, EOS] += 1.0  # some rows end early
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                p.uniform_(0.5, 1.5) if name.endswith("weight") else p.normal_(0.0, 0.1)
    return model


def _inputs(seed=0, src_len=11):
    return s2s.padded_batch(seed, src_len, VOCAB, low=3, pad=PAD, start=EOS)


@pytest.fixture(scope="module", params=["bart", "mbart"])
def pair(request):
    hf = _hf_model(request.param)
    cfg = BartConfig.from_hf(hf.config, hf.generation_config)
    return s2s.converted(hf, cfg, Bart, conv.params_from_bart_state_dict)


def test_config_mapping(pair):
    hf, model, _ = pair
    cfg = model.cfg
    assert cfg.pre_ln == (hf.config.model_type == "mbart")
    assert (cfg.encoder_attention_heads, cfg.decoder_attention_heads) == (4, 5)
    assert (cfg.encoder_ffn_dim, cfg.decoder_ffn_dim) == (56, 44)
    assert cfg.forced_eos_token_id == EOS
    assert cfg.forced_bos_token_id == (LANG if cfg.pre_ln else None)
    assert BartConfig.from_hf(cfg.to_hf()) == cfg
    if cfg.pre_ln:
        assert cfg.decoder_start_token_id == hf.config.bos_token_id


def test_unsupported_variant_and_length_are_named(pair):
    _, model, params = pair
    with pytest.raises(ConfigError, match="activation_dropout=0.1"):
        BartConfig.from_hf({"model_type": "bart", "activation_dropout": 0.1})
    x = np.full((1, 25), 5)
    with pytest.raises(ValueError, match="max_position_embeddings=24"):
        model.apply({"params": params}, x, None, x[:, :3])
    with pytest.raises(ValueError, match="max_length=24"):
        jaxformer.generate(model, params, x)


def test_encoder_states_and_logits_match(pair):
    hf, model, params = pair
    x, mask, y, ymask = _inputs()
    ref = s2s.hf_forward(hf, x, mask, y, ymask)
    out = model.apply({"params": params}, x, mask, y, ymask)
    enc, logits = s2s.max_diffs(out, ref, mask, ymask)
    print(f"max |diff| encoder {enc:.2e} logits {logits:.2e}")
    assert enc < 1e-4 and logits < 1e-4


@pytest.mark.parametrize("num_beams", [1, 4], ids=["greedy", "beam4"])
def test_generate_matches_transformers(pair, num_beams):
    """The family's defaults: start token, forced EOS at the limit, mBART's forced BOS."""
    hf, model, params = pair
    x, mask, _, _ = _inputs(seed=1)
    ref, ours = s2s.both_generate(hf, model, params, x, mask, MAX_NEW, num_beams, PAD)
    np.testing.assert_array_equal(ours, ref)
    assert len(set(map(tuple, ours))) > 1
    assert (ours[:, -1] == EOS).any()  # the forced EOS at the limit is exercised
    if model.cfg.pre_ln:
        assert (ours[:, 0] == LANG).all()  # mBART's forced language token


def test_save_and_load_round_trip(pair, tmp_path):
    hf, model, params = pair
    x, mask, y, _ = _inputs(seed=2)
    theirs, ours, (model3, _) = s2s.round_trip_logits(hf, model, params, x, mask, y, str(tmp_path))
    np.testing.assert_allclose(*theirs, atol=1e-6)
    assert model3.cfg == model.cfg
    np.testing.assert_allclose(*ours, atol=1e-6)


@pytest.mark.parametrize("num_beams", [1, 4], ids=["greedy", "beam4"])
def test_min_length_and_no_repeat_ngram_match_transformers(pair, num_beams):
    hf, model, params = pair
    x, mask, _, _ = _inputs(seed=1)
    gc = s2s.generation_config(hf, num_beams, MAX_NEW, min_new_tokens=5, no_repeat_ngram_size=2)
    ref = s2s.hf_generate(hf, x, mask, gc, PAD)
    kw = dict(max_length=MAX_NEW, num_beams=num_beams, length_penalty_alpha=1.0)
    ours = jaxformer.generate(
        model,
        params,
        x,
        mask,
        beam_style="transformers",
        min_length=5,
        no_repeat_ngram_size=2,
        **kw,
    ).sequences
    np.testing.assert_array_equal(np.asarray(ours), ref)
    plain = np.asarray(
        jaxformer.generate(model, params, x, mask, beam_style="transformers", **kw).sequences
    )
    assert not np.array_equal(plain, ref)  # the options changed the output
    for row in np.asarray(ours):  # and the properties hold
        ids = [model.cfg.decoder_start_token_id] + [t for t in row if t != PAD]
        assert EOS not in ids[1:6]
        grams = [tuple(ids[j : j + 2]) for j in range(len(ids) - 1)]
        assert len(grams) == len(set(grams))


@pytest.mark.parametrize("num_beams", [1, 4], ids=["greedy", "beam4"])
def test_a_checkpoints_generation_config_gives_transformers_ids(pair, num_beams):
    """`generation_options` turns the generation_config.json transformers would use into
    `generate` arguments: the same ids, with nothing passed by hand."""
    hf, model, params = pair
    x, mask, _, _ = _inputs(seed=2)
    gc = s2s.generation_config(hf, num_beams, MAX_NEW, min_new_tokens=4, no_repeat_ngram_size=3)
    ref = s2s.hf_generate(hf, x, mask, gc, PAD)
    options = jaxformer.generation_options(gc.to_dict())
    assert options["max_length"] == MAX_NEW and options["min_length"] == 4
    ours = jaxformer.generate(model, params, x, mask, **options).sequences
    np.testing.assert_array_equal(np.asarray(ours), ref)


@pytest.mark.parametrize(
    "key, value",
    [("repetition_penalty", 1.3), ("early_stopping", True), ("bad_words_ids", [[5, 6]])],
)
def test_an_unsupported_generation_option_is_named(key, value):
    with pytest.raises(ValueError, match=f"generation option {key}="):
        jaxformer.generation_options({"num_beams": 4, key: value})
    with pytest.raises(TypeError, match="repetition_penalty"):  # and as a keyword argument
        jaxformer.generate(None, None, np.ones((1, 3), np.int32), repetition_penalty=1.3)
