"""metrics.jsonl after a resume: the rows of replayed steps are dropped, so every step keeps
one row of each kind; rows up to the checkpoint stay untouched."""

import json

from jaxformer.training import observe


def _rows(path):
    return [json.loads(line) for line in open(path)]


def test_resume_drops_the_rows_of_replayed_steps_and_a_torn_last_line(tmp_path):
    w = observe.MetricWriter(str(tmp_path), tensorboard=False)
    for step in range(1, 6):
        w.write(step, {"loss": float(step)})
    w.write(4, {"eval_loss": 0.5})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # killed mid-write
    before = _rows_upto(tmp_path / "metrics.jsonl", 3)

    w = observe.MetricWriter(str(tmp_path), tensorboard=False, resume_step=3)
    for step in (4, 5):  # the replay
        w.write(step, {"loss": float(step)})
    w.write(4, {"eval_loss": 0.5})
    w.close()
    rows = _rows(tmp_path / "metrics.jsonl")
    assert rows[:3] == before
    assert [(r["step"], sorted(r)) for r in rows] == [
        (1, ["loss", "step"]),
        (2, ["loss", "step"]),
        (3, ["loss", "step"]),
        (4, ["loss", "step"]),
        (5, ["loss", "step"]),
        (4, ["eval_loss", "step"]),
    ]


def test_a_fresh_run_keeps_nothing_after_step_0_and_an_absent_file_is_fine(tmp_path):
    observe.MetricWriter(str(tmp_path / "new"), tensorboard=False, resume_step=0).close()
    w = observe.MetricWriter(str(tmp_path), tensorboard=False)
    w.write(0, {"x": 1.0})
    w.write(1, {"loss": 2.0})
    w.close()
    observe.MetricWriter(str(tmp_path), tensorboard=False, resume_step=0).close()
    assert _rows(tmp_path / "metrics.jsonl") == [{"step": 0, "x": 1.0}]


def _rows_upto(path, step):
    out = []
    for line in open(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["step"] <= step:
            out.append(row)
    return out
