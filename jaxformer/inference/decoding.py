"""Compiled decoding for the encoder-decoder Transformer: greedy, beam search, sampling.

Every strategy is one `jax.jit` program: the encoder runs once, then a `lax.while_loop`
feeds one token per step through the decoder's key/value cache (or, with
`use_cache=False`, re-runs the decoder over the whole prefix buffer: the benchmark
baseline). The loop stops at `max_length` or as soon as every sequence (every beam) has
emitted the end-of-sequence id.

Sequences are `[batch, max_length]` generated ids: the start token is not included, the
EOS id is, and positions after it hold the pad id.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["GenerateOutput", "filter_logits", "generate", "generation_options", "length_penalty"]

NEG_INF = -jnp.inf


@flax.struct.dataclass
class GenerateOutput:
    """sequences: [batch, max_length] int32; scores: [batch] float32 (greedy and sampling:
    the summed log-probabilities of the tokens up to and including EOS; beam search: that sum
    divided by the length penalty). Beam search also returns all beams, best first:
    beam_sequences [batch, num_beams, max_length], beam_scores [batch, num_beams].
    steps: the number of decoder steps run (< max_length when every sequence ended early)."""

    sequences: jnp.ndarray
    scores: jnp.ndarray
    steps: jnp.ndarray
    beam_sequences: jnp.ndarray | None = None
    beam_scores: jnp.ndarray | None = None


class _Options(NamedTuple):  # static: one compiled program per distinct value
    max_length: int
    num_beams: int
    alpha: float
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    eos: int
    pad: int
    start: int
    use_cache: bool
    beam_style: str = "jaxformer"
    forced_bos: int = -1  # token forced at the first step (mBART's language); -1: none
    forced_eos: int = -1  # token forced at the last step (max_length); -1: none
    min_length: int = 0  # EOS is barred before this many generated tokens
    no_repeat_ngram: int = 0  # n > 0: no n-gram (start token included) occurs twice
    vocab: int = 0  # the target vocabulary (for the n-gram ban)
    suppress: tuple = ()  # token ids barred at every step (Marian bars its pad id)


def _banned_ngrams(seqs, i, opts: _Options):
    """[B, V] bool: the tokens that would repeat an n-gram of (start, seqs[:, :i]) at step i."""
    n, (B, L) = opts.no_repeat_ngram, seqs.shape
    full = jnp.concatenate([jnp.full((B, 1), opts.start, seqs.dtype), seqs], axis=1)  # [B, L+1]
    full = jnp.pad(full, ((0, 0), (0, n)))
    starts = jnp.arange(L + 1)
    grams = jnp.stack([full[:, m : m + L + 1] for m in range(n)], axis=-1)  # [B, L+1, n]
    last = lax.dynamic_slice_in_dim(full, jnp.maximum(i - n + 2, 0), n - 1, axis=1)  # [B, n-1]
    match = jnp.all(grams[:, :, : n - 1] == last[:, None, :], axis=-1)
    match = match & (starts + n - 1 <= i)[None, :] & (i + 2 >= n)  # whole n-gram seen
    rows = jnp.broadcast_to(jnp.arange(B)[:, None], match.shape)
    V = opts.vocab
    return jnp.zeros((B, V), bool).at[rows, jnp.clip(grams[..., n - 1], 0, V - 1)].max(match)


def _process(scores, seqs, i, opts: _Options):
    """transformers' logits processors, in its order: min length, no-repeat n-gram, barred
    tokens, forced BOS / EOS. scores: [B, V] logits or log-probabilities; seqs: [B, L]
    generated ids."""
    if opts.min_length > 0:
        is_eos = jnp.arange(scores.shape[-1]) == opts.eos
        scores = jnp.where(is_eos & (i < opts.min_length), NEG_INF, scores)
    if opts.no_repeat_ngram > 0:
        scores = jnp.where(_banned_ngrams(seqs, i, opts), NEG_INF, scores)
    if opts.suppress:
        barred = jnp.isin(jnp.arange(scores.shape[-1]), jnp.asarray(opts.suppress))
        scores = jnp.where(barred, NEG_INF, scores)
    return _force(scores, i, opts)


def _force(scores, i, opts: _Options):
    """transformers' forced BOS / EOS processors: at the first (last) step every score but the
    forced token's becomes -inf and the forced one 0. scores: [..., V]."""
    for tok, step in ((opts.forced_bos, 0), (opts.forced_eos, opts.max_length - 1)):
        if tok >= 0:
            only = jnp.where(jnp.arange(scores.shape[-1]) == tok, 0.0, NEG_INF)
            scores = jnp.where(i == step, only.astype(scores.dtype), scores)
    return scores


def length_penalty(length, alpha: float):
    """Wu et al. (2016): ((5 + |Y|) / 6) ** alpha."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def filter_logits(logits, top_k: int = 0, top_p: float = 1.0):
    """Sets to -inf all logits outside the top-k and outside the smallest set whose
    probability reaches top_p (the most likely token always stays). logits: [..., vocab]."""
    if top_k > 0:
        kth = lax.top_k(logits, top_k)[0][..., -1:]  # [..., 1]
        logits = jnp.where(logits < kth, NEG_INF, logits)
    if top_p < 1.0:
        desc = -jnp.sort(-logits, axis=-1)  # [..., vocab]
        probs = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass above each
        kept = jnp.where(before < top_p, desc, jnp.inf)
        thresh = jnp.min(kept, axis=-1, keepdims=True)  # smallest kept
        logits = jnp.where(logits < thresh, NEG_INF, logits)
    return logits


# -- one decoder step ----------------------------------------------------------------------------
def _decoder_inputs(seqs, start: int):
    """[B, L] generated ids -> [B, L] decoder inputs (start, then the ids shifted right)."""
    return jnp.concatenate([jnp.full_like(seqs[:, :1], start), seqs[:, :-1]], axis=1)


def _step_fns(model, params, encoded, enc_mask, opts: _Options):
    """(init_cache(), logits_fn(cache, seqs [B, L], i, first) -> ([B, V] logits, cache))."""
    if not opts.use_cache:

        def logits_fn(cache, seqs, i, first):
            # Baseline: the whole fixed-size buffer through the decoder, keep row i.
            logits = model.apply(
                {"params": params},
                encoded,
                enc_mask,
                _decoder_inputs(seqs, opts.start),
                method="decode",
            )
            return lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False), cache

        return dict, logits_fn

    dec = model.clone(use_cache=True)

    def init_cache():
        # Shapes from an abstract call over the full length; the cache starts as zeros.
        fn = lambda p, e, m: dec.apply(
            {"params": p},
            e,
            m,
            jnp.zeros((e.shape[0], opts.max_length), jnp.int32),
            method="decode",
            mutable=["cache"],
        )[1]["cache"]
        shapes = jax.eval_shape(fn, params, encoded, enc_mask)
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def logits_fn(cache, seqs, i, first):
        ids = (
            jnp.full_like(seqs[:, :1], opts.start)
            if first
            else lax.dynamic_slice_in_dim(seqs, i - 1, 1, axis=1)
        )  # [B, 1]
        # The first step projects the encoder output into the cross-attention cache; later
        # steps reuse it.
        logits, upd = dec.apply(
            {"params": params, "cache": cache},
            encoded if first else None,
            enc_mask,
            ids,
            method="decode",
            use_cached_kv=not first,
            mutable=["cache"],
        )
        return logits[:, 0], upd["cache"]

    return init_cache, logits_fn


def _peeled_loop(body, cond, state):
    """Runs step 0 outside the loop (it fills the cross-attention cache), then the loop."""
    state = body(state, first=True)
    return lax.while_loop(cond, functools.partial(body, first=False), state)


# -- greedy and sampling -------------------------------------------------------------------------
def _greedy_or_sample(model, params, encoded, enc_mask, rng, opts: _Options):
    b = encoded.shape[0]
    init_cache, logits_fn = _step_fns(model, params, encoded, enc_mask, opts)

    def body(state, first):
        i, seqs, done, scores, cache = state
        logits, cache = logits_fn(cache, seqs, i, first)  # [b, V]
        logits = _process(logits, seqs, i, opts)
        logp = jax.nn.log_softmax(logits, axis=-1)
        if opts.do_sample:
            key = jax.random.fold_in(rng, i)
            tok = jax.random.categorical(
                key, filter_logits(logits / opts.temperature, opts.top_k, opts.top_p)
            )
        else:
            tok = jnp.argmax(logits, axis=-1)
        tok = jnp.where(done, opts.pad, tok).astype(jnp.int32)
        step_logp = jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
        scores = scores + jnp.where(done, 0.0, step_logp)
        seqs = lax.dynamic_update_slice_in_dim(seqs, tok[:, None], i, axis=1)
        return i + 1, seqs, done | (tok == opts.eos), scores, cache

    def cond(state):
        return (state[0] < opts.max_length) & ~jnp.all(state[2])

    state = (
        jnp.array(0, jnp.int32),
        jnp.full((b, opts.max_length), opts.pad, jnp.int32),
        jnp.zeros((b,), bool),
        jnp.zeros((b,), jnp.float32),
        init_cache(),
    )
    steps, seqs, _, scores, _ = _peeled_loop(body, cond, state)
    return GenerateOutput(sequences=seqs, scores=scores, steps=steps)


# -- beam search ---------------------------------------------------------------------------------
def _gather_beams(tree, parent, b: int, k: int):
    """Reorders every [b*k, ...] leaf by parent [b, k] (beam indices within each item)."""
    flat = (parent + jnp.arange(b)[:, None] * k).reshape(-1)  # [b*k]

    def gather(path, x):
        name = getattr(path[-1], "key", None)
        # Cross-attention keys/values are the same for all beams of an item: no reorder.
        if x.ndim == 0 or name in ("cross_key", "cross_value"):
            return x
        return jnp.take(x, flat, axis=0)

    return jax.tree_util.tree_map_with_path(gather, tree)


def _beams_output(steps, seqs, scores) -> GenerateOutput:
    """Beam 0 (the search keeps it best) as the answer, and every beam: [b, k, L] / [b, k]."""
    return GenerateOutput(
        sequences=seqs[:, 0],
        scores=scores[:, 0],
        steps=steps,
        beam_sequences=seqs,
        beam_scores=scores,
    )


def _beam_search(model, params, encoded, enc_mask, opts: _Options):
    """k slots per item, each alive or ended. Each step ranks, per item, every one-token
    extension of the alive slots together with the ended slots (carried unchanged, never
    extended) by length-normalized score, and keeps the top k. Stops when all slots ended."""
    k, L, V = opts.num_beams, opts.max_length, model.cfg.tgt_vocab_size
    b = encoded.shape[0] // k
    init_cache, logits_fn = _step_fns(model, params, encoded, enc_mask, opts)
    is_eos = jnp.arange(V) == opts.eos  # [V]

    def body(state, first):
        i, seqs, logp, ended, final, cache = state
        logits, cache = logits_fn(cache, seqs.reshape(b * k, L), i, first)  # [b*k, V]
        tok_logp = _process(
            jax.nn.log_softmax(logits, axis=-1), seqs.reshape(b * k, L), i, opts
        ).reshape(b, k, V)
        cand_logp = logp[..., None] + tok_logp  # [b, k, V]
        # All extensions at step i have length i + 1, so one divisor ranks them against
        # the ended slots' final scores.
        cand = jnp.where(ended[..., None], NEG_INF, cand_logp / length_penalty(i + 1, opts.alpha))
        carried = jnp.where(ended, final, NEG_INF)  # [b, k]
        top, idx = lax.top_k(jnp.concatenate([cand.reshape(b, k * V), carried], axis=1), k)
        is_carried = idx >= k * V
        parent = jnp.where(is_carried, idx - k * V, idx // V)  # [b, k]
        tok = jnp.where(is_carried, opts.pad, idx % V).astype(jnp.int32)
        seqs = jnp.take_along_axis(seqs, parent[..., None], axis=1)  # [b, k, L]
        # Carried slots write pad at i, which their ended sequence already holds there.
        seqs = lax.dynamic_update_slice_in_dim(seqs, tok[..., None], i, axis=2)
        new_logp = jnp.where(
            is_carried,
            jnp.take_along_axis(logp, parent, axis=1),
            jnp.take_along_axis(cand_logp.reshape(b, k * V), jnp.minimum(idx, k * V - 1), axis=1),
        )
        ended = is_carried | is_eos[tok] | (i == L - 1)
        return i + 1, seqs, new_logp, ended, top, _gather_beams(cache, parent, b, k)

    def cond(state):
        return (state[0] < L) & ~jnp.all(state[3])

    # Only slot 0 is live at the start, so the first step fills the k slots with distinct
    # tokens (this is why num_beams may not exceed the vocabulary).
    logp0 = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (b, 1))
    state = (
        jnp.array(0, jnp.int32),
        jnp.full((b, k, L), opts.pad, jnp.int32),
        logp0,
        jnp.zeros((b, k), bool),
        jnp.full((b, k), NEG_INF, jnp.float32),
        init_cache(),
    )
    steps, seqs, _, _, final, _ = _peeled_loop(body, cond, state)
    return _beams_output(steps, seqs, final)


def _beam_search_transformers(model, params, encoded, enc_mask, opts: _Options):
    """Beam search as transformers runs it (early_stopping=False): each step keeps the top 2k
    extensions; the best k that have not just ended run on, and those among the first k that
    ended (EOS or the length limit) enter a pool of the k best finished hypotheses, scored
    log-probability / generated_length ** alpha. The loop stops when no running beam can beat
    the pool's worst (transformers' heuristic: the best running score at the current length)."""
    k, L, V = opts.num_beams, opts.max_length, model.cfg.tgt_vocab_size
    b = encoded.shape[0] // k
    init_cache, logits_fn = _step_fns(model, params, encoded, enc_mask, opts)
    big = jnp.float32(-1.0e9)  # transformers' "excluded" score, kept for equal tie-breaking
    first_k = jnp.arange(2 * k) < k

    def body(state, first):
        i, run_seqs, run_logp, seqs, scores, finished, open_, _, cache = state
        logits, cache = logits_fn(cache, run_seqs.reshape(b * k, L), i, first)  # [b*k, V]
        logp = jax.nn.log_softmax(logits, axis=-1)
        logp = _process(logp, run_seqs.reshape(b * k, L), i, opts).reshape(b, k, V)
        logp = logp + run_logp[..., None]
        top, idx = lax.top_k(logp.reshape(b, k * V), 2 * k)  # [b, 2k]
        parent, tok = idx // V, (idx % V).astype(jnp.int32)
        cand = jnp.take_along_axis(run_seqs, parent[..., None], axis=1)  # [b, 2k, L]
        cand = lax.dynamic_update_slice_in_dim(cand, tok[..., None], i, axis=2)
        hits = (tok == opts.eos) | (i == L - 1)  # [b, 2k]
        # The k best candidates that did not just end run on.
        run_top = top + hits.astype(jnp.float32) * big
        keep = lax.top_k(run_top, k)[1]  # [b, k]
        run_seqs = jnp.take_along_axis(cand, keep[..., None], axis=1)
        run_logp = jnp.take_along_axis(run_top, keep, axis=1)
        run_parent = jnp.take_along_axis(parent, keep, axis=1)
        # Those among the first k that ended join the finished pool, if still improvable.
        just = hits & first_k[None, :]
        fin = top / jnp.asarray(i + 1, jnp.float32) ** opts.alpha
        fin = fin + (~open_)[:, None].astype(jnp.float32) * big + (~just).astype(jnp.float32) * big
        m_scores = jnp.concatenate([scores, fin], axis=1)  # [b, 3k]
        sel = lax.top_k(m_scores, k)[1]
        seqs = jnp.take_along_axis(jnp.concatenate([seqs, cand], axis=1), sel[..., None], axis=1)
        scores = jnp.take_along_axis(m_scores, sel, axis=1)
        finished = jnp.take_along_axis(jnp.concatenate([finished, just], axis=1), sel, axis=1)
        # Early-stop heuristic at the new length (i + 1 generated tokens).
        best_running = run_logp[:, 0] / jnp.asarray(i + 1, jnp.float32) ** opts.alpha
        worst = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), big)  # [b, k]
        open_ = open_ & jnp.any(best_running[:, None] > worst, axis=1)
        cache = _gather_beams(cache, run_parent, b, k)
        return i + 1, run_seqs, run_logp, seqs, scores, finished, open_, jnp.all(hits), cache

    def cond(state):
        return (state[0] < L) & jnp.any(state[6]) & ~state[7]

    state = (
        jnp.array(0, jnp.int32),
        jnp.full((b, k, L), opts.pad, jnp.int32),
        jnp.tile(jnp.where(jnp.arange(k) == 0, 0.0, big), (b, 1)),
        jnp.full((b, k, L), opts.pad, jnp.int32),
        jnp.full((b, k), big, jnp.float32),
        jnp.zeros((b, k), bool),
        jnp.ones((b,), bool),
        jnp.array(False),
        init_cache(),
    )
    steps, _, _, seqs, scores, _, _, _, _ = _peeled_loop(body, cond, state)
    return _beams_output(steps, seqs, scores)


@functools.partial(jax.jit, static_argnames=("model", "opts"))
def _generate(model, params, input_ids, attention_mask, rng, opts: _Options):
    encoded = model.apply({"params": params}, input_ids, attention_mask, method="encode")
    if opts.num_beams == 1:
        return _greedy_or_sample(model, params, encoded, attention_mask, rng, opts)
    k = opts.num_beams
    rep = lambda x: jnp.repeat(x, k, axis=0)  # [b, ...] -> [b*k, ...], beams of an item adjacent
    search = _beam_search_transformers if opts.beam_style == "transformers" else _beam_search
    return search(model, params, rep(encoded), rep(attention_mask), opts)


# transformers' generation settings that `generate` takes, by their HF name -> our argument.
_HF_GENERATION_ARGS = {
    "num_beams": "num_beams",
    "max_new_tokens": "max_length",
    "min_new_tokens": "min_length",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
    "length_penalty": "length_penalty_alpha",
    "do_sample": "do_sample",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "forced_bos_token_id": "forced_bos_token_id",
    "forced_eos_token_id": "forced_eos_token_id",
    "decoder_start_token_id": "decoder_start_token_id",
    "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id",
    "suppress_tokens": "suppress_tokens",
}
# Settings that change the output and that `generate` does not implement, with the value at
# which they are off (transformers' defaults).
_HF_GENERATION_UNSUPPORTED = {
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "typical_p": 1.0,
    "min_p": None,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "penalty_alpha": None,
    "exponential_decay_length_penalty": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
    "force_words_ids": None,
    "constraints": None,
    "renormalize_logits": False,
    "early_stopping": False,
}


def generation_options(generation_config: Mapping) -> dict:
    """`generate` keyword arguments from a transformers generation config (the dict of a
    `generation_config.json`). A setting that changes the output and that `generate` does
    not implement (e.g. `repetition_penalty=1.2`, `early_stopping=True`, a multi-token
    `bad_words_ids`) is a ValueError naming it, never silently dropped. `max_length` and
    `min_length` (which count the start token in transformers' encoder-decoders) become
    generated-token counts."""
    g = dict(generation_config)
    for key, off in _HF_GENERATION_UNSUPPORTED.items():
        if g.get(key, off) not in (off, None):
            raise ValueError(
                f"generation option {key}={g[key]!r} is not supported by jaxformer.generate; "
                f"remove it (or set it to {off!r}) to decode without it."
            )
    out = {ours: g[hf] for hf, ours in _HF_GENERATION_ARGS.items() if g.get(hf) is not None}
    if "max_new_tokens" not in g and g.get("max_length") is not None:
        out["max_length"] = int(g["max_length"]) - 1
    if "min_new_tokens" not in g and g.get("min_length"):
        out["min_length"] = max(int(g["min_length"]) - 1, 0)
    bad = g.get("bad_words_ids") or []
    if any(len(b) != 1 for b in bad):
        raise ValueError(
            f"generation option bad_words_ids={bad} bans a multi-token sequence, which "
            "jaxformer.generate does not support; only single tokens can be barred."
        )
    if bad:
        out["suppress_tokens"] = sorted({*out.get("suppress_tokens", ()), *(b[0] for b in bad)})
    for key in ("eos_token_id", "forced_eos_token_id"):
        if isinstance(out.get(key), (list, tuple)):
            if len(out[key]) != 1:
                raise ValueError(
                    f"generation option {key}={out[key]} names several ids; jaxformer.generate "
                    "takes one."
                )
            out[key] = out[key][0]
    if out.get("num_beams", 1) > 1:
        out["beam_style"] = "transformers"  # its pool and stopping rule: the same ids
    return out


def generate(
    model,
    params,
    input_ids,
    attention_mask=None,
    *,
    max_length: int = 64,
    num_beams: int = 1,
    length_penalty_alpha: float = 0.6,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng=None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    use_cache: bool = True,
    beam_style: str = "jaxformer",
    forced_bos_token_id: int | None = None,
    forced_eos_token_id: int | None = None,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
    suppress_tokens: Sequence[int] | None = None,
) -> GenerateOutput:
    """Decodes `input_ids` [batch, src_len] (mask [batch, src_len], 1 = real token).

    num_beams=1: greedy, or sampling with `do_sample=True` (temperature, top_k (0 = off),
    top_p (1.0 = off), an explicit PRNG key `rng`); num_beams>1: beam search ranked by
    log-probability / length_penalty(alpha). `beam_style="transformers"` runs transformers'
    beam search instead (a pool of finished hypotheses beside k running beams, scores
    log-probability / generated_length ** alpha, its early-stop heuristic; alpha=1.0 is its
    default), whose ids equal `transformers.generate`'s. `forced_bos_token_id` /
    `forced_eos_token_id` force that token at the first / last (`max_length`) step, as
    transformers does (defaults: the config's, when it has them; BART forces EOS).
    `min_length` bars EOS before that many generated tokens (transformers' min_new_tokens);
    `no_repeat_ngram_size` n bars any n-gram from occurring twice in (start token, generated
    ids). `suppress_tokens` are never generated (default: the config's `suppress_tokens`;
    Marian's checkpoints bar their pad id this way, transformers' `bad_words_ids=[[pad]]`).
    Token ids default to the config's.
    `max_length` counts generated tokens (the start token is not counted). Returns
    `GenerateOutput`.
    """
    cfg = model.cfg
    V = cfg.tgt_vocab_size
    input_ids = np.asarray(input_ids) if not isinstance(input_ids, jax.Array) else input_ids
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}.")
    b, s = input_ids.shape
    if b == 0:
        raise ValueError("empty batch: input_ids has no rows; nothing to decode.")
    if s == 0:
        raise ValueError("input_ids has zero length; give at least one source token.")
    limit = cfg.max_length  # None: relative positions (T5), no table
    if limit is not None and s > limit:
        raise ValueError(
            f"source length {s} exceeds the model's max_length={limit}; truncate the source."
        )
    if attention_mask is None:
        attention_mask = jnp.ones((b, s), jnp.int32)
    if tuple(attention_mask.shape) != (b, s):
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {(b, s)}."
        )
    if max_length < 1 or (limit is not None and max_length > limit):
        raise ValueError(
            f"max_length={max_length} must be in [1, {limit}] (the decoder's position table)."
        )
    if not 1 <= num_beams <= V:
        raise ValueError(
            f"num_beams={num_beams} must be in [1, vocabulary size {V}]: the "
            "first step cannot fill more beams than there are tokens."
        )
    eos = cfg.eos_token_id if eos_token_id is None else eos_token_id
    pad = cfg.pad_token_id if pad_token_id is None else pad_token_id
    start = cfg.decoder_start_token_id if decoder_start_token_id is None else decoder_start_token_id
    if forced_bos_token_id is None:
        forced_bos_token_id = getattr(cfg, "forced_bos_token_id", None)
    if forced_eos_token_id is None:
        forced_eos_token_id = getattr(cfg, "forced_eos_token_id", None)
    forced = [
        ("forced_bos_token_id", forced_bos_token_id),
        ("forced_eos_token_id", forced_eos_token_id),
    ]
    for name, v in [(n, v) for n, v in forced if v is not None] + [
        ("eos_token_id", eos),
        ("pad_token_id", pad),
        ("decoder_start_token_id", start),
    ]:
        if not 0 <= int(v) < V:
            raise ValueError(f"{name}={v} is outside the target vocabulary [0, {V}).")
    if suppress_tokens is None:
        suppress_tokens = getattr(cfg, "suppress_tokens", None) or ()
    suppress_tokens = tuple(sorted({int(t) for t in suppress_tokens}))
    for t in suppress_tokens:
        if not 0 <= t < V:
            raise ValueError(f"suppress_tokens holds {t}, outside the target vocabulary [0, {V}).")
    if not 0 <= min_length <= max_length:
        raise ValueError(f"min_length={min_length} must be in [0, max_length={max_length}].")
    if no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size={no_repeat_ngram_size} must be >= 0 (0 = off).")
    if beam_style not in ("jaxformer", "transformers"):
        raise ValueError(f"beam_style={beam_style!r} is not one of 'jaxformer', 'transformers'.")
    if do_sample:
        if num_beams != 1:
            raise ValueError("sampling is for num_beams=1; beam search is deterministic.")
        if rng is None:
            raise ValueError("do_sample=True needs an explicit PRNG key: rng=jax.random.key(0).")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if not 0 <= top_k <= V:
            raise ValueError(f"top_k must be in [0, {V}] (0 = off), got {top_k}.")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}.")
    if not isinstance(input_ids, jax.core.Tracer):
        ids = np.asarray(input_ids)
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ValueError(
                f"input_ids hold ids outside the source vocabulary [0, {cfg.vocab_size})."
            )
    # Options that cannot matter are normalized so they do not trigger a recompile.
    beam, sample = num_beams > 1, bool(do_sample)
    opts = _Options(
        int(max_length),
        int(num_beams),
        float(length_penalty_alpha) if beam else 0.0,
        sample,
        float(temperature) if sample else 1.0,
        int(top_k) if sample else 0,
        float(top_p) if sample else 1.0,
        int(eos),
        int(pad),
        int(start),
        bool(use_cache),
        beam_style if beam else "jaxformer",
        -1 if forced_bos_token_id is None else int(forced_bos_token_id),
        -1 if forced_eos_token_id is None else int(forced_eos_token_id),
        int(min_length),
        int(no_repeat_ngram_size),
        int(V),
        suppress_tokens,
    )
    rng = jax.random.key(0) if rng is None else rng
    return _generate(
        model.clone(use_cache=False),
        params,
        jnp.asarray(input_ids, jnp.int32),
        jnp.asarray(attention_mask, jnp.int32),
        rng,
        opts,
    )
