"""ModernBERT through the fine-tuning task: from a tiny pretrained run, with the encoder
trainable (learns the keyword task; the HF export predicts the same in transformers) or
frozen (the encoder is unchanged bit for bit)."""

import numpy as np
import pytest

from test_recipes_e2e import (  # noqa: F401 (small_corpus: a fixture)
    assert_only_the_classifier_trained,
    ours_and_exported,
    run_config,
    small_corpus,
    summary,
    train,
)

from jaxformer.tasks import get_task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pretrained(small_corpus, tmp_path_factory):  # noqa: F811
    workdir = str(tmp_path_factory.mktemp("modernbert_pretrained"))
    over = {"data.source": f"text:{small_corpus}", "model.vocab_size": 1024}
    train(run_config("modernbert_tiny_pretrain", 100, **over), workdir)
    return workdir


def test_finetuning_learns_and_exports_to_transformers(pretrained, tmp_path):
    workdir = str(tmp_path / "ft")
    # 200 steps: 0.949 held-out accuracy (150: 0.929, 300: 0.954), a plateau well above 0.9.
    c = run_config("finetune_tiny", 200, evaluate=True, init_from=f"run:{pretrained}")
    train(c, workdir)
    s = summary(workdir)
    assert s["eval_accuracy"] >= 0.9, s
    task = get_task(c, workdir)
    assert task.model_cfg.family == "modernbert"
    ours, theirs, hf = ours_and_exported(task, workdir, ("input_ids", "attention_mask"))
    assert type(hf).__name__ == "ModernBertForSequenceClassification"
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_frozen_encoder_is_unchanged(pretrained, tmp_path):
    workdir = str(tmp_path / "frozen")
    c = run_config("finetune_tiny_frozen", 10, init_from=f"run:{pretrained}")
    train(c, workdir)
    assert_only_the_classifier_trained(pretrained, workdir, c)
