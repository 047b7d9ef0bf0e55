"""Input-pipeline figures: store preparation, the lazy store reader, and train.py on a store.

  python benchmarks/data_pipeline.py prepare --mb 20 300 [--workdir /tmp/jf-bench]
  python benchmarks/data_pipeline.py read    --store DIR [--seq 128 --batch 32 --batches 100]
  python benchmarks/data_pipeline.py train   --store DIR [--steps 3]

prepare: generates a corpus of N MB (deterministic: sentences of the embedded corpus
recombined into new documents with a seeded generator), runs `jaxformer prepare` on it
(training a 30k WordPiece tokenizer on the bounded sample) and prints MB/s and the peak RSS
of the whole process tree (sampled every 0.2 s from /proc with psutil).
read: tokens/s of `store_batches` (packed, device masking: the host ships ids only) in one
process and in two (each reading its share, as two hosts would), with the tokens per CPU
second (what one unloaded core delivers), and host masking for comparison; then the packed,
device-masking batches through the two ways one process can use more than its own thread:
train.py's prefetch thread (`DataIterator`) and grain's `mp_prefetch` with a worker process
per core (wall tokens/s as the consumer sees them).
train: wall time to step N and peak RSS of the process tree of
`train.py --config configs/bert_tiny_pretrain.py --config.data.source=store:DIR`.
"""

import argparse
import os
import random
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate_corpus(path: str, size_bytes: int, seed: int = 0) -> None:
    """BERT-format text (one sentence per line, blank line between documents) of at least
    `size_bytes`: each document 3-40 sentences drawn at random from the embedded corpus."""
    from jaxformer.data import default_corpus, split_sentences

    sentences = [s for d in default_corpus() for s in split_sentences(d) if len(s) > 20]
    rng = random.Random(seed)
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            doc = "\n".join(rng.choice(sentences) for _ in range(rng.randint(3, 40))) + "\n\n"
            f.write(doc)
            written += len(doc.encode("utf-8"))


class PeakRSS:
    """Peak resident memory of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                for p in [self.proc] + self.proc.children(recursive=True):
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                break
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _run_tree(cmd, env=None) -> tuple[float, int, str, float]:
    """(wall s, peak RSS of the tree, output, CPU s of the tree) of a command."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    rss = PeakRSS(p.pid)
    out, _ = p.communicate()
    peak = rss.stop()
    if p.returncode:
        raise SystemExit(f"{cmd} failed:\n{out[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(after, f) - getattr(before, f) for f in ("ru_utime", "ru_stime"))
    return time.perf_counter() - t, peak, out, cpu


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def cmd_prepare(args):
    os.makedirs(args.workdir, exist_ok=True)
    for mb in args.mb:
        corpus = os.path.join(args.workdir, f"corpus-{mb}mb.txt")
        if not os.path.exists(corpus):
            generate_corpus(corpus, mb << 20)
        store = os.path.join(args.workdir, f"store-{mb}mb")
        subprocess.run(["rm", "-rf", store], check=True)
        cmd = [sys.executable, "-m", "jaxformer.cli", "prepare", "--input", corpus]
        cmd += ["--output", store, "--tokenizer-family", "bert", "--vocab-size", "30522"]
        cmd += ["--no-progress"] + (["--workers", str(args.workers)] if args.workers else [])
        dt, peak, out, cpu = _run_tree(cmd, _env())
        size = os.path.getsize(corpus) / 2**20
        print(
            f"prepare {size:7.1f} MB: {dt:7.1f} s, {size / dt:6.2f} MB/s wall, "
            f"{size / cpu:6.2f} MB per CPU-second, peak RSS {peak / 2**30:.2f} GiB "
            f"(process tree); {out.strip().splitlines()[-1]}",
            flush=True,
        )


def _read_share(job):
    """Reads `batches` batches of process `index`'s share; returns (tokens, wall s, CPU s)."""
    store_dir, seq, batch, batches, objective, masking, pack, index, count = job
    from jaxformer.data import PretrainingConfig
    from jaxformer.data.lazy import StoreExamples, store_batches
    from jaxformer.data.store import Store

    store = Store(store_dir, verify=False)
    cfg = PretrainingConfig(max_seq_len=seq, objective=objective)
    ex = StoreExamples(store, store.tokenizer(), cfg, masking=masking, pack=pack)
    ds = store_batches(ex, batch, process_index=index, process_count=count)
    ds[0]
    # Batches built in this thread, one after the other: grain's read-ahead threads (what
    # DataIterator uses) would otherwise hand out batches built before the clock started.
    tokens, t, c = 0, time.perf_counter(), time.process_time()
    for b in range(1, batches + 1):
        tokens += int(ds[b]["attention_mask"].sum())
    return tokens, time.perf_counter() - t, time.process_time() - c


def _loader_rate(store_dir, seq, batch, batches, objective, workers):
    """Wall tokens/s of batches taken from a loader: `DataIterator`'s prefetch thread
    (workers=0) or grain's mp_prefetch with `workers` processes; start-up not timed."""
    import grain

    from jaxformer.data import DataIterator, PretrainingConfig
    from jaxformer.data.lazy import StoreExamples, store_batches
    from jaxformer.data.store import Store

    store = Store(store_dir, verify=False)
    cfg = PretrainingConfig(max_seq_len=seq, objective=objective)
    ex = StoreExamples(store, store.tokenizer(), cfg, masking="device", pack=True)
    ds = store_batches(ex, batch)
    if workers:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags
            flags.FLAGS.mark_as_parsed()
        opts = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=4)
        it = iter(ds.to_iter_dataset().mp_prefetch(opts))
    else:
        it = DataIterator(ds, prefetch=4)
    for _ in range(2 * max(1, workers)):  # workers started, buffers primed
        next(it)
    tokens, t = 0, time.perf_counter()
    for _ in range(batches):
        tokens += int(next(it)["attention_mask"].sum())
    wall = time.perf_counter() - t
    if hasattr(it, "close"):
        it.close()
    return tokens / wall


def cmd_read(args):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    for masking, pack in (("device", True), ("device", False), ("dynamic", True)):
        for procs in (1, 2):
            jobs = [
                (args.store, args.seq, args.batch, args.batches, args.objective, masking, pack)
                + (i, procs)
                for i in range(procs)
            ]
            with ctx.Pool(procs) as pool:
                res = pool.map(_read_share, jobs)
            tokens = sum(r[0] for r in res)
            wall = max(r[1] for r in res)
            cpu = sum(r[2] for r in res)
            print(
                f"read {args.objective} masking={masking:7s} packed={pack!s:5s} "
                f"{procs} process(es): {tokens / wall:10.0f} tokens/s wall, "
                f"{tokens / cpu:10.0f} tokens per CPU-second "
                f"({args.batches} batches of {args.batch} x {args.seq} each)",
                flush=True,
            )
    for workers, name in ((0, "prefetch thread"), (2, "grain mp_prefetch, 2 workers")):
        rate = _loader_rate(args.store, args.seq, args.batch, args.batches, args.objective, workers)
        print(
            f"read {args.objective} masking=device  packed=True  1 process, {name}: "
            f"{rate:10.0f} tokens/s wall",
            flush=True,
        )


def cmd_train(args):
    import tempfile

    work = tempfile.mkdtemp(prefix="jf-bench-train-")
    cmd = [sys.executable, "train.py", "--config", "configs/bert_tiny_pretrain.py"]
    cmd += [f"--config.data.source=store:{args.store}", f"--config.stop_after_steps={args.steps}"]
    cmd += ["--config.model.vocab_size=30522", "--config.log.progress=False"]
    cmd += ["--config.log.eval_every_steps=0", "--config.checkpoint.best_metric="]
    cmd += ["--config.log.plot=False", "--workdir", work]
    env = dict(_env(), JAX_PLATFORMS="cpu")
    dt, peak, _, cpu = _run_tree(cmd, env)
    print(
        f"train.py to step {args.steps} on {args.store}: {dt:.1f} s ({cpu:.1f} CPU-s), "
        f"peak RSS {peak / 2**30:.2f} GiB (process tree)",
        flush=True,
    )


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--mb", type=int, nargs="+", default=[20, 300])
    p.add_argument("--workdir", default="/tmp/jf-bench")
    p.add_argument("--workers", type=int, default=None)
    r = sub.add_parser("read")
    r.add_argument("--store", required=True)
    r.add_argument("--seq", type=int, default=128)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--batches", type=int, default=100)
    r.add_argument("--objective", default="nsp")
    t = sub.add_parser("train")
    t.add_argument("--store", required=True)
    t.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    np.set_printoptions(precision=3)
    {"prepare": cmd_prepare, "read": cmd_read, "train": cmd_train}[args.what](args)


if __name__ == "__main__":
    main()
