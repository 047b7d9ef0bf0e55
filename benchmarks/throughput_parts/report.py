"""The machine a run measured on, and the markdown tables of a report."""

from __future__ import annotations

import os

import jax

import platform


def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "jax_backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        info["cpu_model"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    versions = {}
    for mod in ("jax", "jaxlib", "flax", "optax", "torch", "transformers", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            pass
    info["versions"] = versions
    return info


def _fmt_x(x) -> str:
    return "—" if x is None else f"{x:.2f}x"


def markdown(report: dict) -> str:
    a = report["args"]
    hw = report["hardware"]
    mm = report["matmul_flops_per_s"]
    lines = [
        f"**{a['model']} {a['mode']}**, batch {a['batch']} x seq {a['seq']}, "
        f"{a['dtype']}, attention {a['attention']}, {report['date']}, "
        f"{hw.get('cpu_model')} ({hw['cpu_count']} cores), {hw['device_kind']}; "
        + ", ".join(f"{k} {v}" for k, v in hw["versions"].items()),
        "",
    ]
    if mm:
        lines[0] += (
            f"; matmul {a['matmul_n']}^3 f32: "
            + " / ".join(f"{x / 1e9:.0f}" for x in mm)
            + " GFLOP/s (start / end)"
        )
    if report.get("matmul_interleaved_flops_per_s"):
        lines[0] += (
            f", {report['matmul_interleaved_flops_per_s'] / 1e9:.0f} GFLOP/s "
            "interleaved (the MFU reference)"
        )
    lines += [
        "| side | step ms (median, IQR) | tokens/s | seq/s | ours / side (paired) "
        "| compile s | memory | GFLOP/token | TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'][:80]} |||||||||")
            continue
        mem = r.get("peak_memory_bytes") or r.get("rss_peak_bytes")
        mem_s = (
            f"{mem / 2**30:.2f} GiB" + ("" if r.get("peak_memory_bytes") else " RSS")
            if mem
            else "-"
        )
        if r.get("xla_buffers_bytes"):
            mem_s += f" (XLA {r['xla_buffers_bytes'] / 2**30:.2f} GiB)"
        mfu = f"{100 * r['mfu']:.0f}%" if r.get("mfu") is not None else "-"
        lines.append(
            f"| {r['name']} | {r['step_ms']:.0f} ± {r['step_iqr_ms']:.0f} | "
            f"{r['tokens_per_s']:.0f} | {r['sequences_per_s']:.2f} | "
            f"{r['ratio_vs_first']:.2f}x ({_fmt_x(r.get('paired_ratio_vs_first'))}) | "
            f"{r['compile_s']:.1f} | {mem_s} | "
            f"{r['flops_per_token'] / 1e9:.3f} | {r['achieved_tflops']:.3f} | {mfu} |"
        )
    return "\n".join(lines)


def decode_markdown(report: dict) -> str:
    """The decoding rows (tokens/s per strategy, ours beside transformers)."""
    lines = [
        "| strategy | jaxformer tok/s | transformers eager tok/s | eager 1 thread tok/s |",
        "|---|---|---|---|",
    ]
    for r in report["decode"]:
        lines.append(
            f"| {r['strategy']} | {r['jaxformer_tokens_per_s']:.0f} | "
            f"{r['transformers (torch eager)_tokens_per_s']:.0f} | "
            f"{r['transformers (eager, 1 thread)_tokens_per_s']:.0f} |"
        )
    return "\n".join(lines)
