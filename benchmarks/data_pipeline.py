"""Input-pipeline throughput: pretraining examples with dynamic masking and packing.

  python benchmarks/data_pipeline.py [--seq 128] [--batch 32] [--batches 200]

Builds the default corpus (cached), trains a WordPiece tokenizer, creates instances, then
times `DataIterator` over batches (dynamic masking, with and without packing, with the
background prefetch thread). Prints examples/s (packed rows count their segments) and
real tokens/s, plus the padding fraction with and without packing.
"""

import argparse
import time

from jaxformer.data import (
    DataIterator,
    PretrainingConfig,
    batch_dataset,
    create_instances,
    default_corpus,
    padding_fraction,
    pretraining_dataset,
    train_tokenizer,
)
from jaxformer.data.packing import Packer, default_packed_predictions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--objective", default="nsp")
    args = ap.parse_args()
    t0 = time.perf_counter()
    docs = default_corpus()
    tok = train_tokenizer(docs, "bert", vocab_size=8000)
    t1 = time.perf_counter()
    cfg = PretrainingConfig(max_seq_len=args.seq, objective=args.objective)
    insts, stats = create_instances(docs, tok, cfg, seed=0)
    t2 = time.perf_counter()
    print(
        f"corpus+tokenizer {t1 - t0:.1f}s; {len(insts)} instances from {len(docs)} documents "
        f"in {t2 - t1:.1f}s ({len(insts) / (t2 - t1):.0f} instances/s); skipped: "
        f"{ {k: v for k, v in stats.items() if k != 'instances'} }"
    )
    lengths = [len(x["input_ids"]) for x in insts]
    for pack in (False, True):
        t = time.perf_counter()
        ds = pretraining_dataset(
            insts, tok, cfg, masking="dynamic", seed=0, num_epochs=None, pack=pack
        )
        plan_s = time.perf_counter() - t
        it = DataIterator(batch_dataset(ds, args.batch), prefetch=4)
        next(it)  # warm the thread
        examples = tokens = 0
        t = time.perf_counter()
        for _ in range(args.batches):
            b = next(it)
            tokens += int(b["attention_mask"].sum())
            examples += int(b["segment_ids"].max(1).sum()) if pack else len(b["input_ids"])
        dt = time.perf_counter() - t
        it.close()
        name = "packed  " if pack else "unpacked"
        print(
            f"{name}: {examples / dt:8.0f} examples/s  {tokens / dt:10.0f} tokens/s  "
            f"({args.batches} batches of {args.batch} x {args.seq}; setup {plan_s:.2f}s)"
        )
    packer = Packer(args.seq, tok.pad_id, max_predictions=default_packed_predictions(cfg))
    bound = [packer.prediction_bound(n, cfg.masking) for n in lengths]
    n_rows = len(packer.plan(lengths, bound))
    print(
        f"padding fraction: unpacked {padding_fraction(lengths, args.seq):.3f}, packed "
        f"{padding_fraction(lengths, args.seq, n_rows):.3f} ({len(lengths)} -> {n_rows} rows)"
    )


if __name__ == "__main__":
    main()
