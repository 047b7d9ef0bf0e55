"""Decoding speed: tokens/s for greedy and beam search, with and without the KV cache.

    python benchmarks/decoding.py [--size mini] [--batch 8] [--src-len 32] [--max-length 64]

Random weights; EOS is disabled (logit bias -1e9) so every run decodes exactly max_length
steps. tokens/s counts generated positions of the returned sequences (batch x max_length per
call; beam search decodes num_beams times as many hypotheses). The no-cache path re-runs the
decoder over the whole fixed-size prefix buffer at every step. Compilation is excluded
(one warm-up call per configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn
import jax
import numpy as np

from jaxformer.inference.decoding import generate
from jaxformer.models.transformer import Transformer, transformer_config


def bench(model, params, ids, mask, repeats: int, **kw) -> float:
    jax.block_until_ready(generate(model, params, ids, mask, **kw).sequences)  # compile
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(generate(model, params, ids, mask, **kw).sequences)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="mini")
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--src-len", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()

    cfg = transformer_config(
        a.size,
        vocab_size=a.vocab,
        max_position_embeddings=max(a.src_len, a.max_length),
        final_logits_bias=True,
        eos_token_id=1,
    )
    model = Transformer(cfg)
    rs = np.random.RandomState(0)
    ids = rs.randint(2, a.vocab, (a.batch, a.src_len)).astype(np.int32)
    mask = np.ones_like(ids)
    params = nn.unbox(model.init(jax.random.key(0), ids[:1], mask[:1], ids[:1])["params"])
    params["final_logits_bias"] = params["final_logits_bias"].at[1].set(-1e9)  # no early stop

    rows = []
    print(
        f"{a.size}: hidden_size={cfg.hidden_size} layers={cfg.num_decoder_layers} vocab={a.vocab} "
        f"batch={a.batch} src_len={a.src_len} max_length={a.max_length} "
        f"backend={jax.default_backend()}"
    )
    print(f"{'strategy':<10}{'cache':<8}{'seconds':>10}{'tokens/s':>12}")
    for beams in (1, 4):
        for cache in (True, False):
            s = bench(
                model,
                params,
                ids,
                mask,
                a.repeats,
                max_length=a.max_length,
                num_beams=beams,
                use_cache=cache,
            )
            tps = a.batch * a.max_length / s
            name = "greedy" if beams == 1 else f"beam{beams}"
            rows.append({"strategy": name, "cache": cache, "seconds": s, "tokens_per_s": tps})
            print(f"{name:<10}{'yes' if cache else 'no':<8}{s:>10.3f}{tps:>12.1f}", flush=True)
    for name in ("greedy", "beam4"):
        c, n = (
            next(r["tokens_per_s"] for r in rows if r["strategy"] == name and r["cache"] == cache)
            for cache in (True, False)
        )
        print(f"{name}: cache speed-up x{c / n:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
