"""MLM masking on the device: its cost per step, and what it saves the host pipeline.

  python benchmarks/device_masking.py [--repeats 20] [--batches 100] [--skip-pipeline]

1. `objectives.masking.device_mask`, jitted, on the default backend: ms per call (median and
   min: on a loaded machine the min is the better estimate of the cost) for batch
   256 x 128 (P=20) and 32 x 512 (P=80), token-level and whole-word, beside the host masker
   (`data.masking.Masker`, numpy) on the same rows.
2. The existing host pipeline (`pretraining_dataset` -> `DataIterator`, default corpus, BERT
   WordPiece, NSP, seq 128, batch 32): real tokens/s with masking="dynamic" (host masks) vs
   "device" (ids only), unpacked and packed.
"""

import argparse
import time

import jax
import numpy as np

from jaxformer.data.masking import Masker, MaskingConfig
from jaxformer.objectives.masking import device_mask

VOCAB, SPECIALS, MASK_ID = 30522, np.arange(5), 4


class _Tok:  # what Masker reads of a tokenizer
    mask_id, special_ids, vocab_size = MASK_ID, SPECIALS, VOCAB

    def word_starts(self, ids):
        return self.starts


def _rows(batch, seq, rng):
    """Rows of random non-special ids with [CLS]/[SEP], lengths 60-100% of seq, padded."""
    ids = rng.integers(5, VOCAB, (batch, seq)).astype(np.int32)
    n = rng.integers(int(0.6 * seq), seq + 1, batch)
    real = np.arange(seq)[None] < n[:, None]
    ids[:, 0] = 2
    ids[np.arange(batch), n - 1] = 3
    ids = np.where(real, ids, 0).astype(np.int32)
    starts = rng.random((batch, seq)) < 0.75  # ~1.3 pieces per word
    return ids, real.astype(np.int32), starts


def _time(fn, repeats):
    fn()  # compile / warm
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts)), 1e3 * float(np.min(ts))


def _cost(ids, attn, starts, cfg, repeats):
    """((median, min) device ms per step, (median, min) host ms per batch) for one batch."""
    fn = jax.jit(
        lambda k, i, a, w: device_mask(
            k,
            i,
            special_ids=SPECIALS,
            mask_id=MASK_ID,
            vocab_size=VOCAB,
            config=cfg,
            attention_mask=a,
            word_starts=w,
        )
    )
    args = [jax.device_put(x) for x in (ids, attn, starts if cfg.whole_word else None)]
    keys = iter(jax.random.split(jax.random.key(0), repeats + 1))
    dev = _time(lambda: jax.block_until_ready(fn(next(keys), *args)), repeats)
    tok = _Tok()
    masker = Masker(tok, cfg)
    rng = np.random.default_rng(0)

    def host():
        for r, s in zip(ids, starts):
            tok.starts = s
            masker(r, rng)

    return dev, _time(host, max(3, repeats // 5))


def bench_device_mask(repeats):
    rng = np.random.default_rng(0)
    print(f"device_mask on {jax.devices()[0].device_kind} (median of {repeats}, jitted)")
    for batch, seq, slots in ((256, 128, 20), (32, 512, 80)):
        ids, attn, starts = _rows(batch, seq, rng)
        for whole in (False, True):
            cfg = MaskingConfig(max_predictions=slots, whole_word=whole)
            dev, hst = _cost(ids, attn, starts, cfg, repeats)
            kind = "whole-word" if whole else "token     "
            print(
                f"  {batch:3d} x {seq:3d} P={slots:2d} {kind}: device {dev[0]:7.2f} ms/step "
                f"(min {dev[1]:6.2f})   host masker {hst[0]:7.1f} ms/batch (min {hst[1]:6.1f})"
            )


def bench_pipeline(batches):
    from jaxformer.data import (
        DataIterator,
        PretrainingConfig,
        batch_dataset,
        create_instances,
        default_corpus,
        pretraining_dataset,
        train_tokenizer,
    )

    docs = default_corpus()
    tok = train_tokenizer(docs, "bert", vocab_size=8000)
    cfg = PretrainingConfig(max_seq_len=128, objective="nsp")
    insts, _ = create_instances(docs, tok, cfg, seed=0)
    print(f"host pipeline: {len(insts)} NSP instances, seq 128, batch 32, {batches} batches")
    for pack in (False, True):
        for masking in ("dynamic", "device"):
            ds = pretraining_dataset(
                insts, tok, cfg, masking=masking, seed=0, num_epochs=None, pack=pack
            )
            it = DataIterator(batch_dataset(ds, 32), prefetch=4)
            next(it)
            tokens, t = 0, time.perf_counter()
            for _ in range(batches):
                tokens += int(next(it)["attention_mask"].sum())
            dt = time.perf_counter() - t
            it.close()
            print(
                f"  {'packed  ' if pack else 'unpacked'} masking={masking:7s}: "
                f"{tokens / dt:10.0f} tokens/s"
            )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args()
    bench_device_mask(args.repeats)
    if not args.skip_pipeline:
        bench_pipeline(args.batches)


if __name__ == "__main__":
    main()
