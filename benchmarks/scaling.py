"""The sharded train step on 1, 2, 4 and 8 devices for data parallel, FSDP and tensor parallel.

    python benchmarks/scaling.py [--model bert-tiny --heads 8 --seq 64 --batch 8] [--json f]

On CPU the devices are fake (`--xla_force_host_platform_device_count=8`, set for a worker
subprocess), so the figures show that every strategy compiles and runs and what it costs in
compile time, not a speed-up: all fake devices share the same cores. On a multi-GPU host
the same script measures real scaling (`--no-fake`). The first step's loss is printed per
run: with the same seed it must agree across strategies and device counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
STRATEGIES = {"dp": "data", "fsdp": "fsdp", "tp": "tensor"}


def worker(args) -> list[dict]:
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    import jax

    import throughput as tp
    from jaxformer import benchmarking as B
    from jaxformer.training import optim, sharding as sh, state as state_lib
    from jaxformer.training import step as step_lib

    targs = tp.parse_args(
        ["--model", args.model, "--seq", str(args.seq), "--batch", str(args.batch)]
    )
    _, cfg = tp.model_config(targs)
    if args.heads:  # tensor parallelism splits heads: 8 devices need a multiple of 8
        cfg = cfg.replace(num_heads=args.heads)
    if args.vocab:  # ... and the vocabulary: BERT's 30522 = 2 x 15261 splits only in two
        cfg = cfg.replace(vocab_size=args.vocab)
    p = tp.predictions_per_row(args.seq)
    task, _ = tp.bert_task(cfg, args.seq, p, "system")
    tx, _ = optim.make_optimizer(tp.OPTIMIZER, total_steps=10_000)
    batch = {k: v for k, v in tp.bert_batch(cfg, args.batch, args.seq).items() if k != "labels"}
    rows = []
    for n in [int(x) for x in args.devices.split(",")]:
        if n > jax.device_count():
            continue
        for strat in args.strategies.split(","):
            mesh = sh.make_mesh({STRATEGIES[strat]: n}, devices=jax.devices()[:n])
            row = {"devices": n, "strategy": strat, "mesh": dict(mesh.shape)}
            try:
                state, state_sh, _ = state_lib.create_state(task, tx, mesh)
                fn, batch_sh = step_lib.compile_train_step(
                    step_lib.make_train_step(task, tx), state_sh, batch, mesh
                )
                b = jax.device_put(batch, batch_sh)
                t0 = time.perf_counter()
                compiled = fn.lower(state, b).compile()
                row["compile_s"] = time.perf_counter() - t0
                times = []
                for i in range(args.steps + 1):
                    t0 = time.perf_counter()
                    state, m = compiled(state, b)
                    jax.block_until_ready(m)
                    if i == 0:
                        row["first_loss"] = float(m["loss"])
                    else:
                        times.append(time.perf_counter() - t0)
                st = B.summarize(times)
                row.update(
                    step_ms=st["median_s"] * 1e3,
                    step_iqr_ms=st["iqr_s"] * 1e3,
                    tokens_per_s=args.batch * args.seq / st["median_s"],
                )
                # Where the parameters live: bytes of the largest parameter on one device.
                big = max(jax.tree.leaves(state.params), key=lambda x: x.size)
                row["largest_param_shard"] = list(big.addressable_shards[0].data.shape)
                row["largest_param"] = list(big.shape)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bert-tiny")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8, help="override num_heads (0: keep)")
    ap.add_argument(
        "--vocab",
        type=int,
        default=30720,
        help="override vocab_size (0: keep); 30720 = 30522 padded to 256 x 120",
    )
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--devices", default="1,2,4,8")
    ap.add_argument("--strategies", default="dp,fsdp,tp")
    ap.add_argument("--no-fake", action="store_true", help="use the real devices")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return None
    env = dict(os.environ)
    if not args.no_fake:
        n = max(int(x) for x in args.devices.split(","))
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}"
        ).strip()
        env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [
        a
        for a in (argv if argv is not None else sys.argv[1:])
        if a != "--json" and not a.endswith(".json")
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    rows = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode:
        print(proc.stderr[-3000:], file=sys.stderr)
    print(
        "| devices | strategy | mesh | compile s | step ms | tokens/s | first loss | "
        "largest param / its shard |\n|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        if "error" in r:
            print(f"| {r['devices']} | {r['strategy']} | {r['mesh']} | failed: {r['error']} |")
            continue
        print(
            f"| {r['devices']} | {r['strategy']} | {r['mesh']} | {r['compile_s']:.1f} | "
            f"{r['step_ms']:.0f} ± {r['step_iqr_ms']:.0f} | {r['tokens_per_s']:.0f} | "
            f"{r['first_loss']:.4f} | {r['largest_param']} / {r['largest_param_shard']} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
