"""The main job (`python train.py`, configs/default.py), shortened: it trains the tiny BERT
on the embedded corpus, its loss falls, and it leaves metrics.jsonl, TensorBoard events,
checkpoints, the resolved config, the loss curve and fill-mask predictions."""

import glob
import json
import os

import pytest

from suite_env import run_python

pytestmark = pytest.mark.slow


def test_main_job_trains_and_leaves_its_artifacts(tmp_path):
    wd = tmp_path / "run"
    out = run_python(
        [
            "train.py",
            "--workdir",
            str(wd),
            "--config.num_train_steps=60",
            "--config.optimizer.warmup_steps=10",
            "--config.batch_size=16",
            "--config.checkpoint.every_steps=30",
            "--config.log.eval_every_steps=30",
            "--config.log.every_steps=10",
        ]
    )
    rows = [json.loads(l) for l in open(wd / "metrics.jsonl")]
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [10, 20, 30, 40, 50, 60]
    assert train[-1]["loss"] < train[0]["loss"] - 0.5, train
    assert all(r["tokens_per_s"] > 0 for r in train)
    assert any("eval_loss" in r for r in rows) and any("compile_time_s" in r for r in rows)
    assert glob.glob(str(wd / "tb" / "events.out.tfevents.*"))
    assert (wd / "loss_curve.png").stat().st_size > 1000
    assert json.load(open(wd / "config.json"))["num_train_steps"] == 60
    assert {"30", "60"} <= set(os.listdir(wd / "checkpoints"))
    assert "fill-mask predictions" in out.stdout and "mask 1:" in out.stdout
    assert "tok/s" in out.stdout and "compiled the train step" in out.stdout
