"""train.py's front door: `--help` lists the config keys, bad names / counts / paths are one
line (exit 2) before anything is written, and every path works relative to the current
directory (the README's `init_from=run:runs/bt` commands, run from a project directory)."""

import os

import jax
import numpy as np
import pytest

from suite_env import HERE, ROOT, run_python

TINY = os.path.join(HERE, "training_tiny_config.py")


def _train(*args, cwd=ROOT, timeout=600):
    return run_python(
        [os.path.join(ROOT, "train.py"), *args], cwd=cwd, timeout=timeout, check=False
    )


def test_help_prints_usage_and_every_key_with_its_value():
    from jaxformer.training import config_lib

    r = _train("--help", cwd=os.path.dirname(ROOT))  # from elsewhere: the repo's default config
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: python train.py")
    config = config_lib.load_config_file(os.path.join(ROOT, "configs", "default.py"))
    lines = r.stdout.splitlines()
    assert any(l.startswith("  optimizer.lr = 0.002 ") for l in lines)  # the config file's value
    assert any(l.startswith("  num_train_steps = 1000") and "# schedules decay" in l for l in lines)
    leaves = [k for k in config_lib.flat_keys(config) if not hasattr(_get(config, k), "keys")]
    assert len(leaves) > 50
    for key in leaves:
        assert any(l.startswith(f"  {key} = ") for l in lines), key


def _get(config, key):
    for part in key.split("."):
        config = config[part]
    return config


def test_help_shows_the_given_config_and_overrides(capsys):
    from jaxformer import launch as cli

    rc = cli.main(
        ["-h", "--config", os.path.join(ROOT, "configs", "finetune_tiny.py"), "--config.seed=7"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "  init_from = ''" in out and "  finetune.head = " in out and "  seed = 7" in out


@pytest.mark.parametrize(
    "override, expect",
    [
        (
            "optimizer.name=sgd",
            "optimizer.name='sgd' is not an optimizer; use one of adamw, stable_adamw, lamb",
        ),
        ("optimizer.schedule=cosine", "use one of constant, warmup_linear"),
        (
            "task=nope",
            "task='nope' is not a task; use one of continued, electra, finetune, mlm, pretrain",
        ),
        ("task=jaxformer.tasks.finetune:Nope", "task='jaxformer.tasks.finetune:Nope'"),
        ("num_train_steps=-5", "num_train_steps=-5: must be a positive integer"),
        ("num_train_steps=0", "num_train_steps=0: must be a positive integer"),
        ("batch_size=0", "batch_size=0: must be a positive integer"),
        ("grad_accum_steps=0", "grad_accum_steps=0"),
        ("log.every_steps=0", "log.every_steps=0"),
        ("log.eval_every_steps=-1", "log.eval_every_steps=-1: must be an integer >= 0"),
        ("log.eval_batches=0", "log.eval_batches=0"),
        ("checkpoint.every_steps=-10", "checkpoint.every_steps=-10"),
        ("checkpoint.keep=0", "checkpoint.keep=0"),
        ("stop_after_steps=-1", "stop_after_steps=-1"),
        ("data.source=text:no/such/dir/*.txt", "no file matches " + os.path.join(ROOT, "no")),
    ],
)
def test_bad_values_are_one_line_before_anything_is_written(tmp_path, capsys, override, expect):
    from jaxformer import launch as cli

    workdir = tmp_path / "run"
    rc = cli.main(["--config", TINY, "--workdir", str(workdir), f"--config.{override}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("train.py: "), err
    assert expect in err, err
    assert not workdir.exists()


def test_accepted_zero_values_pass_the_checks():
    from jaxformer.training import checks, config_lib

    config, _, _ = config_lib.parse_args(
        [
            "--config",
            TINY,
            "--config.checkpoint.every_steps=0",
            "--config.log.eval_every_steps=0",
            "--config.stop_after_steps=0",
        ]
    )
    checks.check_config(config)


@pytest.mark.parametrize("kind", ["run", "hf"])
def test_missing_init_from_is_one_line_naming_it(tmp_path, capsys, monkeypatch, kind):
    from jaxformer import launch as cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    config = os.path.join(ROOT, "configs", "finetune_tiny.py")
    for target, words in (("runs/none", "does not exist"), ("empty", "has no config.json")):
        rc = cli.main(["--config", config, f"--config.init_from={kind}:{target}"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1, err
        assert f"init_from='{kind}:{target}'" in err and words in err, err
        assert str(tmp_path / target) in err
    assert not (tmp_path / "runs" / "finetune_tiny").exists()


def test_user_paths_resolve_against_the_current_directory(tmp_path, monkeypatch):
    from jaxformer.training import checks

    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("one.\n")
    assert checks.data_path("text:corpus/*.txt") == str(tmp_path / "corpus" / "*.txt")
    assert checks.data_path("store:corpus") == str(tmp_path / "corpus")
    assert checks.data_path("default_corpus") is None
    with pytest.raises(checks.PathError, match="data.source='store:nope'"):
        checks.data_path("store:nope")
    with pytest.raises(FileNotFoundError, match="checkpoint 'nope'"):
        from jaxformer.training.checkpoint import load_params

        load_params("nope")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project directory with a tiny pretraining run at the relative `runs/bt`, made
    as the README says (configs/ reached relative to the current directory)."""
    d = tmp_path_factory.mktemp("project")
    os.symlink(os.path.join(ROOT, "configs"), d / "configs")
    r = _train(
        "--config",
        "configs/bert_tiny_pretrain.py",
        "--workdir",
        "runs/bt",
        "--config.num_train_steps=3",
        "--config.log.eval_every_steps=0",
        "--config.log.plot=False",
        cwd=d,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (d / "runs" / "bt" / "checkpoints" / "3").is_dir()
    return d


@pytest.mark.slow
def test_readme_finetune_from_a_relative_run(project):
    r = _train(
        "--config",
        "configs/finetune_tiny.py",
        "--config.init_from=run:runs/bt",
        "--config.num_train_steps=3",
        "--config.log.plot=False",
        cwd=project,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "initialised from pretrained weights" in r.stdout
    assert (project / "runs" / "finetune_tiny" / "checkpoints" / "3").is_dir()


@pytest.mark.slow
def test_relative_checkpoint_and_continued_pretraining_sources(project, monkeypatch):
    from jaxformer.tasks.continued import ContinuedPretrainTask
    from jaxformer.training import config_lib
    from jaxformer.training.checkpoint import load_params

    absolute = load_params(str(project / "runs" / "bt"))
    monkeypatch.chdir(project)
    relative = load_params("runs/bt")
    for a, b in zip(jax.tree.leaves(absolute), jax.tree.leaves(relative)):
        np.testing.assert_array_equal(a, b)

    config, _, _ = config_lib.parse_args(
        ["--config", "configs/continued_pretrain_tiny.py", "--config.init_from=run:runs/bt"]
    )
    task = ContinuedPretrainTask(config, "runs/cont")
    for a, b in zip(jax.tree.leaves(task._source), jax.tree.leaves(absolute)):
        np.testing.assert_array_equal(a, b)
    assert (project / "runs" / "cont" / "tokenizer" / "tokenizer.json").is_file()


def test_every_shipped_config_passes_the_checks():
    import glob

    from jaxformer.tasks import check_task
    from jaxformer.training import checks, config_lib

    paths = sorted(glob.glob(os.path.join(ROOT, "configs", "*.py")))
    assert len(paths) > 10
    for path in paths:
        config = config_lib.load_config_file(path)
        checks.check_config(config)
        check_task(config.task)


@pytest.mark.parametrize("key", ["source", "eval_source"])
def test_missing_labelled_file_is_one_line_before_anything_is_written(
    tmp_path, capsys, monkeypatch, key
):
    from jaxformer import launch as cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n")
    config = os.path.join(ROOT, "configs", "finetune_tiny.py")
    argv = ["--config", config, "--config.data.source=csv:train.csv"]
    argv.append(f"--config.data.{key}=tsv:nope.tsv")
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert f"data.{key}='tsv:nope.tsv'" in err and str(tmp_path / "nope.tsv") in err, err
    assert not (tmp_path / "runs").exists()


def test_a_bad_model_field_is_one_line(tmp_path, capsys):
    """The model config's error type is the training checks' one, so train.py reports it as
    one line (exit 2), not a traceback."""
    from jaxformer import launch as cli

    rc = cli.main(["--config", TINY, "--workdir", str(tmp_path), "--config.model.num_heads=5"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("train.py: "), err
    assert "not divisible by num_heads=5" in err, err
