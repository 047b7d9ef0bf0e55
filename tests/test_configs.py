"""Every config under configs/ loads, is complete, builds its optimizer and model config,
accepts overrides of its keys and rejects unknown ones."""

import glob
import math
import os
import re

import pytest

from jaxformer.models import EncoderConfig
from jaxformer.models.configs import BERT_FAMILIES
from jaxformer.training import config_lib, optim, sharding as sh
from jaxformer.training.defaults import base_config
from jaxformer.tasks import task_class

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    p
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if not os.path.basename(p).startswith("_")
)


def test_every_config_the_docs_name_exists():
    """Each config path the README and docs/ give (not the placeholders NAME, FILE) is a
    file under configs/, so every config they run is among those tested below."""
    texts = [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "*.md"))]
    named = set()
    for path in texts:
        with open(path) as f:
            named |= set(re.findall(r"configs/([a-z0-9_]+)\.py", f.read()))
    files = {os.path.basename(p)[: -len(".py")] for p in CONFIGS}
    assert {"default", "bert_base_pretrain", "finetune_tiny"} <= named  # the parse found them
    assert not named - files, f"the docs name missing configs: {sorted(named - files)}"


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_loads_and_is_complete(path):
    c = config_lib.load_config_file(path)
    c.lock()
    required = set(config_lib.flat_keys(base_config({})))
    missing = required - set(config_lib.flat_keys(c))
    assert not missing, f"{path} lacks {sorted(missing)}"
    assert task_class(c.task) is not None
    model = c.model.to_dict()
    if model.get("family") in BERT_FAMILIES:  # an encoder of the BERT family
        EncoderConfig.from_dict(model)
    if c.task == "seq2seq":  # the encoder-decoder
        from jaxformer.models.seq2seq_configs import TransformerConfig

        TransformerConfig.from_dict(model)
    tx, sched = optim.make_optimizer(c.optimizer, c.num_train_steps)
    # Every schedule peaks at the configured lr when warmup ends (constant: everywhere).
    assert float(sched(c.optimizer.warmup_steps)) == pytest.approx(c.optimizer.lr, rel=1e-5)
    mesh = dict(c.mesh)
    n = 8 if -1 in mesh.values() else math.prod(mesh.values())
    shape = sh.mesh_shape(mesh, n)
    assert math.prod(shape) == n
    config_lib.apply_override(c, "optimizer.lr", "0.5")
    assert c.optimizer.lr == 0.5
    with pytest.raises(config_lib.ConfigOverrideError, match="Nearest valid keys"):
        config_lib.apply_override(c, "optimizer.lrr", "0.5")


def test_cli_reports_unknown_keys(capsys):
    from jaxformer import launch as cli

    assert (
        cli.main(
            [
                "--config",
                os.path.join(ROOT, "configs", "default.py"),
                "--config.optimizer.learning_rate=1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown config key 'optimizer.learning_rate'" in err and "optimizer.lr" in err


def test_config_file_argument_reaches_get_config_and_names_the_workdir():
    from jaxformer.training import config_lib

    config, workdir, _ = config_lib.parse_args(["--config", "configs/finetune_tfds.py:conll2003"])
    assert config.data.source == "tfds:conll2003"
    assert (config.finetune.head, config.finetune.num_labels) == ("token_classification", 9)
    assert workdir == os.path.join("runs", "finetune_tfds_conll2003")
