"""Evaluation never silently disappears: a held-out set smaller than one eval batch is
evaluated as one smaller batch (weighted by its rows), and one too small for the mesh is a
warning; a pretraining run on a user's few text files (a store whose held-out examples are
fewer than one batch: repeated to fill it, with a warning) reports an eval loss."""

import json
import os

import jax
import numpy as np
import pytest

from jaxformer.training import config_lib, loop
from jaxformer.training import sharding as sh

HERE = os.path.dirname(os.path.abspath(__file__))


def _batch(values):
    return {"x": np.asarray(values, np.float32)[:, None], "w": np.ones((len(values), 3))}


def test_a_short_last_batch_is_kept_and_weighted_by_its_rows():
    batches = [_batch([1, 2, 3, 4]), _batch([10, 20])]
    said = []
    fitted = loop.fit_eval_batches(batches, 4, 1, said.append)
    assert [len(b["x"]) for b in fitted] == [4, 2]
    assert not said  # more than one batch's worth: nothing to say

    mesh = sh.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    eval_fn = jax.jit(lambda params, b: {"loss": b["x"].mean()})
    got = loop.evaluate(eval_fn, None, fitted, sh.batch_shardings(mesh, fitted[0]))
    assert got["loss"] == pytest.approx(np.mean([1, 2, 3, 4, 10, 20]))  # per example


def test_a_held_out_set_under_one_batch_says_so_and_still_evaluates():
    said = []
    fitted = loop.fit_eval_batches([_batch([5, 6, 7])], 32, 1, said.append)
    assert [len(b["x"]) for b in fitted] == [3]
    np.testing.assert_array_equal(fitted[0]["x"][:, 0], [5, 6, 7])
    assert len(said) == 1 and "3 example(s), less than one eval batch of 32" in said[0]


def test_rows_the_mesh_cannot_split_are_cut_and_none_left_is_a_warning():
    said = []
    fitted = loop.fit_eval_batches([_batch([1, 2, 3, 4]), _batch([1, 2, 3])], 4, 2, said.append)
    assert [len(b["x"]) for b in fitted] == [4, 2]  # 2 batch shards: an even number of rows
    said = []
    assert loop.fit_eval_batches([_batch([1])], 8, 2, said.append) == []
    assert len(said) == 1 and said[0].startswith("warning: no evaluation: the held-out set")
    assert "1 example(s), fewer than the 2 device(s)" in said[0]
    said = []
    assert loop.fit_eval_batches(None, 8, 1, said.append) == []
    assert said and "no evaluation" in said[0]


WORDS = "the cat sat on a mat and then it ran to the red door with one dog".split()


@pytest.mark.slow
def test_pretraining_on_a_few_text_files_evaluates(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        docs = []
        for _ in range(10):
            sentences = [" ".join(rng.choice(WORDS, 6)) + "." for _ in range(3)]
            docs.append("\n".join(sentences))
        (corpus / f"part{i}.txt").write_text("\n\n".join(docs) + "\n")
    monkeypatch.chdir(tmp_path)  # the README's relative form: text:corpus/*.txt
    config, _, _ = config_lib.parse_args(
        [
            "--config",
            os.path.join(HERE, "training_tiny_config.py"),
            "--config.data.source=text:corpus/*.txt",
            "--config.data.eval_fraction=0.05",
            "--config.num_train_steps=2",
            "--config.log.eval_every_steps=2",
            "--config.log.tensorboard=False",
        ]
    )
    from jaxformer.tasks import get_task

    # The store's held-out documents make fewer examples than one batch: they are repeated
    # to fill it, with a warning, so the eval still runs (it used to run nothing).
    task = get_task(config, str(tmp_path / "probe"))
    held_out = task.eval_batches(config.batch_size, 0, 1)
    assert task.eval_warning and "fewer than one eval batch of 8" in task.eval_warning
    assert [len(b["input_ids"]) for b in held_out] == [config.batch_size]

    summary = loop.train(config, "run", get_task, log=lambda s: None)
    assert np.isfinite(summary["eval_loss"])
    rows = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows if "eval_loss" in r] == [2]
