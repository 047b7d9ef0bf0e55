"""Fine-tuning on your own files: CSV / TSV / JSONL readers, label names, one-line errors
naming file and line, and (slow) the docs' worked example fine-tuned and evaluated from the
command line with relative paths."""

import json
import os
import shutil

import pytest

from jaxformer.inference import pipelines

from jaxformer.data import labelled as L
from jaxformer.recipes import configs as recipes
from jaxformer.tasks.finetune import FineTuneTask, config_label_names, file_records
from jaxformer.training import config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "own_data")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_csv_pairs_with_label_names_read_from_the_data(tmp_path):
    f = write(tmp_path / "a.csv", 'q,a,y\nhi,"there, you",pos\nho,hum,neg\n\nha,he,pos\n')
    rows = L.read_rows(f, "csv")
    assert [n for n, _ in rows] == [2, 3, 5]  # file lines, for error messages
    recs, names = L.classification_records(rows, f, L.Fields(text="q", pair="a", label="y"))
    assert names == ("neg", "pos")  # sorted distinct labels
    assert recs == [
        {"text": "hi", "pair": "there, you", "label": 1},
        {"text": "ho", "pair": "hum", "label": 0},
        {"text": "ha", "pair": "he", "label": 1},
    ]
    # Stated order wins: pos is class 0.
    recs, names = L.classification_records(
        rows, f, L.Fields(text="q", pair="a", label="y"), label_names=("pos", "neg")
    )
    assert names == ("pos", "neg") and [r["label"] for r in recs] == [0, 1, 0]


def test_tsv_integer_labels_sort_numerically_and_jsonl_ids(tmp_path):
    f = write(tmp_path / "a.tsv", "text\tlabel\nx, y\t10\nz\t2\nw\t2\n")
    recs, names = L.classification_records(L.read_rows(f, "tsv"), f)
    assert names == ("2", "10") and [r["label"] for r in recs] == [1, 0, 0]
    assert recs[0]["text"] == "x, y" and recs[0]["pair"] is None
    j = write(tmp_path / "a.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "neg"}\n')
    recs, _ = L.classification_records(L.read_rows(j, "jsonl"), j, label_names=("neg", "pos"))
    assert [r["label"] for r in recs] == [1, 0]  # JSON 1 is a class id into given names


def test_regression_labels(tmp_path):
    f = write(tmp_path / "r.csv", "text,label\na,0.5\nb,-2\n")
    recs, names = L.classification_records(L.read_rows(f, "csv"), f, regression=True)
    assert names is None and [r["label"] for r in recs] == [0.5, -2.0]
    bad = write(tmp_path / "bad.csv", "text,label\na,0.5\nb,high\n")
    with pytest.raises(L.DataFileError, match=r"bad\.csv:3: regression label 'high'"):
        L.classification_records(L.read_rows(bad, "csv"), bad, regression=True)


def test_token_records(tmp_path):
    f = write(
        tmp_path / "t.jsonl",
        json.dumps({"tokens": ["Ann", "met", "Bo"], "tags": ["B-PER", "O", "B-PER"]})
        + "\n"
        + json.dumps({"tokens": ["in", "Rome"], "tags": ["O", "B-LOC"]})
        + "\n",
    )
    recs, names = L.token_records(L.read_rows(f, "jsonl"), f)
    assert names == ("B-LOC", "B-PER", "O")
    assert recs == [
        {"words": ["Ann", "met", "Bo"], "tags": [1, 2, 1]},
        {"words": ["in", "Rome"], "tags": [2, 0]},
    ]


@pytest.mark.parametrize(
    "name, text, fmt, kwargs, message",
    [
        ("e.csv", "", "csv", {}, r"e\.csv: the file is empty"),
        ("h.csv", "text,label\n", "csv", {}, r"h\.csv: a header \(text, label\) but no rows"),
        ("m.csv", "text,lab\na,pos\n", "csv", {}, r"m\.csv:2: no label field 'label'.*label_field"),
        ("x.csv", "text,label\na,b,c\n", "csv", {}, r"x\.csv:2: 3 cells, but the header has 2"),
        ("z.csv", "text,label\n ,pos\n", "csv", {}, r"z\.csv:2: field 'text' is empty"),
        (
            "u.csv",
            "text,label\na,maybe\n",
            "csv",
            {"label_names": ("neg", "pos")},
            r"u\.csv:2: unknown label 'maybe'.*neg, pos",
        ),
        (
            "j.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b"\n',
            "jsonl",
            {},
            r"j\.jsonl:2: not valid JSON",
        ),
        ("l.jsonl", '["a", 1]\n', "jsonl", {}, r"l\.jsonl:1: a JSONL line must be an object"),
    ],
)
def test_bad_rows_are_one_line_errors_naming_file_and_line(
    tmp_path, name, text, fmt, kwargs, message
):
    f = write(tmp_path / name, text)
    with pytest.raises(L.DataFileError, match=message) as e:
        L.classification_records(L.read_rows(f, fmt), f, **kwargs)
    assert "\n" not in str(e.value)


def test_missing_file_and_tag_mismatch(tmp_path):
    with pytest.raises(L.DataFileError, match=r"data file 'nope\.csv' does not exist"):
        L.read_rows("nope.csv", "csv")
    f = write(tmp_path / "t.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n')
    with pytest.raises(L.DataFileError, match=r"t\.jsonl:1: 2 tokens but 1 tags"):
        L.token_records(L.read_rows(f, "jsonl"), f)


def config_for(source, **overrides):
    c = recipes.finetune(source=source)
    c.lock()
    for k, v in overrides.items():
        config_lib.apply_override(c, k, v)
    return c


def test_label_names_from_the_command_line_and_relative_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "train.csv", "text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(10))
    )
    write(tmp_path / "dev.csv", "text,label\nu,a\nv,c\n")
    c, _, _ = config_lib.parse_args(
        [
            "--config",
            os.path.join(ROOT, "configs", "finetune_tiny.py"),
            "--config.data.source=csv:train.csv",
            "--config.finetune.label_names=b,a",
        ]
    )
    assert config_label_names(c.finetune.label_names) == ("b", "a")
    train, evals, names = file_records(c.data, "sequence_classification", False, ("b", "a"))
    assert names == ("b", "a") and len(train) == 9 and len(evals) == 1  # eval_fraction 0.1
    assert sorted(r["label"] for r in train + evals) == [0] * 5 + [1] * 5
    # An eval file's labels must be the training file's: "c" is not.
    c = config_for("csv:train.csv", **{"data.eval_source": "csv:dev.csv"})
    with pytest.raises(
        L.DataFileError, match=r"dev\.csv:3: unknown label 'c'.*read from train\.csv.*a, b"
    ):
        file_records(c.data, "sequence_classification", False)
    assert config_label_names("['b', 'a']") == config_label_names(("b", "a")) == ("b", "a")
    assert config_label_names("") is None
    with pytest.raises(ValueError, match="distinct non-empty"):
        config_label_names("a,,b")


def test_the_task_takes_its_classes_from_the_file(tmp_path):
    f = write(
        tmp_path / "t.csv", "text,label\n" + "".join(f"t{i},{'xyz'[i % 3]}\n" for i in range(30))
    )
    task = FineTuneTask(config_for(f"csv:{f}"), str(tmp_path / "w"))
    assert task.model_cfg.num_labels == 3 and task.model_cfg.label_names == ("x", "y", "z")
    with pytest.raises(ValueError, match="2 names but finetune.num_labels is 3"):
        FineTuneTask(
            config_for("keyword", **{"finetune.num_labels": "3", "finetune.label_names": "a,b"}),
            str(tmp_path),
        )
    r = write(tmp_path / "r.csv", "text,label\na,1.5\nb,2\nc,0\n")
    reg = FineTuneTask(config_for(f"csv:{r}", **{"finetune.num_labels": "1"}), str(tmp_path / "r"))
    assert reg.model_cfg.num_labels == 1 and reg.model_cfg.label_names is None
    assert sorted(r["label"] for r in reg._records()[0] + reg._records()[1]) == [0.0, 1.5, 2.0]


# ---- the worked example of docs/finetuning.md, run as written --------------------------------
QUIET = [
    "--config.log.progress=false",
    "--config.log.plot=false",
    "--config.log.tensorboard=false",
    "--config.num_train_steps=120",
    "--config.log.eval_every_steps=120",
    "--config.checkpoint.every_steps=120",
    "--config.batch_size=16",
]


def train(args, workdir, capsys):
    from jaxformer import launch as cli

    config = os.path.join(ROOT, "configs", "finetune_tiny.py")
    assert cli.main(["--config", config, "--workdir", workdir, *args, *QUIET]) == 0
    capsys.readouterr()
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


def jaxformer(capsys, *argv):
    from jaxformer import cli

    assert cli.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_the_worked_example_fine_tunes_and_evaluates(tmp_path, monkeypatch, capsys):
    # The commands of docs/finetuning.md, with its relative paths, in a copy of the examples.
    shutil.copytree(EXAMPLES, tmp_path / "examples" / "own_data")
    monkeypatch.chdir(tmp_path)
    s = train(
        [
            "--config.data.source=csv:examples/own_data/reviews_train.csv",
            "--config.data.eval_source=csv:examples/own_data/reviews_eval.csv",
            "--config.data.text_field=review",
            "--config.data.pair_field=product",
        ],
        "runs/reviews",
        capsys,
    )
    # 3 balanced classes: chance is about 1/3; the wording decides the label.
    assert s["eval_task_accuracy"] >= 0.9, s
    assert s["last_loss"] < 0.5 * s["first_loss"], s
    with open("runs/reviews/hf_export/config.json") as f:
        assert json.load(f)["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    got = jaxformer(
        capsys, "classify", "--model", "runs/reviews", "the kettle is awful", "--pair", "kettle"
    )
    assert got[0]["label"] == "negative"
    got = pipelines.Classify("runs/reviews/hf_export")(
        [
            ("honestly a superb lamp for the price", "lamp"),
            ("the desk is plain and arrived on time", "desk"),
        ]
    )
    assert [g["label"] for g in got] == ["positive", "neutral"]

    s = train(
        [
            "--config.data.source=jsonl:examples/own_data/people_train.jsonl",
            "--config.data.eval_source=jsonl:examples/own_data/people_eval.jsonl",
            "--config.finetune.head=token_classification",
            "--config.data.seq_len=32",
        ],
        "runs/people",
        capsys,
    )
    assert s["eval_task_entity_f1"] >= 0.9, s
    ents = jaxformer(
        capsys, "tag", "--model", "runs/people", "yesterday grace novak visited oslo ."
    )
    assert [(e["entity_group"], e["word"]) for e in ents[0]] == [
        ("PER", "grace novak"),
        ("LOC", "oslo"),
    ]


def test_a_bad_row_stops_train_py_with_one_line(tmp_path, capsys):
    from jaxformer import launch as cli

    f = write(tmp_path / "bad.csv", "text,label\na,pos\nb\n")
    rc = cli.main(
        [
            "--config",
            os.path.join(ROOT, "configs", "finetune_tiny.py"),
            "--workdir",
            str(tmp_path / "w"),
            f"--config.data.source=csv:{f}",
            *QUIET,
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "bad.csv:3: 1 cells, but the header has 2" in err, (
        err
    )


def test_an_eval_file_smaller_than_one_batch_still_evaluates(tmp_path, capsys):
    from jaxformer import launch as cli

    rows = "".join(f"word{i} word{i + 1},{'ab'[i % 2]}\n" for i in range(40))
    train_csv = write(tmp_path / "train.csv", "text,label\n" + rows)
    dev_csv = write(tmp_path / "dev.csv", "text,label\nword1 word2,b\nword2 word3,a\nword3,b\n")
    workdir = str(tmp_path / "run")
    argv = [
        "--config",
        os.path.join(ROOT, "configs", "finetune_tiny.py"),
        "--workdir",
        workdir,
        f"--config.data.source=csv:{train_csv}",
        f"--config.data.eval_source=csv:{dev_csv}",
        "--config.batch_size=16",
        "--config.num_train_steps=4",
        "--config.log.eval_every_steps=2",
        "--config.checkpoint.every_steps=0",
        "--config.log.progress=false",
        "--config.log.plot=false",
        "--config.log.tensorboard=false",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "less than one eval batch of 16" in out
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    # Three held-out rows: the accuracy is a multiple of 1/3, at step 2 and at the end.
    assert round(summary["eval_accuracy"] * 3, 6) in (0.0, 1.0, 2.0, 3.0)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        evals = [r["step"] for r in map(json.loads, f) if "eval_accuracy" in r]
    assert evals == [2, 4]
