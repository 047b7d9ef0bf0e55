"""Decoding speed: ours (`jaxformer.generate`, KV cache) beside `transformers.generate` of
the same shape, greedy and beam 4."""

from __future__ import annotations

import datetime
import os
import sys
import time

import jax
import numpy as np

from throughput_parts.data import SEQ2SEQ, SPECIAL, model_config
from throughput_parts.report import hardware
from throughput_parts.sides import hf_seq2seq_model
from throughput_parts.tasks import seq2seq_model

_DEFAULT_THREADS = []


def peer_threads() -> int:
    """torch's default intra-op thread count, read once (before any side changes it)."""
    import torch

    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(torch.get_num_threads())
    return _DEFAULT_THREADS[0]


def run_decode(args) -> dict:
    """Greedy and beam-4 decoding of the encoder-decoder (`transformer-<size>`: peer
    `MarianMTModel`; `t5-<size>`: `T5ForConditionalGeneration`), KV cache on, ours through
    `benchmarks/decoding.py`'s timer. EOS is barred on both sides until `--seq` tokens
    (`min_length` / `min_new_tokens`), so every call decodes exactly `--seq` positions; the
    sides alternate per repeat. tokens/s = batch x seq / seconds (best of `--steps`)."""
    import flax.linen as nn
    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from decoding import bench as jax_decode

    kind, cfg = model_config(args)
    if kind not in SEQ2SEQ:
        raise SystemExit("--mode decode / seq2seq is for transformer-<size> or t5-<size>.")
    if kind == "transformer":
        cfg = cfg.replace(final_logits_bias=True)  # Marian's shape
    src_len, n = max(8, args.seq // 2), args.seq
    model = seq2seq_model(kind, cfg)
    rs = np.random.RandomState(args.seed)
    ids = rs.randint(SPECIAL, cfg.vocab_size, (args.batch, src_len)).astype(np.int32)
    mask = np.ones_like(ids)
    params = nn.unbox(
        jax.jit(model.init)(jax.random.PRNGKey(0), ids[:1], mask[:1], ids[:1])["params"]
    )
    peer = "transformers (torch eager)"
    torch.manual_seed(0)
    hf = hf_seq2seq_model(kind, cfg).eval()
    tids, tmask = torch.as_tensor(ids).long(), torch.as_tensor(mask).long()
    rows = []
    for beams in (1, 4):
        kw = dict(max_length=n, num_beams=beams, use_cache=True, min_length=n)
        ours_s, torch_times = float("inf"), {}
        for _ in range(args.steps):
            # bench(): one untimed call (compiles the first time), then one timed call.
            ours_s = min(ours_s, jax_decode(model, params, ids, mask, 1, **kw))
            for label, th in (("torch eager", None), ("eager, 1 thread", 1)):
                torch.set_num_threads(th or peer_threads())
                t0 = time.perf_counter()
                with torch.inference_mode():
                    hf.generate(
                        tids,
                        attention_mask=tmask,
                        max_new_tokens=n,
                        min_new_tokens=n,
                        num_beams=beams,
                        do_sample=False,
                        early_stopping=False,
                    )
                torch_times.setdefault(label, []).append(time.perf_counter() - t0)
        torch.set_num_threads(peer_threads())
        name = "greedy" if beams == 1 else f"beam{beams}"
        row = {"strategy": name, "jaxformer_tokens_per_s": args.batch * n / ours_s}
        for label, ts in torch_times.items():
            row[f"transformers ({label})_tokens_per_s"] = args.batch * n / min(ts)
        rows.append(row)
        print(f"[throughput] decode {name}: {row}", flush=True)
    return {
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
        "args": vars(args),
        "model": kind,
        "peer": peer,
        "config": cfg.to_dict(),
        "decode": rows,
    }
