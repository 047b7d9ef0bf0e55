"""Every kind of training workdir loads in the pipelines and the `jaxformer` CLI, by a path
relative to the current directory: pretraining, fine-tuning with and without its
`hf_export/`, and continued pretraining. Tiny runs of a few steps."""

import json
import os
import re
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from jaxformer import cli
from jaxformer.inference import pipelines
from jaxformer.tasks import get_task
from jaxformer.training import loop
from jaxformer.training.checkpoint import load_params
from jaxformer.training.config_lib import load_config_file

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = {"log.progress": False, "log.tensorboard": False, "log.plot": False}
STEPS = {
    "num_train_steps": 4,
    "checkpoint.every_steps": 4,
    "log.eval_every_steps": 0,
    "checkpoint.best_metric": "",
}


def configure(name, **overrides):
    c = load_config_file(os.path.join(ROOT, "configs", f"{name}.py"))
    for k, v in {**QUIET, **STEPS, **overrides}.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = v
    return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/pt (MLM pretraining), runs/ft (fine-tuned from it, exported), runs/ft_noexport
    (stopped before the end: no hf_export/), runs/cont (continued pretraining) and runs/el
    (ELECTRA pretraining)."""
    from jaxformer.data import default_corpus

    root = tmp_path_factory.mktemp("workdirs")
    corpus = root / "corpus.txt"
    docs = [re.sub(r"\n\s*\n", "\n", d.strip()) for d in default_corpus() if len(d) < 3000]
    corpus.write_text("\n\n".join(docs[:40]), encoding="utf-8")
    runs = root / "runs"
    pt = str(runs / "pt")
    text = {"data.source": f"text:{corpus}", "data.eval_fraction": 0.1}
    loop.train(
        configure("bert_tiny_pretrain", **text, **{"data.objective": "none", "model.head": "mlm"}),
        pt,
        get_task,
        log=lambda _: None,
    )
    ft = {"init_from": f"run:{pt}", "batch_size": 8}
    loop.train(configure("finetune_tiny", **ft), str(runs / "ft"), get_task, log=lambda _: None)
    loop.train(
        configure("finetune_tiny", **ft, **{"num_train_steps": 8, "stop_after_steps": 4}),
        str(runs / "ft_noexport"),
        get_task,
        log=lambda _: None,
    )
    loop.train(
        configure("continued_pretrain_tiny", **text, init_from=f"run:{pt}"),
        str(runs / "cont"),
        get_task,
        log=lambda _: None,
    )
    loop.train(
        configure("electra_tiny_pretrain", **text), str(runs / "el"), get_task, log=lambda _: None
    )
    return root


def test_fine_tuning_workdirs_load_with_and_without_their_export(runs, monkeypatch):
    from jaxformer.tasks.finetune import FineTuneTask

    monkeypatch.chdir(runs)
    assert not os.path.exists("runs/ft_noexport/hf_export")
    texts = ["the file does not exist", "return the value of the string"]
    # With an export: the checkpoint and the export are the same weights, two loaders.
    from_ckpt = pipelines.Classify("runs/ft")(texts, top_k=None)
    from_export = pipelines.Classify("runs/ft/hf_export")(texts, top_k=None)
    assert [[d["label"] for d in r] for r in from_ckpt] == [
        [d["label"] for d in r] for r in from_export
    ]
    for a, b in zip(from_ckpt, from_export):
        np.testing.assert_allclose([d["score"] for d in a], [d["score"] for d in b], atol=1e-5)
    assert {d["label"] for d in from_ckpt[0]} == {"no_keyword", "keyword"}

    # Without an export (stopped early): the run's own model on its latest checkpoint.
    clf = pipelines.Classify("runs/ft_noexport")
    with open("runs/ft_noexport/config.json") as f:
        cfg = json.load(f)
    task = FineTuneTask(ml_collections.ConfigDict(cfg), os.path.abspath("runs/ft_noexport"))
    feat = task.encode({"text": texts[0], "label": 0})
    logits = task.model.apply(
        {"params": load_params(os.path.abspath("runs/ft_noexport"))},
        feat["input_ids"][None],
        attention_mask=feat["attention_mask"][None],
        token_type_ids=feat["token_type_ids"][None],
    ).logits[0]
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = {d["label"]: d["score"] for d in clf(texts[0], top_k=None)}
    np.testing.assert_allclose([got["no_keyword"], got["keyword"]], want, atol=1e-5)
    # The source run may move: the workdir has its own tokenizer copy.
    assert os.path.isfile("runs/ft_noexport/tokenizer/tokenizer.json")


def test_pretraining_and_continued_workdirs_fill_masks(runs, monkeypatch):
    monkeypatch.chdir(runs)
    for name in ("pt", "cont"):
        fill = pipelines.FillMask(f"runs/{name}")
        params = load_params(os.path.abspath(f"runs/{name}"))
        for a, b in zip(jax.tree.leaves(fill.loaded.params), jax.tree.leaves(params)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        out = fill("return the [MASK] of the string.", top_k=3)
        assert len(out) == 3 and sum(c["score"] for c in out) <= 1.0 + 1e-6


def test_an_electra_workdir_embeds_with_its_discriminator(runs, monkeypatch):
    monkeypatch.chdir(runs)
    texts = ["return the value", "the file does not exist"]
    ours = pipelines.SentenceEmbed("runs/el")
    assert ours.loaded.config.head == "rtd"
    exported = pipelines.SentenceEmbed(
        "runs/el/discriminator"
    )  # the run's own HF export of the same weights
    np.testing.assert_allclose(ours(texts), exported(texts), atol=1e-5)


def test_cli_takes_relative_workdirs(runs, monkeypatch, capsys):
    monkeypatch.chdir(runs)
    assert cli.main(["fill-mask", "--model", "runs/pt", "--json", "the [MASK] of it."]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]) == 5
    assert cli.main(["classify", "--model", "runs/ft_noexport", "--json", "a text"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["label"] in ("no_keyword", "keyword")
    shutil.copytree("runs/ft/hf_export", "exported")
    assert cli.main(["classify", "--model", "exported", "--json", "a text"]) == 0
    capsys.readouterr()
