"""Models, layers, convert, the train step and benchmarks/throughput.py work in an image
without tensorflow-datasets, grain or tensorflow (the H200 image has none of them)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in a fresh interpreter: a meta-path finder makes the three packages unimportable
# before anything of ours is imported, then a tiny train step and infer step run through
# benchmarks/throughput.py (the training system's PretrainTask, sharded step, packing).
SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.abc, json, runpy, sys

    HIDDEN = ("tensorflow_datasets", "grain", "tensorflow")

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)
            return None

    sys.meta_path.insert(0, Hide())
    for name in ("grain", "tensorflow_datasets"):
        try:
            importlib.import_module(name)
            raise SystemExit(f"{name} was not hidden")
        except ModuleNotFoundError:
            pass

    import jaxformer
    for m in ("jaxformer.models", "jaxformer.layers", "jaxformer.convert",
              "jaxformer.inference", "jaxformer.data", "jaxformer.data.packing",
              "jaxformer.training.step", "jaxformer.training.state",
              "jaxformer.training.sharding", "jaxformer.training.optim",
              "jaxformer.tasks.pretrain", "jaxformer.training.loop"):
        importlib.import_module(m)

    outdir, out = sys.argv[1], {}
    for mode, extra in (("train", []), ("infer", ["--lengths", "uniform:6", "--pack"])):
        path = f"{outdir}/{mode}.json"
        sys.argv = ["throughput.py", "--model", "bert-tiny", "--seq", "16", "--batch", "2",
                    "--steps", "1", "--warmup", "0", "--matmul-n", "64", "--mode", mode,
                    "--json", path] + extra
        runpy.run_path(BENCH, run_name="__main__")
        out[mode] = json.load(open(path))["results"]
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
    print("RESULT", json.dumps({"loaded": loaded, "results": out}))
    """
)


@pytest.mark.slow
def test_runs_without_tfds_grain_tensorflow(tmp_path):
    bench = os.path.join(ROOT, "benchmarks", "throughput.py")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.run(
        [sys.executable, "-c", f"BENCH = {bench!r}\n" + SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    got = json.loads(line[len("RESULT ") :])
    assert got["loaded"] == []
    train = got["results"]["train"][0]
    assert train["name"] == "jaxformer" and train["task"] == "tasks.pretrain.PretrainTask"
    assert train["tokens_per_s"] > 0 and 0 < train["last_loss"] < 20
    names = [r["name"] for r in got["results"]["infer"]]
    assert names == ["jaxformer (padded)", "jaxformer (packed)"]
    assert all(r["tokens_per_s"] > 0 for r in got["results"]["infer"])
