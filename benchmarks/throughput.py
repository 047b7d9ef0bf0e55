"""Training / inference throughput of jaxformer beside `transformers` (PyTorch), in one run.

    python benchmarks/throughput.py --model bert-base --seq 128 --batch 8 --mode train \
        --peers torch [--equal-work] [--steps 5] [--json out.json]

Every side is built and warmed up first; then the timed steps are interleaved in blocks
(ours `--block` steps, each peer `--block` steps, repeat) so that load drift on a shared
machine hits all sides alike. Each step is synchronised (`block_until_ready`, or
`torch.cuda.synchronize`). Reported per side: step time median and IQR, tokens/s, sequences/s,
compile (or first-step) time, peak memory (device memory stats on GPU/TPU; the process RSS
during that side's steps on CPU, plus XLA's own buffer plan for ours), model FLOPs per token
(`jaxformer.benchmarking`), achieved FLOP/s and MFU: against the bf16 peak table on
accelerators, against a 2048^3 float32 `jnp.dot` measured in this run on CPU.

Models: `bert-<size>` (tiny mini small medium base large; mini is H=256 L=4),
`modernbert-<size>` (tiny mini base large; peer: ModernBertForMaskedLM / ModernBertModel
with transformers' default attention), `transformer-<size>` (nano tiny small base big;
peer: MarianMTModel of the same shape) and `t5-<size>` (tiny small base; T5 v1.0 shapes; peer:
T5ForConditionalGeneration).
Train mode is an MLM step (AdamW, clip 1.0, dropout on) for BERT and a teacher-forced
cross-entropy step for the encoder-decoder; infer mode is the forward pass (the encoder for
BERT, encoder + teacher-forced decoder for the encoder-decoder); decode mode times greedy and
beam-4 generation (`throughput_parts/decode.py`); seq2seq mode runs the train step and then
decoding in one run.

The pieces live in `benchmarks/throughput_parts/`: `data` (configs, synthetic batches),
`tasks` (model + loss in the training system's task interface), `sides` (what is timed: ours,
the matmul reference, transformers), `decode`, `report` (machine, markdown); this file is
the driver and the CLI.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# On a GPU, JAX would otherwise take 75% of its memory up front and starve the torch peer;
# peak_bytes_in_use still reports what our step actually used.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax

from jaxformer import benchmarking as B

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The pieces, re-exported here: other benchmarks and the tests use them as `throughput.X`.
from throughput_parts.data import (  # noqa: F401
    ENCODERS,
    MASK_ID,
    SPECIAL,
    _dense_labels,
    bert_batch,
    equal_work_batch,
    model_config,
    predictions_per_row,
    seq2seq_batch,
    variable_length_batches,
)
from throughput_parts.decode import run_decode
from throughput_parts.report import decode_markdown, hardware, markdown
from throughput_parts.sides import (  # noqa: F401
    OPTIMIZER,
    JaxInfer,
    JaxTrain,
    MatmulSide,
    Side,
    TorchSide,
)
from throughput_parts.tasks import bert_task, seq2seq_task


def build_sides(args):
    kind, cfg = model_config(args)
    mesh = tuple(int(x) for x in args.mesh.split(","))
    sides = []
    b_tokens = args.batch * args.seq
    if kind in ENCODERS:
        batch = bert_batch(cfg, args.batch, args.seq, args.seed)
        p = predictions_per_row(args.seq)
        useful = B.encoder_flops(cfg, args.seq, args.mode, p if args.mode == "train" else None)
        equal = B.encoder_flops(
            cfg, args.seq, args.mode, args.seq if args.mode == "train" else None
        )
        if args.lengths != "full":
            # Padding vs packing: the same examples, a row each or packed; tokens/s counts
            # real tokens only. PretrainTask does not pass segment ids, so both use ours.
            lo = int(args.lengths.split(":")[1])
            padded, packed, f_pad, f_pack = variable_length_batches(
                cfg, args.batch, args.seq, lo, args.seed
            )
            batch = dict(padded, labels=_dense_labels(padded, args.seq))
            if args.mode == "train":
                task, which = bert_task(cfg, args.seq, p, "own")
                side = lambda name, b: JaxTrain(name, task, b, mesh, not args.no_donate)
            else:
                side = lambda name, b: JaxInfer(name, kind, cfg, b)
            ours = side("jaxformer (padded)", padded)
            ours.tokens, ours.extra_meta = (
                int(padded["attention_mask"].sum()),
                {"padding_fraction": f_pad},
            )
            sides.append(ours)
            if args.pack:
                s = side("jaxformer (packed)", packed)
                s.tokens, s.extra_meta = (
                    int(packed["attention_mask"].sum()),
                    {"padding_fraction": f_pack},
                )
                sides.append(s)
            for s in sides:
                s.flops_per_token = useful["total"] * b_tokens / s.tokens
        elif args.mode == "train":
            task, which = bert_task(cfg, args.seq, p, args.step)
            ours = JaxTrain(
                "jaxformer",
                task,
                {k: v for k, v in batch.items() if k != "labels"},
                mesh,
                donate=not args.no_donate,
            )
            ours.flops_per_token, ours.extra_meta = useful["total"], {"task": which}
            sides.append(ours)
            if args.equal_work:
                eq_task, _ = bert_task(cfg, args.seq, args.seq, args.step)
                eb = equal_work_batch(batch)
                s = JaxTrain(
                    "jaxformer (equal work)",
                    eq_task,
                    {k: v for k, v in eb.items() if k != "labels"},
                    mesh,
                    donate=not args.no_donate,
                )
                s.flops_per_token = equal["total"]
                sides.append(s)
        else:
            ours = JaxInfer("jaxformer", kind, cfg, batch)
            ours.flops_per_token = useful["total"]
            sides.append(ours)
        flops = {"useful": useful, "equal_work": equal, "predictions_per_row": p}
    else:
        batch = seq2seq_batch(cfg, args.batch, args.seq, args.seed)
        count = B.t5_flops if kind == "t5" else B.transformer_flops
        per_row = count(cfg, args.seq, args.seq, args.mode)
        b_tokens = 2 * args.batch * args.seq  # source + target tokens
        per_tok = {k: v / (2 * args.seq) for k, v in per_row.items()}
        if args.mode == "train":
            ours = JaxTrain(
                "jaxformer",
                seq2seq_task(kind, cfg, args.seq),
                batch,
                mesh,
                donate=not args.no_donate,
            )
        else:
            ours = JaxInfer("jaxformer", kind, cfg, batch)
        ours.flops_per_token = per_tok["total"]
        sides.append(ours)
        flops = {"useful": per_tok, "equal_work": per_tok}
    names = {
        "torch": "transformers (torch eager)",
        "torch-1t": "transformers (eager, 1 thread)",
        "torch-compile": "transformers (torch.compile)",
    }
    for peer in [p for p in args.peers.split(",") if p]:
        if peer not in names:
            raise SystemExit(f"unknown peer {peer!r}; use {', '.join(names)}.")
        s = TorchSide(
            names[peer],
            kind,
            cfg,
            batch,
            args.mode,
            cfg.dtype,
            compile_model=peer == "torch-compile",
            threads=1 if peer == "torch-1t" else None,
        )
        s.flops_per_token = flops["equal_work"]["total"]
        if args.lengths != "full":
            s.tokens = sides[0].tokens
            s.flops_per_token = (
                sides[0].flops_per_token * flops["equal_work"]["total"] / flops["useful"]["total"]
            )
        sides.append(s)
    return kind, cfg, sides, b_tokens, flops


COMPARE = {
    "remat": str,
    "scan": lambda v: v in ("1", "true", "on"),
    "dtype": str,
    "attention": str,
    "dropout": float,
    "no_donate": lambda v: v in ("1", "true", "on"),
    "sparse_last": lambda v: v in ("1", "true", "on"),
}


def compare_sides(args):
    """`--compare remat=none,full`: one side of ours per value, everything else equal; the
    `--peers` run once, beside them, with the first value."""
    key, _, values = args.compare.partition("=")
    if key not in COMPARE:
        raise SystemExit(f"--compare: unknown key {key!r}; use one of {list(COMPARE)}.")
    sides, first, peers = [], None, []
    for v in values.split(","):
        a = argparse.Namespace(
            **{
                **vars(args),
                key: COMPARE[key](v),
                "compare": None,
                "peers": "",
                "equal_work": False,
            }
        )
        if first is None:
            a.peers = args.peers
        kind, cfg, ss, tokens, flops = build_sides(a)
        ss[0].name = f"jaxformer ({key}={v})"
        sides.append(ss[0])
        peers = peers if first else ss[1:]
        first = first or (kind, cfg, tokens, flops)
    kind, cfg, tokens, flops = first
    return kind, cfg, sides + peers, tokens, flops


def run(args) -> dict:
    if args.compare:
        kind, cfg, sides, tokens_per_step, flops = compare_sides(args)
    else:
        kind, cfg, sides, tokens_per_step, flops = build_sides(args)
    backend = jax.default_backend()
    dev = jax.devices()[0]
    matmul = [B.matmul_rate(args.matmul_n)] if backend == "cpu" else []
    peak = None if backend == "cpu" else B.device_peak_tflops(dev.device_kind)
    mm_side = MatmulSide(args.matmul_n) if backend == "cpu" else None
    built = []
    for s in sides + ([mm_side] if mm_side else []):
        print(f"[throughput] building {s.name} ...", flush=True)
        try:
            s.compile_s = s.build()
            for _ in range(args.warmup):
                s.step()
            s.times, s.rss_peak = [], 0
            built.append(s)
        except Exception as e:
            if s is sides[0]:
                raise
            print(f"[throughput] {s.name} failed: {type(e).__name__}: {str(e)[:300]}")
            s.error = f"{type(e).__name__}: {str(e)[:300]}"
    rounds = math.ceil(args.steps / args.block)
    for r in range(rounds):
        for s in built:
            n = min(args.block, args.steps - r * args.block)
            sampler = B.RSSSampler() if backend == "cpu" else None
            if sampler:
                sampler.__enter__()
            for _ in range(n):
                t0 = time.perf_counter()
                s.step()
                s.times.append(time.perf_counter() - t0)
            if sampler:
                sampler.__exit__(None, None, None)
                s.rss_peak = max(s.rss_peak, sampler.peak)
        print(
            f"[throughput] round {r + 1}/{rounds}: "
            + ", ".join(f"{s.name} {s.times[-1] * 1e3:.0f} ms" for s in built),
            flush=True,
        )
    if backend == "cpu":
        matmul.append(B.matmul_rate(args.matmul_n))
    interleaved = None
    if mm_side is not None:
        interleaved = 2.0 * args.matmul_n**3 / float(np.median(mm_side.times))
    ref_rate = interleaved or (peak * 1e12 if peak else None)

    results = []
    for s in sides:
        row = {"name": s.name}
        if getattr(s, "error", None):
            row["error"] = s.error
            results.append(row)
            continue
        st = B.summarize(s.times)
        med = st["median_s"]
        tokens = getattr(s, "tokens", tokens_per_step)
        achieved = s.flops_per_token * tokens / med
        row.update(
            step=st,
            times_s=[float(t) for t in s.times],
            step_ms=med * 1e3,
            step_iqr_ms=st["iqr_s"] * 1e3,
            tokens_per_step=tokens,
            tokens_per_s=tokens / med,
            sequences_per_s=args.batch / med,
            compile_s=s.compile_s,
            n_params=int(s.n_params),
            flops_per_token=s.flops_per_token,
            achieved_tflops=achieved / 1e12,
            mfu=achieved / ref_rate if ref_rate else None,
            peak_memory_bytes=(
                B.device_peak_memory()
                if backend != "cpu" and s.name.startswith("jaxformer")
                else None
            ),
            rss_peak_bytes=getattr(s, "rss_peak", None) or None,
            last_loss=getattr(s, "last_loss", None),
            **getattr(s, "extra", {}),
            **getattr(s, "extra_meta", {}),
        )
        results.append(row)
    ours = results[0]
    for row, s in zip(results, sides):
        if "tokens_per_s" in row:
            row["ratio_vs_first"] = ours["tokens_per_s"] / row["tokens_per_s"]
            # Paired: the same round's times compared, then the median over rounds; with
            # --block 1 each pair ran back to back, so it is the least load-sensitive ratio.
            t0s, ts = sides[0].times, s.times
            n = min(len(t0s), len(ts))
            tok0, tok = (
                getattr(sides[0], "tokens", tokens_per_step),
                getattr(s, "tokens", tokens_per_step),
            )
            row["paired_ratio_vs_first"] = float(
                np.median([(tok0 / a) / (tok / b) for a, b in zip(t0s[:n], ts[:n])])
            )
    return {
        "date": datetime.date.today().isoformat(),
        "hardware": hardware(),
        "args": vars(args),
        "model": kind,
        "config": cfg.to_dict(),
        "tokens_per_step": tokens_per_step,
        "flops_per_token": flops,
        "matmul_flops_per_s": matmul,
        "matmul_interleaved_flops_per_s": interleaved,
        "mfu_reference": (
            "n^3 float32 jnp.dot timed in the interleaved rounds"
            if backend == "cpu"
            else f"bf16 peak of {dev.device_kind}"
        ),
        "reference_flops_per_s": ref_rate,
        "results": results,
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="bert-base")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--mode",
        choices=("train", "infer", "decode", "seq2seq"),
        default="train",
        help="decode: greedy/beam-4 generation; seq2seq: the train step, then decode (both "
        "for transformer-<size> and t5-<size>)",
    )
    p.add_argument(
        "--peers",
        default="",
        help="comma list: torch, torch-1t (one intra-op thread), torch-compile",
    )
    p.add_argument("--dtype", default="float32", help="float32 | bf16 (compute; f32 masters)")
    p.add_argument(
        "--attention",
        default="auto",
        choices=("auto", "xla", "cudnn", "einsum", "splash", "pallas"),
        help="attention kernel (jaxformer.layers.kernels; auto: cudnn on GPU, xla on CPU)",
    )
    p.add_argument("--remat", default="none", choices=("none", "full", "dots", "dots_no_batch"))
    p.add_argument("--scan", action="store_true", help="scan over layers")
    p.add_argument(
        "--dense-last-layer",
        dest="sparse_last",
        action="store_false",
        help="run the last layer at every row (default: only at [CLS] + the "
        "predicted rows when training with an MLM head)",
    )
    p.add_argument("--mesh", default="1,1,1", help="data,fsdp,tensor")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per side after build")
    p.add_argument("--block", type=int, default=1, help="steps per side per interleave round")
    p.add_argument(
        "--equal-work", action="store_true", help="also time ours with MLM logits at every position"
    )
    p.add_argument(
        "--step",
        choices=("system", "own"),
        default="system",
        help="train step task: the training system's PretrainTask, or our own",
    )
    p.add_argument("--no-donate", action="store_true", help="do not donate the train state")
    p.add_argument(
        "--dropout", type=float, default=None, help="override the model's dropout rates (all sides)"
    )
    p.add_argument(
        "--compare",
        default=None,
        help="KEY=V1,V2: time one side of ours per value (keys: "
        "remat scan dtype attention dropout no_donate sparse_last)",
    )
    p.add_argument(
        "--lengths",
        default="full",
        help="example lengths: full, or uniform:LO (uniform in [LO, seq])",
    )
    p.add_argument(
        "--pack",
        action="store_true",
        help="with --lengths: time ours padded (a row per example) and packed",
    )
    p.add_argument("--vocab", type=int, default=None, help="seq2seq vocabulary (32000)")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--md", default=None, help="append the markdown table here")
    return p.parse_args(argv)


def _write(report: dict, table: str, args) -> None:
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    if args.md:
        with open(args.md, "a") as f:
            f.write(table + "\n\n")


def main(argv=None):
    args = parse_args(argv)
    if args.mode == "decode":
        report = run_decode(args)
        _write(report, decode_markdown(report), args)
        return report
    if args.mode == "seq2seq":  # the train step, then greedy / beam-4 decoding, one run
        train = run(argparse.Namespace(**{**vars(args), "mode": "train"}))
        report = {**train, "decode": run_decode(args)["decode"]}
        _write(report, markdown(train) + "\n\n" + decode_markdown(report), args)
        return report
    report = run(args)
    _write(report, markdown(report), args)
    return report


if __name__ == "__main__":
    main()
