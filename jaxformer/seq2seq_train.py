"""A self-contained recipe: train the tiny Transformer on the generated number-translation
task on CPU, then report BLEU (sacrebleu) and exact match with greedy and beam decoding.

    python -m jaxformer.seq2seq_train     # full recipe: about 4 minutes on 2 busy CPU cores

The pieces (`make_optimizer`, `make_train_step`, `evaluate_translation`) are pure so a general
training loop can reuse them.
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxformer.data import translation_task as tt
from jaxformer.inference.decoding import generate
from jaxformer.models.transformer import Transformer, transformer_config
from jaxformer.objectives.seq2seq import compute_loss

__all__ = [
    "evaluate_translation",
    "make_optimizer",
    "make_train_step",
    "rsqrt_schedule",
    "train_translation",
]


def rsqrt_schedule(peak: float, warmup_steps: int):
    """Linear warmup to `peak`, then decay as 1/sqrt(step) (Vaswani et al.)."""

    def schedule(step):
        s = jnp.asarray(step, jnp.float32) + 1.0
        return peak * jnp.minimum(s / warmup_steps, jnp.sqrt(warmup_steps / s))

    return schedule


def make_optimizer(
    learning_rate: float = 3e-3,
    warmup_steps: int = 200,
    weight_decay: float = 0.01,
    clip_norm: float = 1.0,
):
    """AdamW (b2=0.98 as in the paper) with warmup + rsqrt decay and global-norm clipping."""
    return optax.chain(
        optax.clip_by_global_norm(clip_norm),
        optax.adamw(
            rsqrt_schedule(learning_rate, warmup_steps),
            b1=0.9,
            b2=0.98,
            eps=1e-9,
            weight_decay=weight_decay,
        ),
    )


def make_train_step(model: Transformer, tx, label_smoothing: float = 0.1):
    """jit((params, opt_state, batch, rng, step) -> (params, opt_state, metrics))."""

    def step_fn(params, opt_state, batch, rng, step):
        rng = jax.random.fold_in(rng, step)  # a fresh dropout key per step
        grad_fn = jax.value_and_grad(
            lambda p: compute_loss(
                model, p, batch, rng=rng, deterministic=False, label_smoothing=label_smoothing
            ),
            has_aux=True,
        )
        (_, metrics), grads = grad_fn(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {**metrics, "grad_norm": optax.global_norm(grads)}

    return jax.jit(step_fn, donate_argnums=(0, 1))


def evaluate_translation(
    model: Transformer,
    params,
    tok: tt.Seq2SeqTokenizer,
    pairs,
    arrays: dict,
    num_beams: int = 1,
    batch_size: int = 500,
    length_penalty_alpha: float = 0.6,
) -> dict:
    """Decodes the sources of `arrays`; BLEU (sacrebleu, corpus level) and exact match
    (percent) of the decoded text against the reference strings of `pairs`."""
    import sacrebleu

    max_len = arrays["labels"].shape[1]
    hyps = []
    for i in range(0, len(pairs), batch_size):
        out = generate(
            model,
            params,
            arrays["input_ids"][i : i + batch_size],
            arrays["attention_mask"][i : i + batch_size],
            max_length=max_len,
            num_beams=num_beams,
            length_penalty_alpha=length_penalty_alpha,
        )
        hyps += tok.decode(np.asarray(out.sequences))
    refs = [t for _, t in pairs]
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    exact = 100.0 * float(np.mean([h == r for h, r in zip(hyps, refs)]))
    return {"bleu": bleu, "exact_match": exact, "examples": list(zip(hyps[:3], refs[:3]))}


def train_translation(
    size: str = "tiny",
    num_train: int = 20000,
    num_test: int = 1000,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    warmup_steps: int = 200,
    label_smoothing: float = 0.1,
    seed: int = 0,
    eval_beams: int = 4,
    log_every: int = 250,
    time_budget_s: float | None = None,
    verbose: bool = True,
    **config_overrides,
) -> dict:
    """Trains on the number corpus and evaluates on its held-out split.

    Returns {"greedy": {bleu, exact_match}, "beam": {...}, "train_seconds", "total_seconds",
    "steps", "final_loss", "model", "params", "tokenizer"}. Stops early at `time_budget_s`.
    """
    t0 = time.time()
    corpus = tt.make_number_corpus(num_train, num_test, seed=seed)
    tok = tt.train_tokenizer([s for p in corpus["train"] for s in p])
    train = tt.encode_pairs(tok, corpus["train"])
    test = tt.encode_pairs(
        tok,
        corpus["test"],
        max_source_len=train["input_ids"].shape[1] + 2,
        max_target_len=train["labels"].shape[1] + 2,
    )
    cfg = transformer_config(
        size,
        vocab_size=tok.vocab_size,
        max_len=64,
        pad_token_id=tok.pad_id,
        eos_token_id=tok.eos_id,
        decoder_start_token_id=tok.pad_id,
        **config_overrides,
    )
    model = Transformer(cfg)
    rng = jax.random.key(seed)
    dummy = {k: jnp.asarray(v[:2]) for k, v in train.items()}
    params = nn.unbox(
        model.init(rng, dummy["input_ids"], dummy["attention_mask"], dummy["labels"])["params"]
    )
    tx = make_optimizer(learning_rate, warmup_steps)
    opt_state = tx.init(params)
    step_fn = make_train_step(model, tx, label_smoothing)
    it = tt.batches(train, batch_size, seed=seed)
    t_train = time.time()
    metrics, step = {}, 0
    for step in range(steps):
        params, opt_state, metrics = step_fn(params, opt_state, next(it), rng, step)
        if verbose and (step % log_every == 0 or step == steps - 1):
            m = jax.device_get(metrics)
            print(
                f"step {step:5d} loss {m['loss']:.4f} acc {m['accuracy']:.3f} "
                f"ppl {m['perplexity']:.3f} ({time.time() - t_train:.0f}s)",
                flush=True,
            )
        if time_budget_s is not None and time.time() - t0 > time_budget_s:
            break
    jax.block_until_ready(params)
    train_seconds = time.time() - t_train
    greedy = evaluate_translation(model, params, tok, corpus["test"], test, num_beams=1)
    beam = evaluate_translation(model, params, tok, corpus["test"], test, num_beams=eval_beams)
    result = {
        "greedy": greedy,
        "beam": beam,
        "train_seconds": train_seconds,
        "total_seconds": time.time() - t0,
        "steps": step + 1,
        "final_loss": float(metrics["loss"]),
        "model": model,
        "params": params,
        "tokenizer": tok,
    }
    if verbose:
        print(
            f"held-out ({num_test}): greedy BLEU {greedy['bleu']:.2f} EM "
            f"{greedy['exact_match']:.1f}% | beam{eval_beams} BLEU {beam['bleu']:.2f} EM "
            f"{beam['exact_match']:.1f}% | train {train_seconds:.0f}s, total "
            f"{result['total_seconds']:.0f}s",
            flush=True,
        )
    return result


if __name__ == "__main__":
    train_translation()
