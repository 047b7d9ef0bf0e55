"""Top-level entry points: `jaxformer.from_pretrained` / `save_pretrained` route the
encoder-decoder family to Marian, and `jaxformer.generate` is the decoding entry."""

import numpy as np
import pytest
import torch
import transformers

import jaxformer as jf


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    cfg = transformers.MarianConfig(
        vocab_size=40,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=32,
        activation_function="swish",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        forced_eos_token_id=None,
        init_std=0.3,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("marian")
    transformers.MarianMTModel(cfg).eval().save_pretrained(path)
    return str(path)


def hf_logits(path, src, tgt):
    hf = transformers.MarianMTModel.from_pretrained(path).eval()
    with torch.no_grad():
        return hf(input_ids=torch.tensor(src), decoder_input_ids=torch.tensor(tgt)).logits.numpy()


def test_from_pretrained_routes_marian_and_save_pretrained_writes_it_back(marian_dir, tmp_path):
    model, params = jf.from_pretrained(marian_dir)
    assert isinstance(model, jf.Transformer)
    src = np.array([[5, 6, 7, 1]], np.int32)
    tgt = np.array([[0, 9, 12]], np.int32)
    ours = model.apply({"params": params}, src, decoder_input_ids=tgt).logits
    np.testing.assert_allclose(ours, hf_logits(marian_dir, src, tgt), atol=1e-4)
    jf.save_pretrained(model, params, str(tmp_path / "back"))
    np.testing.assert_allclose(hf_logits(str(tmp_path / "back"), src, tgt), ours, atol=1e-4)
    with pytest.raises(ValueError, match="encoder-decoder"):
        jf.from_pretrained(marian_dir, head="mlm")


def test_generate_is_the_top_level_decoding_entry(marian_dir):
    model, params = jf.from_pretrained(marian_dir)
    out = jf.generate(model, params, np.array([[5, 6, 7, 1]], np.int32), max_length=5)
    assert out.sequences.shape == (1, 5)
