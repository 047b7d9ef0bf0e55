"""Compile time of the train step with and without scan over layers.

    python benchmarks/compile_time.py --model bert-large --seq 128 --batch 8 [--json out.json]

Traces, lowers and compiles the training system's train step (MLM, AdamW) from abstract
shapes only (nothing is allocated, so BERT-large fits anywhere), once with the layers
unrolled and once with `scan_layers=True`, and reports trace+lower and compile seconds and
the size of the lowered program.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax

import throughput as tp


def measure(args, scan: bool, remat: str | None = None) -> dict:
    from jaxformer.training import optim, sharding as sh, state as state_lib
    from jaxformer.training import step as step_lib

    targs = tp.parse_args(
        [
            "--model",
            args.model,
            "--seq",
            str(args.seq),
            "--batch",
            str(args.batch),
            "--remat",
            remat or args.remat,
        ]
        + (["--scan"] if scan else [])
    )
    _, cfg = tp.model_config(targs)
    p = tp.predictions_per_row(args.seq)
    task, _ = tp.bert_task(cfg, args.seq, p, "system")
    tx, _ = optim.make_optimizer(tp.OPTIMIZER, total_steps=10_000)
    mesh = sh.make_mesh({"data": -1})
    abstract, specs = state_lib.state_specs(task, tx, mesh)
    state_sh = sh.named(mesh, specs)
    batch = {k: v for k, v in tp.bert_batch(cfg, args.batch, args.seq).items() if k != "labels"}
    fn, batch_sh = step_lib.compile_train_step(
        step_lib.make_train_step(task, tx), state_sh, batch, mesh
    )
    abs_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_sh
    )
    abs_batch = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), batch, batch_sh
    )
    t0 = time.perf_counter()
    lowered = fn.lower(abs_state, abs_batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    mem = compiled.memory_analysis()
    return {
        "scan_layers": scan,
        "remat": remat or args.remat,
        "lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "total_s": t2 - t0,
        "hlo_chars": len(lowered.as_text()),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bert-large")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--remat", default="none")
    ap.add_argument(
        "--remat-sweep",
        action="store_true",
        help="instead: compile (with scan) for each remat policy and report XLA's "
        "temporary-buffer bytes, i.e. the activation memory each one keeps",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.remat_sweep:
        rows = [measure(args, True, r) for r in ("none", "full", "dots", "dots_no_batch")]
        print(
            f"| {args.model} b{args.batch} s{args.seq} remat | XLA temp GiB | state+batch GiB "
            "| compile s |\n|---|---|---|---|"
        )
        for r in rows:
            print(
                f"| {r['remat']} | {r['temp_bytes'] / 2**30:.2f} | "
                f"{r['argument_bytes'] / 2**30:.2f} | {r['compile_s']:.1f} |"
            )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {"args": vars(args), "hardware": tp.hardware(), "results": rows},
                    f,
                    indent=2,
                    default=str,
                )
        return rows
    rows = []
    for scan in (False, True):
        r = measure(args, scan)
        rows.append(r)
        print(
            f"[compile_time] {args.model} scan={scan}: lower {r['lower_s']:.1f} s, "
            f"compile {r['compile_s']:.1f} s, HLO {r['hlo_chars'] / 1e6:.2f} M chars",
            flush=True,
        )
    report = {
        "args": vars(args),
        "hardware": tp.hardware(),
        "results": rows,
        "speedup": rows[0]["total_s"] / rows[1]["total_s"],
    }
    print(
        f"| {args.model} train step | lower s | compile s | total s | HLO M chars |\n"
        "|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {'scan' if r['scan_layers'] else 'unrolled'} | {r['lower_s']:.1f} | "
            f"{r['compile_s']:.1f} | {r['total_s']:.1f} | {r['hlo_chars'] / 1e6:.2f} |"
        )
    print(f"scan speedup (total): {report['speedup']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return report


if __name__ == "__main__":
    main()
