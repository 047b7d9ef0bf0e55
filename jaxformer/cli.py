"""The `jaxformer` command line: one sub-command per inference pipeline, and `prepare`.

    jaxformer fill-mask --model DIR "Paris is the [MASK] of France."
    jaxformer classify  --model DIR "great film" --pair "loved it"
    jaxformer answer    --model DIR --question "Where is the tower?" --context-file doc.txt
    jaxformer tag       --model DIR --aggregation first "John works at Google."
    jaxformer embed     --model DIR "a sentence" "another"
    jaxformer similar   --model DIR --query "cats" "dogs purr" "stocks fell"
    jaxformer summarize --model DIR --sentences 3 < article.txt
    jaxformer translate --model DIR --beam 4 "Guten Morgen."
    jaxformer prepare   --input "corpus/*.txt" --output store --tokenizer-family bert \
                        --vocab-size 30522          (a pretraining store: docs/data.md)

Texts come from the arguments, else one per line of stdin (summarize and answer's context
read all of stdin as one text). Output is a table, or JSON with --json. Bad input exits
with status 2 and a one-line error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

TASK_HELP = {
    "fill-mask": "top-k fillers for each mask token",
    "classify": "sequence classification (single texts or pairs)",
    "answer": "extractive question answering over a context of any length",
    "tag": "token classification / named entities",
    "embed": "sentence embeddings (L2-normalised)",
    "similar": "rank texts by cosine similarity to a query",
    "summarize": "extractive summary: sentences closest to the centroid",
    "translate": "translate with an encoder-decoder checkpoint",
}


# Options left out take the pipeline's own default (one place: the pipeline's signature).
DEFAULT = "default: the pipeline's"


def _given(**options) -> dict:
    """The options given on the command line (not None)."""
    return {k: v for k, v in options.items() if v is not None}


def _given_args(args, *names: str) -> dict:
    """`_given` of the parsed options `names`, each the pipeline keyword of its name."""
    return _given(**{name: getattr(args, name) for name in names})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxformer", description="jaxformer inference pipelines.")
    sub = p.add_subparsers(dest="task", required=True, metavar="TASK")
    for task, help_ in TASK_HELP.items():
        s = sub.add_parser(task, help=help_, description=help_)
        s.add_argument(
            "--model",
            required=True,
            help="HuggingFace model directory or jaxformer checkpoint directory",
        )
        s.add_argument("--json", action="store_true", help="print JSON instead of a table")
        s.add_argument("--batch-size", type=int, help=DEFAULT)
        s.add_argument("texts", nargs="*", help="inputs (default: lines of stdin)")
        if task in ("fill-mask", "classify", "answer", "similar"):
            s.add_argument("--top-k", type=int, help=DEFAULT)
        if task == "classify":
            s.add_argument(
                "--pair",
                action="append",
                default=None,
                help="second text of a pair (once per text)",
            )
        if task == "answer":
            s.add_argument("--question", help="the question (else the first argument)")
            s.add_argument("--context", help="the context (else --context-file, or stdin)")
            s.add_argument("--context-file")
            s.add_argument("--max-answer-len", type=int, help=DEFAULT)
            s.add_argument("--max-seq-len", type=int, help=DEFAULT)
            s.add_argument("--doc-stride", type=int, help=DEFAULT)
            s.add_argument(
                "--allow-no-answer",
                action="store_true",
                help="SQuAD 2.0 models: return the empty answer when it wins",
            )
        if task == "tag":
            s.add_argument("--aggregation", help="none, simple, first, average or max; " + DEFAULT)
        if task in ("embed", "similar", "summarize"):
            s.add_argument("--pooling", help="mean, cls or max; " + DEFAULT)
        if task == "similar":
            s.add_argument("--query", required=True)
        if task == "summarize":
            s.add_argument("--sentences", type=int, help=DEFAULT)
        if task == "translate":
            s.add_argument("--beam", type=int, help=DEFAULT)
            s.add_argument("--max-length", type=int, help=DEFAULT)
    from jaxformer.data.store import add_prepare_parser

    add_prepare_parser(sub)
    return p


def _inputs(args) -> list[str]:
    """The texts of the arguments, else the non-blank lines of stdin; none is an error."""
    from jaxformer.inference.pipelines import PipelineError

    texts = list(args.texts) or [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise PipelineError(
            f"{args.task}: no input texts; give them as arguments or one per line on stdin."
        )
    return texts


def _table(rows: list[dict], columns: Sequence[str]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _run(args) -> tuple[object, str]:
    """(JSON-able result, table text) for the parsed arguments."""
    from jaxformer.inference import pipelines

    task = args.task
    if task == "translate":
        pipe = pipelines.Translate(args.model, **_given_args(args, "batch_size"))
        texts = _inputs(args)
        out = pipe(texts, **_given_args(args, "beam", "max_length"))
        return (
            [{"text": t, "translation": o} for t, o in zip(texts, out)],
            _table(
                [{"text": t, "translation": o} for t, o in zip(texts, out)], ["text", "translation"]
            ),
        )
    pipe = pipelines.PIPELINES[task](args.model, **_given_args(args, "batch_size"))
    if task == "fill-mask":
        texts = _inputs(args)
        res = pipe(texts, **_given_args(args, "top_k"))
        rows = []
        for t, r in zip(texts, res):
            per_mask = r if r and isinstance(r[0], list) else [r]
            for m, cands in enumerate(per_mask):
                rows += [
                    {"text": t, "mask": m + 1, "rank": k + 1, **c} for k, c in enumerate(cands)
                ]
        return res, _table(rows, ["text", "mask", "rank", "token_str", "score", "sequence"])
    if task == "classify":
        texts = _inputs(args)
        if args.pair:
            if len(args.pair) != len(texts):
                raise pipelines.PipelineError(
                    f"classify: {len(texts)} texts but {len(args.pair)} --pair values."
                )
            texts = [(a, b) for a, b in zip(texts, args.pair)]
        res = pipe(texts, **_given_args(args, "top_k"))
        rows = []
        for t, r in zip(texts, res):
            for c in r if isinstance(r, list) else [r]:
                rows.append({"text": t if isinstance(t, str) else " || ".join(t), **c})
        return res, _table(rows, ["text", "label", "score"])
    if task == "answer":
        question = args.question
        rest = list(args.texts)
        if question is None:
            if not rest:
                raise pipelines.PipelineError(
                    "answer: give --question or the question as the first argument."
                )
            question = rest.pop(0)
        context = args.context
        if context is None and args.context_file:
            with open(args.context_file) as f:
                context = f.read()
        if context is None:
            context = " ".join(rest) if rest else sys.stdin.read()
        res = pipe(
            question,
            context,
            handle_impossible_answer=args.allow_no_answer,
            **_given_args(args, "top_k", "max_answer_len", "max_seq_len", "doc_stride"),
        )
        rows = res if isinstance(res, list) else [res]
        return res, _table(rows, ["answer", "score", "start", "end"])
    if task == "tag":
        texts = _inputs(args)
        res = pipe(texts, **_given_args(args, "aggregation"))
        key = "entity" if args.aggregation == "none" else "entity_group"
        rows = [{"text": i + 1, **e} for i, r in enumerate(res) for e in r]
        return res, _table(rows, ["text", key, "word", "score", "start", "end"])
    if task == "embed":
        texts = _inputs(args)
        vecs = pipe(texts, pooling=args.pooling)
        res = [{"text": t, "vector": v.tolist()} for t, v in zip(texts, vecs)]
        rows = [
            {
                "text": t,
                "dim": v.shape[0],
                "norm": float(np.linalg.norm(v)),
                "head": " ".join(f"{x:+.3f}" for x in v[:4]) + " ...",
            }
            for t, v in zip(texts, vecs)
        ]
        return res, _table(rows, ["text", "dim", "norm", "head"])
    if task == "similar":
        texts = _inputs(args)
        res = pipe.similar(args.query, texts, top_k=args.top_k, pooling=args.pooling)
        return res, _table(
            [{"rank": k + 1, **r} for k, r in enumerate(res)], ["rank", "score", "text"]
        )
    text = " ".join(args.texts) if args.texts else sys.stdin.read()
    res = pipe.summarize(text, pooling=args.pooling, **_given(n_sentences=args.sentences))
    rows = [
        {"index": i, "score": s, "sentence": t}
        for i, s, t in zip(res["indices"], res["scores"], res["sentences"])
    ]
    return res, _table(rows, ["index", "score", "sentence"]) + "\n\n" + res["summary"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `jaxformer` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.task == "prepare":
        from jaxformer.data.store import prepare_main

        return prepare_main(args)
    from jaxformer.convert.huggingface import ModelFileError
    from jaxformer.inference.pipelines import PipelineError
    from jaxformer.models.configs import ConfigError

    try:
        result, table = _run(args)
    except (PipelineError, ConfigError, ModelFileError, FileNotFoundError) as e:
        print(f"jaxformer {args.task}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=float) if args.json else table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
