"""Decoding: cache vs recompute, greedy, beam search properties, sampling, bad input."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.inference.decoding import filter_logits, generate, length_penalty
from jaxformer.models.transformer import Transformer, transformer_config

V, PAD, EOS, L = 16, 0, 1, 6


@pytest.fixture(scope="module")
def setup():
    cfg = transformer_config(
        "nano",
        vocab_size=V,
        max_position_embeddings=12,
        num_decoder_layers=2,
        final_logits_bias=True,
        initializer_range=0.5,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
    )
    model = Transformer(cfg)
    rs = np.random.RandomState(0)
    x = rs.randint(2, V, (4, 5)).astype(np.int32)
    mask = np.ones_like(x)
    mask[1, 3:] = 0
    mask[3, 1:] = 0
    x[mask == 0] = PAD
    params = nn.unbox(model.init(jax.random.key(0), x, mask, x)["params"])
    # A mild EOS preference, so some sequences end inside max_length and some do not.
    params["final_logits_bias"] = params["final_logits_bias"].at[EOS].set(2.5)
    return model, params, x, mask


def _seq_logp(model, params, x, mask, seqs):
    """Teacher-forced log-probability of each generated sequence up to and including EOS,
    and its length. seqs: [b, L] (pad after EOS)."""
    dec_in = np.concatenate([np.full_like(seqs[:, :1], PAD), seqs[:, :-1]], axis=1)
    logits = model.apply({"params": params}, x, mask, dec_in).logits
    logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), seqs[..., None], -1)[..., 0]
    is_eos = seqs == EOS
    length = np.where(is_eos.any(1), is_eos.argmax(1) + 1, seqs.shape[1])
    keep = np.arange(seqs.shape[1])[None] < length[:, None]
    return (logp * keep).sum(1), length


@pytest.fixture(scope="module")
def greedy(setup):
    model, params, x, mask = setup
    return generate(model, params, x, mask, max_length=L)


def test_greedy_cache_equals_recompute(setup, greedy):
    model, params, x, mask = setup
    slow = generate(model, params, x, mask, max_length=L, use_cache=False)
    np.testing.assert_array_equal(greedy.sequences, slow.sequences)
    np.testing.assert_allclose(greedy.scores, slow.scores, atol=1e-5)


def test_greedy_picks_argmax_and_scores_are_log_likelihoods(setup, greedy):
    model, params, x, mask = setup
    seqs = np.asarray(greedy.sequences)
    assert seqs.shape == (4, L)
    dec_in = np.concatenate([np.full_like(seqs[:, :1], PAD), seqs[:, :-1]], axis=1)
    logits = np.asarray(model.apply({"params": params}, x, mask, dec_in).logits)
    logp, length = _seq_logp(model, params, x, mask, seqs)
    for r in range(4):
        n = length[r]
        np.testing.assert_array_equal(seqs[r, :n], logits[r, :n].argmax(-1))
        assert (seqs[r, n:] == PAD).all()  # nothing after EOS
    np.testing.assert_allclose(greedy.scores, logp, atol=1e-4)
    assert (length < L).any() and (length == L).any()  # both kinds of rows are exercised


def test_batched_equals_one_by_one(setup, greedy):
    model, params, x, mask = setup
    r, n = 1, int(mask[1].sum())  # a padded row decoded alone, padding trimmed
    one = generate(model, params, x[r : r + 1, :n], mask[r : r + 1, :n], max_length=L)
    np.testing.assert_array_equal(one.sequences[0], greedy.sequences[r])


def test_beam_width_one_is_greedy(setup, greedy):
    model, params, x, mask = setup
    alpha = 1.0
    beam = generate(model, params, x, mask, max_length=L, num_beams=1, length_penalty_alpha=alpha)
    np.testing.assert_array_equal(beam.sequences, greedy.sequences)
    # The beam-search code path itself at width 1 (bypassing the greedy dispatch):
    from jaxformer.inference import decoding as d

    opts = d._Options(L, 1, alpha, False, 1.0, 0, 1.0, EOS, PAD, PAD, True)
    enc = model.apply({"params": params}, x, mask, method="encode")
    out = jax.jit(lambda p: d._beam_search(model, p, enc, jnp.asarray(mask), opts))(params)
    np.testing.assert_array_equal(out.sequences, greedy.sequences)


@pytest.fixture(scope="module")
def beam4(setup):
    model, params, x, mask = setup
    return generate(model, params, x, mask, max_length=L, num_beams=4, length_penalty_alpha=0.6)


def test_beam_scores_sorted_and_finished_beams_never_extended(setup, beam4):
    model, params, x, mask = setup
    scores = np.asarray(beam4.beam_scores)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    seqs = np.asarray(beam4.beam_sequences)  # [b, k, L]
    b, k, _ = seqs.shape
    flat = seqs.reshape(b * k, L)
    logp, length = _seq_logp(model, params, np.repeat(x, k, 0), np.repeat(mask, k, 0), flat)
    # Pad after EOS, and the score is that of the sequence ending at its EOS: an extended
    # finished beam would carry more tokens or more log-probability terms.
    for row, n in zip(flat, length):
        assert (row[n:] == PAD).all()
    np.testing.assert_allclose(
        scores.reshape(-1), logp / np.asarray(length_penalty(length, 0.6)), atol=1e-4
    )
    assert (seqs == EOS).any()
    # Beams are distinct hypotheses.
    for r in range(b):
        assert len({tuple(s) for s in seqs[r]}) == k
    np.testing.assert_array_equal(beam4.sequences, seqs[:, 0])


def test_beam_cache_equals_recompute(setup, beam4):
    model, params, x, mask = setup
    slow = generate(model, params, x, mask, max_length=L, num_beams=4, use_cache=False)
    np.testing.assert_array_equal(beam4.beam_sequences, slow.beam_sequences)
    np.testing.assert_allclose(beam4.beam_scores, slow.beam_scores, atol=1e-5)


def test_beam_at_least_as_good_as_greedy(setup, greedy, beam4):
    model, params, x, mask = setup
    logp, length = _seq_logp(model, params, x, mask, np.asarray(greedy.sequences))
    greedy_scores = logp / np.asarray(length_penalty(length, 0.6))
    assert (np.asarray(beam4.scores) >= greedy_scores - 1e-5).all()


def test_beam_as_wide_as_search_space_finds_brute_force_best(setup):
    """Only 3 tokens are reachable (the bias shuts the rest): with 16 beams over 4 steps no
    hypothesis is ever pruned, so beam search must return the exact best of all sequences."""
    model, params, x, mask = setup
    allowed = [EOS, 4, 5]
    bias = np.full((V,), -1e9, np.float32)
    bias[allowed] = np.asarray(params["final_logits_bias"])[allowed]
    params = {**params, "final_logits_bias": jnp.asarray(bias)}
    max_len, alpha = 4, 1.0
    out = generate(
        model, params, x, mask, max_length=max_len, num_beams=V, length_penalty_alpha=alpha
    )
    # All sequences over `allowed` that end at their first EOS or run to max_len.
    cands = []
    for n in range(1, max_len + 1):
        for body in itertools.product([4, 5], repeat=n - 1):
            cands.append(list(body) + [EOS] + [PAD] * (max_len - n))
        if n == max_len:
            cands += [list(c) for c in itertools.product([4, 5], repeat=n)]
    cands = np.array(cands, np.int32)
    for r in range(x.shape[0]):
        xr, mr = np.repeat(x[r : r + 1], len(cands), 0), np.repeat(mask[r : r + 1], len(cands), 0)
        logp, length = _seq_logp(model, params, xr, mr, cands)
        scores = logp / np.asarray(length_penalty(length, alpha))
        best = int(np.argmax(scores))
        np.testing.assert_array_equal(out.sequences[r], cands[best])
        np.testing.assert_allclose(out.scores[r], scores[best], atol=1e-4)


def test_early_stop_when_every_beam_ended(setup):
    model, params, x, mask = setup
    params = {**params, "final_logits_bias": params["final_logits_bias"].at[EOS].set(50.0)}
    g = generate(model, params, x, mask, max_length=L)
    assert int(g.steps) == 1 and (np.asarray(g.sequences)[:, 0] == EOS).all()
    b = generate(model, params, x, mask, max_length=L, num_beams=4)
    # Slot 0 ends at step 1; the others end as soon as EOS is their best continuation.
    assert int(b.steps) < L and (np.asarray(b.sequences)[:, 0] == EOS).all()


# -- sampling ------------------------------------------------------------------------------------
def test_filter_logits():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(filter_logits(logits, top_k=2)).sum() == 2
    assert np.isfinite(filter_logits(logits, top_p=0.7)).sum() == 2  # 0.5 < 0.7 <= 0.8
    assert np.isfinite(filter_logits(logits, top_p=0.8)).sum() == 2
    assert np.isfinite(filter_logits(logits, top_p=0.81)).sum() == 3
    assert np.isfinite(filter_logits(logits, top_p=1e-6)).sum() == 1  # the argmax stays


def test_sampling(setup, greedy):
    model, params, x, mask = setup
    kw = {"max_length": L, "do_sample": True, "temperature": 1.5}
    a = generate(model, params, x, mask, rng=jax.random.key(1), top_k=3, **kw)
    a2 = generate(model, params, x, mask, rng=jax.random.key(1), top_k=3, **kw)
    c = generate(model, params, x, mask, rng=jax.random.key(2), top_k=3, **kw)
    np.testing.assert_array_equal(a.sequences, a2.sequences)  # same key, same draw
    assert not np.array_equal(a.sequences, c.sequences)
    # Every sampled token is among the top 3 of its step.
    seqs = np.asarray(a.sequences)
    dec_in = np.concatenate([np.full_like(seqs[:, :1], PAD), seqs[:, :-1]], axis=1)
    logits = np.asarray(model.apply({"params": params}, x, mask, dec_in).logits)
    _, length = _seq_logp(model, params, x, mask, seqs)
    top3 = np.argsort(-logits, -1)[..., :3]
    for r in range(4):
        for t in range(length[r]):
            assert seqs[r, t] in top3[r, t]
    # A vanishing top_p keeps only the most likely token: greedy.
    s = generate(model, params, x, mask, rng=jax.random.key(3), top_k=3, top_p=1e-6, **kw)
    np.testing.assert_array_equal(s.sequences, greedy.sequences)


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"input_ids": np.zeros((1, 13), np.int32), "attention_mask": None},
            "exceeds the model's max_length=12",
        ),
        ({"input_ids": np.zeros((0, 5), np.int32), "attention_mask": None}, "empty batch"),
        ({"num_beams": V + 1}, "num_beams"),
        ({"eos_token_id": V}, "eos_token_id"),
        ({"eos_token_id": -1}, "eos_token_id"),
        ({"max_length": 13}, "max_length"),
        ({"do_sample": True}, "PRNG key"),
        ({"do_sample": True, "rng": jax.random.key(0), "top_p": 0.0}, "top_p"),
        ({"input_ids": np.full((1, 5), V, np.int32), "attention_mask": None}, "source vocabulary"),
    ],
)
def test_bad_inputs(setup, change, match):
    model, params, x, mask = setup
    kw = {"input_ids": x, "attention_mask": mask, "max_length": L, **change}
    with pytest.raises(ValueError, match=match):
        generate(model, params, **kw)
