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


def greedy_reference(path, src, max_length, min_length, eos=1, start=0):
    """(ids, sum of log-probabilities) of greedy decoding by argmax over transformers' logits
    of the whole prefix at every step (no cache), in float64, EOS barred for `min_length`."""
    hf = transformers.MarianMTModel.from_pretrained(path).eval()
    prefix, score = [start], 0.0
    for t in range(max_length):
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor(src), decoder_input_ids=torch.tensor([prefix]))
        z = logits.logits[0, -1].double().numpy()
        if t < min_length:
            z[eos] = -np.inf
        logp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        prefix.append(int(z.argmax()))
        score += logp[prefix[-1]]
        if prefix[-1] == eos:
            break
    return prefix[1:], score


def test_generate_is_the_top_level_decoding_entry_and_decodes_greedily(marian_dir):
    """`jf.generate` on a padded batch equals argmax decoding with transformers' forward on
    each unpadded source: the ids up to EOS, padding after it, and the summed log-probs."""
    model, params = jf.from_pretrained(marian_dir)
    src = np.array([[5, 6, 7, 1], [9, 3, 1, 0]], np.int32)
    lengths = [4, 3]
    mask = (np.arange(4)[None] < np.array(lengths)[:, None]).astype(np.int32)
    out = jf.generate(model, params, src, mask, max_length=8, min_length=5)
    seqs, scores = np.asarray(out.sequences), np.asarray(out.scores)
    for row, n in enumerate(lengths):
        ids, score = greedy_reference(marian_dir, src[row : row + 1, :n], 8, 5)
        assert seqs[row, : len(ids)].tolist() == ids
        assert (seqs[row, len(ids) :] == 0).all()  # pad after EOS
        np.testing.assert_allclose(scores[row], score, rtol=1e-5)
