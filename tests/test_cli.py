"""The `jaxformer` command line: each sub-command through `main([...])`, stdin input, JSON
output, error exit status, and the installed console script once."""

import io
import json
import os
import subprocess
import sys

import pytest

from test_pipelines_helpers import NER_LABELS, make_hf_dir

import transformers  # noqa: F401  (the reference must be installed: no silent skip)

from jaxformer.cli import main


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return {
        "mlm": make_hf_dir(root / "mlm", "mlm"),
        "cls": make_hf_dir(root / "cls", "sequence_classification", labels=["neg", "pos"]),
        "ner": make_hf_dir(root / "ner", "token_classification", labels=NER_LABELS),
        "qa": make_hf_dir(root / "qa", "question_answering"),
    }


def run(capsys, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fill_mask_table_and_json(models, capsys):
    code, out, _ = run(
        capsys,
        "fill-mask",
        "--model",
        models["mlm"],
        "--top-k",
        "3",
        "paris is the [MASK] of france.",
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["text", "mask", "rank", "token_str"] and len(lines) == 4
    code, out, _ = run(
        capsys,
        "fill-mask",
        "--model",
        models["mlm"],
        "--json",
        "--top-k",
        "2",
        "paris is the [MASK] of france.",
        "[MASK] works at [MASK].",
    )
    res = json.loads(out)
    assert len(res) == 2 and len(res[0]) == 2 and len(res[1]) == 2 and len(res[1][0]) == 2
    assert {"score", "token", "token_str", "sequence"} <= set(res[0][0])


def test_classify_pairs_and_stdin(models, capsys, monkeypatch):
    code, out, _ = run(
        capsys,
        "classify",
        "--model",
        models["cls"],
        "--json",
        stdin="paris is big\n\nlondon is old\n",
        monkeypatch=monkeypatch,
    )
    res = json.loads(out)
    assert code == 0 and len(res) == 2 and res[0]["label"] in ("neg", "pos")
    code, out, _ = run(
        capsys,
        "classify",
        "--model",
        models["cls"],
        "--top-k",
        "2",
        "who works?",
        "--pair",
        "john works.",
    )
    assert code == 0 and "who works? || john works." in out and "neg" in out and "pos" in out


def test_answer_tag_and_summarize(models, capsys, monkeypatch):
    code, out, _ = run(
        capsys,
        "answer",
        "--model",
        models["qa"],
        "--json",
        "--question",
        "where is the tower?",
        "--context",
        "the tower is in paris.",
    )
    res = json.loads(out)
    assert code == 0 and res["answer"] == "the tower is in paris."[res["start"] : res["end"]]
    code, out, _ = run(
        capsys,
        "answer",
        "--model",
        models["qa"],
        "where is the tower?",
        stdin="the famous tower is in paris. " * 20,
        monkeypatch=monkeypatch,
    )
    assert code == 0 and out.splitlines()[0].split() == ["answer", "score", "start", "end"]
    code, out, _ = run(
        capsys, "tag", "--model", models["ner"], "--json", "john smith works at google."
    )
    assert code == 0 and all({"entity_group", "start", "end"} <= set(e) for e in json.loads(out)[0])
    code, out, _ = run(
        capsys,
        "summarize",
        "--model",
        models["cls"],
        "--sentences",
        "2",
        stdin="Paris is big. London is old. John works. Mary lives in Rome.",
        monkeypatch=monkeypatch,
    )
    assert code == 0 and len(out.strip().split("\n\n")[-1].split(". ")) == 2
    code, out, _ = run(
        capsys,
        "similar",
        "--model",
        models["cls"],
        "--json",
        "--query",
        "paris",
        "paris is big",
        "john works",
    )
    assert code == 0 and sorted(r["index"] for r in json.loads(out)) == [0, 1]
    code, out, _ = run(capsys, "embed", "--model", models["cls"], "--json", "paris")
    assert code == 0 and len(json.loads(out)[0]["vector"]) == 32


def test_errors_exit_2_with_a_message(models, capsys):
    code, _, err = run(capsys, "fill-mask", "--model", models["mlm"], "no mask here")
    assert code == 2 and "no mask token" in err
    code, _, err = run(capsys, "answer", "--model", models["mlm"], "q?", "--context", "c")
    assert code == 2 and "needs a model with head 'question_answering'" in err
    code, _, err = run(capsys, "tag", "--model", "/nonexistent/dir", "x")
    assert code == 2 and "does not exist" in err


def test_console_script_help():
    exe = os.path.join(os.path.dirname(sys.executable), "jaxformer")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "jaxformer.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for task in (
        "fill-mask",
        "classify",
        "answer",
        "tag",
        "embed",
        "similar",
        "summarize",
        "translate",
    ):
        assert task in out.stdout


def test_options_left_out_take_the_pipelines_defaults(models, capsys):
    """Without --top-k / --aggregation the command answers as the pipeline called with its
    own defaults; a bad --aggregation is the pipeline's one-line error (exit 2)."""
    import inspect

    from jaxformer.inference import pipelines

    top_k = inspect.signature(pipelines.FillMask.__call__).parameters["top_k"].default
    code, out, _ = run(capsys, "fill-mask", "--model", models["mlm"], "--json", "[MASK] works.")
    assert code == 0 and len(json.loads(out)[0]) == top_k
    text = "john smith works at google in paris."
    code, out, _ = run(capsys, "tag", "--model", models["ner"], "--json", text)
    assert json.loads(out) == json.loads(json.dumps(pipelines.Tag(models["ner"])([text])))
    code, _, err = run(capsys, "tag", "--model", models["ner"], "--aggregation", "mean", text)
    assert code == 2 and "use one of" in err and len(err.strip().splitlines()) == 1
