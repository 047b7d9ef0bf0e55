"""Every recipe end to end through the training loop, on CPU, at tiny size.

- each pretraining recipe's tiny config runs a few steps, and its loss falls when it
  overfits one fixed batch;
- fine-tuning from a pretrained tiny checkpoint reaches >= 95% on the keyword task;
  a frozen encoder is unchanged bit for bit; the export predicts the same in transformers;
- continued pretraining starts from the pretrained weights.
"""

import json
import os
import re

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from jaxformer.training import loop
from jaxformer.training.checkpoint import load_params
from jaxformer.training.config_lib import load_config_file
from jaxformer.tasks import get_task
from training_tiny_config import set_keys

pytestmark = pytest.mark.slow
QUIET = {"log.progress": False, "log.tensorboard": False, "log.plot": False}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """~100 KB of the embedded corpus (the main-job test covers the whole of it)."""
    from jaxformer.data import default_corpus

    path = tmp_path_factory.mktemp("corpus") / "docs.txt"
    docs, size = [], 0
    for d in default_corpus():
        if len(d) > 4000:  # many small modules rather than a few big ones
            continue
        # One document per module: blank lines inside it would split it into paragraphs.
        docs.append(re.sub(r"\n\s*\n", "\n", d.strip()))
        size += len(d)
        if size > 100_000:
            break
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return str(path)


def configure(name, **overrides):
    return set_keys(load_config_file(f"configs/{name}.py"), {**QUIET, **overrides})


def run_config(name, steps, evaluate=False, **overrides):
    """Recipe `name` for `steps` steps, one checkpoint at the end and, with `evaluate`, one
    evaluation there (otherwise none, and no best-checkpoint metric); `overrides` on top."""
    once = {"log.eval_every_steps": steps}
    if not evaluate:
        once = {"log.eval_every_steps": 0, "checkpoint.best_metric": ""}
    return configure(
        name, **{"num_train_steps": steps, "checkpoint.every_steps": steps, **once, **overrides}
    )


def train(c, workdir):
    return loop.train(c, str(workdir), get_task, log=lambda _: None)


def summary(workdir):
    with open(os.path.join(workdir, "summary.json")) as f:
        return json.load(f)


def ours_and_exported(task, workdir, inputs):
    """Logits on one eval batch (fed `inputs`) of the run's final parameters and of its HF
    export, which the run writes at its end; and the loaded transformers model."""
    import torch
    import transformers

    batch = task.eval_batches(32, 0, 1)[0]
    feed = {k: batch[k] for k in inputs[1:]}
    ours = task.model.apply({"params": load_params(workdir)}, batch[inputs[0]], **feed).logits
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        os.path.join(workdir, "hf_export")
    ).eval()
    with torch.no_grad():
        theirs = hf(
            **{
                k: torch.tensor(
                    np.asarray(batch[k]), dtype=None if k == "attention_mask" else torch.long
                )
                for k in inputs
            }
        ).logits.numpy()
    return np.asarray(ours), theirs, hf


def assert_only_the_classifier_trained(pretrained, workdir, c):
    """The run in `workdir` (fine-tuned from `pretrained` with a frozen encoder) has the
    encoder of `pretrained` bit for bit and a classifier that moved from its init."""
    before, after = load_params(pretrained), load_params(workdir)
    flat_b = jax.tree_util.tree_leaves_with_path(before["encoder"])
    flat_a = dict(jax.tree_util.tree_leaves_with_path(after["encoder"]))
    assert len(flat_b) == len(flat_a)
    for path, x in flat_b:
        assert np.array_equal(np.asarray(x), np.asarray(flat_a[path])), path  # bit for bit
    fresh = nn.unbox(get_task(c, workdir).init_params(jax.random.key(0)))["classifier"]
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(after["classifier"]), jax.tree.leaves(fresh))
    )


def overfit(task, steps=40, lr=3e-3):
    """Loss on one fixed batch before and after `steps` Adam steps."""
    params = nn.unbox(task.init_params(jax.random.key(0)))
    pretrained = task.pretrained_params(params)
    params = params if pretrained is None else pretrained
    it = task.train_iterator(8, 0, 1)
    batch = {k: np.asarray(v) for k, v in next(it).items()}
    norms = task.normalizers(batch)
    tx = optax.adam(lr)
    opt = tx.init(params)
    key = jax.random.key(1)
    loss_of = lambda p: task.loss_fn(p, batch, key, norms, deterministic=True)[0]

    @jax.jit
    def step(p, o):
        loss, g = jax.value_and_grad(loss_of)(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    first = float(loss_of(params))
    for _ in range(steps):
        params, opt, _ = step(params, opt)
    return first, float(loss_of(params))


@pytest.mark.parametrize(
    "name",
    [
        "bert_tiny_pretrain",
        "roberta_tiny_pretrain",
        "albert_tiny_pretrain",
        "electra_tiny_pretrain",
    ],
)
def test_pretraining_recipe_runs_and_overfits(name, small_corpus, tmp_path):
    c = run_config(
        name,
        4,
        evaluate=True,
        **{
            "data.source": f"text:{small_corpus}",
            "data.eval_fraction": 0.1,  # NSP/SOP eval needs >= 2 documents
            "log.every_steps": 2,
            "model.vocab_size": 1024,
        },
    )
    out = train(c, tmp_path)
    s = summary(str(tmp_path))
    assert s["step"] == 4 and np.isfinite(s["last_loss"]), (out, s)
    assert os.path.isdir(os.path.join(str(tmp_path), "checkpoints", "4"))
    first, last = overfit(get_task(c, str(tmp_path)))
    assert last < 0.5 * first, (name, first, last)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny BERT pretrained with MLM on the embedded corpus (what fine-tuning starts from)."""
    workdir = str(tmp_path_factory.mktemp("pretrained"))
    train(
        run_config("bert_tiny_pretrain", 150, **{"data.objective": "none", "model.head": "mlm"}),
        workdir,
    )
    return workdir


def test_finetuning_from_pretrained_reaches_95_percent_and_exports(pretrained, tmp_path):
    workdir = str(tmp_path / "ft")
    c = run_config("finetune_tiny", 300, evaluate=True, init_from=f"run:{pretrained}")
    train(c, workdir)
    s = summary(workdir)
    assert s["eval_accuracy"] >= 0.95, s

    # The HF export (written at the end of the run) predicts what we predict.
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    ours, theirs, _ = ours_and_exported(get_task(c, workdir), workdir, inputs)
    np.testing.assert_allclose(theirs, ours, atol=1e-4)
    np.testing.assert_array_equal(theirs.argmax(-1), np.asarray(ours).argmax(-1))

    # Fine-tuning also starts from a HuggingFace directory (here: that export, tokenizer
    # included): the encoder it starts from is the exported one.
    c2 = run_config("finetune_tiny", 5, init_from=f"hf:{workdir}/hf_export")
    task2 = get_task(c2, str(tmp_path / "ft_hf"))
    start = task2.pretrained_params(nn.unbox(task2.init_params(jax.random.key(0))))
    for a, b in zip(
        jax.tree.leaves(start["encoder"]), jax.tree.leaves(load_params(workdir)["encoder"])
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-7)
    s2 = train(c2, tmp_path / "ft_hf")
    assert s2["step"] == 5 and np.isfinite(s2["last_loss"])


def test_frozen_encoder_finetuning_changes_no_encoder_parameter(pretrained, tmp_path):
    workdir = str(tmp_path / "frozen")
    c = run_config("finetune_tiny_frozen", 20, init_from=f"run:{pretrained}")
    train(c, workdir)
    assert_only_the_classifier_trained(pretrained, workdir, c)


def test_continued_pretraining_starts_from_the_checkpoint(pretrained, small_corpus, tmp_path):
    workdir = str(tmp_path / "continued")
    c = run_config(
        "continued_pretrain_tiny",
        10,
        **{
            "init_from": f"run:{pretrained}",
            "data.source": f"text:{small_corpus}",
            "data.eval_fraction": 0.1,
        },
    )
    out = train(c, workdir)
    src = load_params(pretrained)
    task = get_task(c, workdir)
    task.tokenizer  # noqa: B018  (loads the source's tokenizer)
    start = task.pretrained_params(nn.unbox(task.init_params(jax.random.key(0))))
    for a, b in zip(jax.tree.leaves(start["encoder"]), jax.tree.leaves(src["encoder"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "fill-mask before continued pretraining" in out["finish"]
    assert "after:" in out["finish"]
