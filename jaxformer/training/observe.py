"""Observability: JSONL + TensorBoard metrics (process 0 only), a console progress line,
throughput / MFU, and the loss-curve plot."""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax

from jaxformer.benchmarking import device_peak_tflops


def peak_flops_per_device(override_tflops: float = 0.0) -> float | None:
    """Peak FLOP/s of this process's first device for MFU: the override, else the device
    kind's entry in `benchmarking.PEAK_BF16_TFLOPS`; None for unknown devices (CPU)."""
    if override_tflops:
        return override_tflops * 1e12
    tflops = device_peak_tflops(jax.devices()[0].device_kind)
    return None if tflops is None else tflops * 1e12


class MetricWriter:
    """Appends {"step": ..., **metrics} to workdir/metrics.jsonl and TensorBoard events
    (workdir/tb); only process 0 writes.

    `resume_step`: the step a run starts from (0 without a checkpoint). Rows of later steps
    were written by an interrupted run and are about to be replayed, so they are dropped (and
    TensorBoard purges its events after that step): no step gets two rows of the same kind."""

    def __init__(self, workdir: str, tensorboard: bool = True, resume_step: int | None = None):
        self.active = jax.process_index() == 0
        self.tb = None
        if not self.active:
            return
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, "metrics.jsonl")
        if resume_step is not None and os.path.exists(path):
            _drop_rows_after(path, resume_step)
        self.jsonl = open(path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=purge)

    def write(self, step: int, metrics: dict, prefix: str = ""):
        if not self.active:
            return
        row = {"step": int(step)}
        row.update({prefix + k: float(v) for k, v in metrics.items()})
        self.jsonl.write(json.dumps(row) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if math.isfinite(float(v)):
                    self.tb.add_scalar(prefix + k, float(v), step)

    def text(self, tag: str, text: str, step: int):
        if self.active and self.tb is not None:
            self.tb.add_text(tag, text, step)

    def close(self):
        if self.active:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def _drop_rows_after(path: str, step: int) -> int:
    """Rewrites metrics.jsonl without the rows of steps after `step` (and any torn last line
    of a killed run); atomic, so a crash here loses nothing. Returns how many were dropped."""
    keep, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if row.get("step", 0) > step:
                dropped += 1
            else:
                keep.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)
    return dropped


def _fmt_time(s: float) -> str:
    s = int(max(s, 0))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """A one-line progress bar: step/total, loss, lr, tokens/s, ETA (process 0 only)."""

    def __init__(self, total: int, start: int, enabled: bool = True, width: int = 24):
        self.total, self.start = total, start
        self.enabled = enabled and jax.process_index() == 0
        self.width = width
        self.tty = sys.stdout.isatty()
        self.t0 = None

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float, steps_per_s: float):
        if not self.enabled:
            return
        frac = step / max(self.total, 1)
        filled = int(self.width * frac)
        eta = (self.total - step) / steps_per_s if steps_per_s > 0 else float("nan")
        bar = "#" * filled + "-" * (self.width - filled)
        line = (
            f"[{bar}] {step}/{self.total} loss {loss:.4f} lr {lr:.2e} "
            f"{tokens_per_s:,.0f} tok/s ETA {_fmt_time(eta) if math.isfinite(eta) else '?'}"
        )
        end = "\r" if self.tty else "\n"
        print(line, end=end, flush=True)

    def close(self):
        if self.enabled and self.tty:
            print()


def plot_losses(workdir: str, out: str = "loss_curve.png") -> str | None:
    """Train (and eval) loss against step from metrics.jsonl, as a PNG in the workdir."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    train, evals = {}, {}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row:
                train[row["step"]] = row["loss"]
            if "eval_loss" in row:
                evals[row["step"]] = row["eval_loss"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    steps = sorted(train)
    ax.plot(steps, [train[s] for s in steps], label="train loss", lw=1)
    if evals:
        es = sorted(evals)
        ax.plot(es, [evals[s] for s in es], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    dst = os.path.join(workdir, out)
    fig.savefig(dst, dpi=100)
    plt.close(fig)
    return dst


class Timer:
    def __init__(self):
        self.t = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt
