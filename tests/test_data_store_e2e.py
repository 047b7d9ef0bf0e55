"""train.py on a store: BERT (MLM+NSP) and RoBERTa tiny read `store:DIR`, and the same
command in two fresh workdirs and caches (tokenizer trained, store prepared each time)
gives identical per-step losses."""

import json
import os
import subprocess
import sys

import pytest

from jaxformer.data import corpus
from jaxformer.data.store import prepare

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    docs = corpus.stdlib_docstring_documents(250_000)
    (d / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return d / "corpus.txt"


def _train(workdir, config, *extra, cache=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.pop("XLA_FLAGS", None)
    if cache:
        env["JAXFORMER_CACHE"] = str(cache)
    cmd = [sys.executable, os.path.join(HERE, "training_run.py"), "--config", config]
    cmd += ["--workdir", str(workdir), "--config.stop_after_steps=3", "--config.log.every_steps=1"]
    cmd += ["--config.log.eval_every_steps=3", "--config.log.eval_batches=1"]
    cmd += ["--config.log.progress=False", "--config.log.plot=False", *extra]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}, out.stdout + out.stderr


@pytest.mark.parametrize(
    "config,family",
    [("configs/bert_tiny_pretrain.py", "bert"), ("configs/roberta_tiny_pretrain.py", "roberta")],
)
def test_train_from_a_store(text, tmp_path, config, family):
    store = tmp_path / "store"
    prepare(str(text), str(store), tokenizer_family=family, vocab_size=2000, progress=False)
    losses, out = _train(tmp_path / "run", config, f"--config.data.source=store:{store}")
    assert sorted(losses) == [1, 2, 3] and all(l == l and l > 0 for l in losses.values())
    assert "eval_loss" in open(tmp_path / "run" / "metrics.jsonl").read(), out


def test_two_fresh_runs_give_identical_losses(text, tmp_path):
    runs = []
    for name in ("a", "b"):
        losses, _ = _train(
            tmp_path / name,
            "configs/bert_tiny_pretrain.py",
            f"--config.data.source=text:{text}",
            "--config.model.hidden_dropout=0.1",  # dropout on: its keys must repeat too
            cache=tmp_path / f"cache-{name}",
        )
        runs.append(losses)
    a, b = (tmp_path / f"cache-{n}" / "stores" for n in "ab")
    (sa,), (sb,) = os.listdir(a), os.listdir(b)
    tok = [open(d / s / "tokenizer" / "tokenizer.json", "rb").read() for d, s in ((a, sa), (b, sb))]
    assert tok[0] == tok[1]
    assert sorted(runs[0]) == [1, 2, 3] and runs[0] == runs[1]
