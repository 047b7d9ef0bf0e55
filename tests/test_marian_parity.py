"""Parity with transformers' MarianMTModel (random init from a config, float32, eval mode)."""

import jax
import numpy as np
import pytest

import torch
import transformers

from jaxformer.convert import marian as conv
from jaxformer.inference.decoding import generate
from jaxformer.models.transformer import Transformer

PAD, EOS, VOCAB, MAX_NEW = 3, 2, 64, 10


def _hf_model(tie: bool, seed: int):
    cfg = transformers.MarianConfig(
        vocab_size=VOCAB,
        decoder_vocab_size=VOCAB if tie else 48,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=40,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        forced_eos_token_id=None,
        init_std=0.3,
        share_encoder_decoder_embeddings=tie,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    model = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():  # a non-zero logits bias, so its mapping is checked too
        model.final_logits_bias.normal_()
        model.final_logits_bias[0, EOS] += 1.5  # some rows end early
    return model


def _inputs(seed=0):
    rs = np.random.RandomState(seed)
    x = rs.randint(4, VOCAB, (5, 9))
    mask = np.ones_like(x)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    mask[4, 1:] = 0
    x[mask == 0] = PAD
    y = rs.randint(4, 48, (5, 7))
    y[:, 0] = PAD
    ymask = np.ones_like(y)
    ymask[3, 5:] = 0
    return x, mask, y, ymask


@pytest.fixture(scope="module", params=[True, False], ids=["tied", "untied"])
def pair(request):
    hf = _hf_model(tie=request.param, seed=0)
    cfg = conv.config_from_marian(hf.config)
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    return hf, Transformer(cfg), conv.params_from_marian_state_dict(state, cfg)


def test_config_mapping(pair):
    hf, model, _ = pair
    cfg = model.cfg
    assert cfg.position_layout == "halves" and cfg.layer_norm_eps == 1e-5 and not cfg.pre_ln
    assert cfg.final_logits_bias and cfg.scale_embedding and cfg.activation == "swish"
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (PAD, EOS, PAD)
    assert cfg.share_embeddings == hf.config.share_encoder_decoder_embeddings


def test_encoder_states_and_logits_match(pair):
    hf, model, params = pair
    x, mask, y, ymask = _inputs()
    with torch.no_grad():
        ref = hf(
            input_ids=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(y),
            decoder_attention_mask=torch.tensor(ymask),
        )
    out = model.apply({"params": params}, x, mask, y, ymask)
    real = mask.astype(bool)  # padded encoder positions are not compared
    np.testing.assert_allclose(
        np.asarray(out.encoder_hidden_state)[real],
        ref.encoder_last_hidden_state.numpy()[real],
        atol=1e-4,
        rtol=0,
    )
    dreal = ymask.astype(bool)
    np.testing.assert_allclose(
        np.asarray(out.logits)[dreal], ref.logits.numpy()[dreal], atol=1e-4, rtol=0
    )


def test_greedy_generate_matches_transformers(pair):
    hf, model, params = pair
    x, mask, _, _ = _inputs(seed=1)
    # Deterministic greedy in HF: no forced EOS (Marian's config defaults to 0), no penalties.
    gc = transformers.GenerationConfig(
        num_beams=1,
        do_sample=False,
        max_new_tokens=MAX_NEW,
        min_new_tokens=0,
        decoder_start_token_id=PAD,
        eos_token_id=EOS,
        pad_token_id=PAD,
        forced_eos_token_id=None,
        forced_bos_token_id=None,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        bad_words_ids=None,
    )
    with torch.no_grad():
        ref = hf.generate(
            input_ids=torch.tensor(x), attention_mask=torch.tensor(mask), generation_config=gc
        ).numpy()[:, 1:]  # drop the start token
    ref = np.pad(ref, ((0, 0), (0, MAX_NEW - ref.shape[1])), constant_values=PAD)
    ours = np.asarray(generate(model, params, x, mask, max_length=MAX_NEW).sequences)
    np.testing.assert_array_equal(ours, ref)
    assert len(set(map(tuple, ours))) > 1  # the check is not vacuous


def test_save_and_load_round_trip(pair, tmp_path):
    hf, model, params = pair
    x, mask, y, _ = _inputs(seed=2)
    # ours -> HF directory -> MarianMTModel
    conv.marian_save_pretrained(model, params, str(tmp_path / "ours"))
    hf2 = transformers.MarianMTModel.from_pretrained(str(tmp_path / "ours")).eval()
    with torch.no_grad():
        a = hf(
            input_ids=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(y),
        ).logits.numpy()
        b = hf2(
            input_ids=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(y),
        ).logits.numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)
    # HF save_pretrained -> ours
    hf.save_pretrained(str(tmp_path / "hf"))
    model3, params3 = conv.marian_from_pretrained(str(tmp_path / "hf"))
    assert model3.cfg == model.cfg
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(params3)
    for p, q in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(params3)):
        np.testing.assert_array_equal(p, q)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        conv.marian_from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not 'marian'"):
        conv.marian_from_pretrained(str(tmp_path))
