"""The GPU suite: one command for an accelerator machine's stock image, in about 8 minutes.

    PYTHONPATH=$PWD python benchmarks/gpu_suite.py --out runs/gpu_suite      # on the GPU
    PYTHONPATH=$PWD python benchmarks/gpu_suite.py --dry-run --out /tmp/s    # CPU, tiny shapes

Needs only jax (with its CUDA plugin), flax, optax, orbax, torch and transformers: no
tensorflow-datasets, no grain, no network. Every case is a `benchmarks/throughput.py` run
(its sides, timing and report): ours with the `xla` and `auto` (cuDNN on a GPU) attention
kernels, beside transformers (SDPA under bf16 autocast, and `torch.compile` for the headline
case). Cases: BERT-base and BERT-large MLM training at sequence 128 and 512, BERT-base
inference, the encoder-decoder base train step, and greedy decoding. bf16 compute on float32
master weights; dropout 0 on every side so that the fused kernels run (with attention dropout
on, every kernel runs the explicit einsum path: docs/accelerators.md).

Prints one markdown table (tokens/s, MFU against the device's bf16 peak, peak memory, compile
time) and writes suite.json, suite.md and one JSON per case to `--out`. Cases are skipped once
`--budget-s` is spent (recorded as skipped), so the suite ends in time on a slower device.
`--dry-run` runs the same code on CPU with tiny shapes (CI runs it). Compiled executables are
cached in `--out`/jax_cache (unless JAX_COMPILATION_CACHE_DIR is set), so a rerun is faster.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import throughput as T  # noqa: E402  (sets XLA_PYTHON_CLIENT_PREALLOCATE before jax starts)

# (name, throughput.py arguments). Batches give ~16k tokens a step for the encoders.
# The headline case first, so a slow device still measures it within the budget.
CASES = [
    ("bert-large train s512", "--model bert-large --mode train --seq 512 --batch 32 --headline"),
    ("bert-base train s128", "--model bert-base --mode train --seq 128 --batch 128"),
    ("bert-base train s512", "--model bert-base --mode train --seq 512 --batch 32"),
    ("bert-large train s128", "--model bert-large --mode train --seq 128 --batch 128"),
    ("bert-base infer s128", "--model bert-base --mode infer --seq 128 --batch 128"),
    ("transformer-base train s128", "--model transformer-base --mode train --seq 128 --batch 64"),
    ("transformer-base greedy", "--model transformer-base --mode greedy --seq 64 --batch 32"),
]
COMMON = "--dtype bf16 --dropout 0 --steps 10 --warmup 3 --block 1"
# --dry-run: the same cases at the smallest shapes, one timed step, CPU.
DRY = {
    "bert-base": "bert-tiny",
    "bert-large": "bert-tiny",
    "transformer-base": "transformer-nano",
}
DRY_COMMON = "--dtype bf16 --dropout 0 --steps 1 --warmup 0 --matmul-n 64"


def case_args(spec: str, dry: bool) -> tuple[list[str], bool]:
    """throughput.py argv for a case, and whether it is the headline (torch.compile peer)."""
    words = spec.split()
    headline = "--headline" in words
    words = [w for w in words if w != "--headline"]
    if dry:
        words = [DRY.get(w, w) for w in words]
        words[words.index("--seq") + 1] = "16"
        words[words.index("--batch") + 1] = "2"
        words += DRY_COMMON.split()
    else:
        words += COMMON.split()
    return words, headline


def run_encoder_case(argv, headline, dry) -> dict:
    peers = ["torch"] + (["torch-compile"] if headline and not dry else [])
    args = T.parse_args(argv + ["--peers", ",".join(peers)])
    if args.mode == "train" and args.model.startswith("transformer"):
        args.attention = "auto"  # one kernel for the encoder-decoder: the suite's time budget
    else:
        args.compare = "attention=xla,auto"
    return T.run(args)


def run_greedy_case(argv, dry) -> dict:
    """Greedy decoding of the encoder-decoder with the key/value cache (ours only: the
    transformers peer of `throughput.py --mode decode` runs on the CPU)."""
    import flax.linen as nn
    import jax
    import numpy as np

    from decoding import bench
    from jaxformer.models.transformer import Transformer

    args = T.parse_args([w if w != "greedy" else "decode" for w in argv])
    _, cfg = T.model_config(args)
    cfg = cfg.replace(final_logits_bias=True)
    model = Transformer(cfg)
    rs = np.random.RandomState(args.seed)
    src = max(8, args.seq // 2)
    ids = rs.randint(T.SPECIAL, cfg.vocab_size, (args.batch, src)).astype(np.int32)
    mask = np.ones_like(ids)
    params = nn.unbox(
        jax.jit(model.init)(jax.random.PRNGKey(0), ids[:1], mask[:1], ids[:1])["params"]
    )
    # EOS suppressed: every call decodes exactly --seq positions.
    params["final_logits_bias"] = params["final_logits_bias"].at[cfg.eos_token_id].set(-1e9)
    t0 = time.perf_counter()
    best = bench(model, params, ids, mask, max(1, args.steps // 3), max_length=args.seq)
    total = time.perf_counter() - t0
    return {
        "hardware": T.hardware(),
        "args": vars(args),
        "config": cfg.to_dict(),
        "results": [
            {
                "name": "jaxformer greedy (KV cache)",
                "tokens_per_s": args.batch * args.seq / best,
                "step_ms": best * 1e3,
                "compile_s": total - best * max(1, args.steps // 3),
                "mfu": None,
            }
        ],
    }


def summary_rows(name: str, report: dict) -> list[str]:
    rows = []
    results = report.get("results", [])
    peer = next((r for r in results if r["name"].startswith("transformers (torch eager)")), None)
    for r in results:
        if "error" in r:
            rows.append(f"| {name} | {r['name']} | failed: {r['error'][:60]} | | | | |")
            continue
        mem = r.get("peak_memory_bytes") or r.get("xla_buffers_bytes") or r.get("rss_peak_bytes")
        ratio = (
            f"{r['tokens_per_s'] / peer['tokens_per_s']:.2f}x"
            if peer and "tokens_per_s" in peer and r is not peer
            else "-"
        )
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        rows.append(
            f"| {name} | {r['name']} | {r['tokens_per_s']:.0f} | {mfu} | "
            + (f"{mem / 2**30:.2f} GiB" if mem else "-")
            + f" | {r.get('compile_s', 0):.1f} | {ratio} |"
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for suite.json, suite.md, per-case JSON")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU (CI)")
    p.add_argument("--budget-s", type=float, default=450.0, help="skip cases after this")
    p.add_argument("--cases", default=None, help="comma list of case-name substrings to run")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    import jax

    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):  # a rerun skips most compilation
        jax.config.update("jax_compilation_cache_dir", os.path.join(a.out, "jax_cache"))

    start = time.perf_counter()
    suite = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": a.dry_run,
        "hardware": T.hardware(),
        "cases": {},
    }
    if not a.dry_run and jax.default_backend() == "cpu":
        print("[gpu_suite] no accelerator: jax runs on CPU (use --dry-run for the smoke run)")
    lines = [
        "| case | side | tokens/s | MFU | memory | compile s | vs transformers |",
        "|---|---|---|---|---|---|---|",
    ]
    ran = {}
    for name, spec in CASES:
        if a.cases and not any(c.strip() in name for c in a.cases.split(",")):
            continue
        elapsed = time.perf_counter() - start
        if elapsed > a.budget_s:
            suite["cases"][name] = {"skipped": f"time budget spent ({elapsed:.0f} s)"}
            lines.append(f"| {name} | skipped: budget | | | | | |")
            continue
        argv_case, headline = case_args(spec, a.dry_run)
        key = " ".join(argv_case)
        if a.dry_run and key in ran:  # tiny shapes make several cases the same run
            suite["cases"][name] = {"same_as": ran[key]}
            lines.append(f"| {name} | same run as {ran[key]} (dry run) | | | | | |")
            continue
        ran[key] = name
        print(f"[gpu_suite] {name}: throughput.py {' '.join(argv_case)}", flush=True)
        t0 = time.perf_counter()
        try:
            if "--mode greedy" in spec:
                report = run_greedy_case(argv_case, a.dry_run)
            else:
                report = run_encoder_case(argv_case, headline, a.dry_run)
        except Exception as e:  # one failing case must not lose the others' figures
            traceback.print_exc()
            report = {"error": f"{type(e).__name__}: {str(e)[:500]}"}
        report["wall_s"] = time.perf_counter() - t0
        suite["cases"][name] = report
        slug = name.replace(" ", "_")
        with open(os.path.join(a.out, f"{slug}.json"), "w") as f:
            json.dump(report, f, indent=2, default=str)
        if "error" in report:
            lines.append(f"| {name} | failed: {report['error'][:80]} | | | | | |")
        else:
            lines += summary_rows(name, report)
        _free_torch_cache()
    suite["wall_s"] = time.perf_counter() - start
    hw = suite["hardware"]
    head = (
        f"GPU suite, {suite['date']}, {hw['device_kind']} x{hw['num_devices']} "
        f"({hw['jax_backend']}), "
        + ", ".join(f"{k} {v}" for k, v in hw["versions"].items())
        + f"; {suite['wall_s']:.0f} s"
        + (" (dry run, tiny shapes: figures meaningless)" if a.dry_run else "")
    )
    table = head + "\n\n" + "\n".join(lines)
    print(table)
    with open(os.path.join(a.out, "suite.json"), "w") as f:
        json.dump(suite, f, indent=2, default=str)
    with open(os.path.join(a.out, "suite.md"), "w") as f:
        f.write(table + "\n")
    return suite


def _free_torch_cache():
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


if __name__ == "__main__":
    main()
