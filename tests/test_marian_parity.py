"""Parity with transformers' MarianMTModel (random init from a config, float32, eval mode),
with unequal encoder and decoder head counts and feed-forward widths."""

import jax
import numpy as np
import pytest

import torch
import transformers

import jaxformer
from jaxformer.convert import marian as conv
from jaxformer.models.transformer import Transformer
import seq2seq_reference as s2s

PAD, EOS, VOCAB, MAX_NEW = 3, 2, 64, 10
# (encoder heads, decoder heads, encoder ffn, decoder ffn) per variant
SIDES = {True: (4, 2, 64, 40), False: (2, 8, 48, 72)}


def _hf_model(tie: bool, seed: int):
    eh, dh, ef, df = SIDES[tie]
    cfg = transformers.MarianConfig(
        vocab_size=VOCAB,
        decoder_vocab_size=VOCAB if tie else 48,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=eh,
        decoder_attention_heads=dh,
        encoder_ffn_dim=ef,
        decoder_ffn_dim=df,
        max_position_embeddings=40,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        forced_eos_token_id=EOS,  # as in the converted OPUS checkpoints (there eos = 0)
        init_std=0.3,
        share_encoder_decoder_embeddings=tie,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(seed)
    model = transformers.MarianMTModel(cfg).eval()
    with torch.no_grad():  # a non-zero logits bias, so its mapping is checked too
        model.final_logits_bias.normal_()
        model.final_logits_bias[0, EOS] += 1.5  # some rows end early
        model.final_logits_bias[0, PAD] += 6.0  # pad would win often, were it not barred
    model.generation_config.bad_words_ids = [[PAD]]  # as in the OPUS checkpoints
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
    cfg = conv.config_from_marian(hf.config, hf.generation_config)
    return s2s.converted(hf, cfg, Transformer, conv.params_from_marian_state_dict)


def test_config_mapping(pair):
    hf, model, params = pair
    cfg = model.cfg
    assert cfg.position_layout == "halves" and cfg.layer_norm_eps == 1e-5 and not cfg.pre_ln
    assert cfg.final_logits_bias and cfg.scale_embedding and cfg.hidden_act == "swish"
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.decoder_start_token_id) == (PAD, EOS, PAD)
    assert cfg.forced_eos_token_id == EOS and cfg.suppress_tokens == (PAD,)
    assert cfg.share_embeddings == hf.config.share_encoder_decoder_embeddings
    eh, dh, ef, df = SIDES[cfg.share_embeddings]
    assert (cfg.heads(), cfg.heads(decoder=True), cfg.ffn_dim(), cfg.ffn_dim(True)) == SIDES[
        cfg.share_embeddings
    ]
    dec = params["decoder"]["layer_0"]
    assert dec["cross_attention"]["query"]["kernel"].shape == (32, dh, 32 // dh)
    assert dec["mlp"]["wi"]["kernel"].shape == (32, df)
    assert params["encoder"]["layer_0"]["mlp"]["wi"]["kernel"].shape == (32, ef)


def test_encoder_states_and_logits_match(pair):
    hf, model, params = pair
    x, mask, y, ymask = _inputs()
    ref = s2s.hf_forward(hf, x, mask, y, ymask)
    out = model.apply({"params": params}, x, mask, y, ymask)
    enc, logits = s2s.max_diffs(out, ref, mask, ymask)  # padded positions are not compared
    print(f"max |diff| encoder {enc:.2e} logits {logits:.2e}")
    assert enc < 1e-4 and logits < 1e-4


@pytest.mark.parametrize("num_beams", [1, 4], ids=["greedy", "beam4"])
def test_generate_matches_transformers(pair, num_beams):
    """Marian's defaults (start from pad, EOS forced at the length limit, length penalty 1)
    and its checkpoints' ban on the pad id."""
    hf, model, params = pair
    x, mask, _, _ = _inputs(seed=1)
    ref, ours = s2s.both_generate(hf, model, params, x, mask, MAX_NEW, num_beams, PAD)
    np.testing.assert_array_equal(ours, ref)
    assert len(set(map(tuple, ours))) > 1  # the check is not vacuous
    assert (ours[:, -1] == EOS).any()  # the forced EOS at the limit is exercised
    if num_beams == 1:  # the ban is exercised: without it pad is generated
        free = jaxformer.generate(model, params, x, mask, max_length=MAX_NEW, suppress_tokens=())
        assert (np.asarray(free.sequences) != ours).any()


def test_save_and_load_round_trip(pair, tmp_path):
    hf, model, params = pair
    x, mask, y, _ = _inputs(seed=2)

    def logits(m):
        return s2s.hf_forward(m, x, mask, y).logits.numpy()

    # ours -> HF directory -> MarianMTModel: same logits and the same generation settings;
    # HF save_pretrained -> ours: the same config and parameters
    hf2, (model3, params3) = s2s.saved_both_ways(hf, model, params, str(tmp_path))
    np.testing.assert_allclose(logits(hf), logits(hf2), atol=1e-6)
    assert hf2.generation_config.forced_eos_token_id == EOS
    assert hf2.generation_config.bad_words_ids == [[PAD]]
    assert hf2.config.decoder_attention_heads == hf.config.decoder_attention_heads
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
    with pytest.raises(ValueError, match=r"bad_words_ids=\[\[5, 6\]\] bans a multi-token"):
        conv.config_from_marian(_hf_model(True, 0).config, {"bad_words_ids": [[5, 6]]})
    with pytest.raises(ValueError, match="decoder_num_heads=5"):
        conv.config_from_marian(_hf_model(True, 0).config, decoder_num_heads=5)
