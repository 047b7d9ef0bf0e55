"""benchmarks/gpu_suite.py --dry-run: every case of the GPU suite runs end to end on CPU."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_gpu_suite_dry_run(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_suite.py"), "--dry-run"]
        + ["--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    suite = json.loads((tmp_path / "suite.json").read_text())
    cases = suite["cases"]
    assert len(cases) == 7 and suite["dry_run"]
    ran = {n: c for n, c in cases.items() if "same_as" not in c}
    assert all("error" not in c for c in ran.values()), ran
    train = ran["bert-large train s512"]["results"]  # the first train case; others repeat it
    assert [r["name"] for r in train] == [
        "jaxformer (attention=xla)",
        "jaxformer (attention=auto)",
        "transformers (torch eager)",
    ]
    assert all(r["tokens_per_s"] > 0 and r["last_loss"] > 0 for r in train)
    assert ran["transformer-base greedy"]["results"][0]["tokens_per_s"] > 0
    table = (tmp_path / "suite.md").read_text()
    assert "| bert-large train s512 |" in table and "vs transformers" in table
