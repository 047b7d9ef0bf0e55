"""ModernBERT through the fine-tuning task: from a tiny pretrained run, with the encoder
trainable (learns the keyword task; the HF export predicts the same in transformers) or
frozen (the encoder is unchanged bit for bit)."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from test_recipes_e2e import configure, small_corpus, summary  # noqa: F401 (fixture)

from jaxformer.training import loop
from jaxformer.training.checkpoint import load_params
from jaxformer.tasks import get_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pretrained(small_corpus, tmp_path_factory):  # noqa: F811
    workdir = str(tmp_path_factory.mktemp("modernbert_pretrained"))
    c = configure(
        "modernbert_tiny_pretrain",
        **{
            "data.source": f"text:{small_corpus}",
            "model.vocab_size": 1024,
            "num_train_steps": 100,
            "checkpoint.every_steps": 100,
            "log.eval_every_steps": 0,
            "checkpoint.best_metric": "",
        },
    )
    loop.train(c, workdir, get_task, log=lambda _: None)
    return workdir


def test_finetuning_learns_and_exports_to_transformers(pretrained, tmp_path):
    import torch
    import transformers

    workdir = str(tmp_path / "ft")
    c = configure(
        "finetune_tiny",
        **{
            "init_from": f"run:{pretrained}",
            "num_train_steps": 300,
            "log.eval_every_steps": 300,
            "checkpoint.every_steps": 300,
        },
    )
    loop.train(c, workdir, get_task, log=lambda _: None)
    s = summary(workdir)
    assert s["eval_accuracy"] >= 0.9, s
    task = get_task(c, workdir)
    assert task.model_cfg.family == "modernbert"
    batch = task.eval_batches(32, 0, 1)[0]
    ours = task.model.apply(
        {"params": load_params(workdir)}, batch["input_ids"], batch["attention_mask"]
    ).logits
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        os.path.join(workdir, "hf_export")
    ).eval()
    assert type(hf).__name__ == "ModernBertForSequenceClassification"
    with torch.no_grad():
        theirs = hf(
            input_ids=torch.tensor(np.asarray(batch["input_ids"]), dtype=torch.long),
            attention_mask=torch.tensor(np.asarray(batch["attention_mask"])),
        ).logits.numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_frozen_encoder_is_unchanged(pretrained, tmp_path):
    workdir = str(tmp_path / "frozen")
    c = configure(
        "finetune_tiny_frozen",
        **{
            "init_from": f"run:{pretrained}",
            "num_train_steps": 10,
            "log.eval_every_steps": 0,
            "checkpoint.every_steps": 10,
            "checkpoint.best_metric": "",
        },
    )
    loop.train(c, workdir, get_task, log=lambda _: None)
    before, after = load_params(pretrained), load_params(workdir)
    flat_b = jax.tree_util.tree_leaves_with_path(before["encoder"])
    flat_a = dict(jax.tree_util.tree_leaves_with_path(after["encoder"]))
    assert len(flat_b) == len(flat_a)
    for path, x in flat_b:
        assert np.array_equal(np.asarray(x), np.asarray(flat_a[path])), path
    fresh = nn.unbox(get_task(c, workdir).init_params(jax.random.key(0)))["classifier"]
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(after["classifier"]), jax.tree.leaves(fresh))
    )
