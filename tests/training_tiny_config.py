"""A tiny CPU config for the training tests: synthetic MLM data, vocab 128, H 32, 2 layers,
sequences of 16, float32. Run: python train.py --config tests/training_tiny_config.py"""

from jaxformer.models import bert_config
from jaxformer.training.defaults import base_config


def get_config():
    model = bert_config(
        "tiny",
        head="mlm",
        vocab_size=128,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=16,
        dtype="float32",
    )
    c = base_config(model.to_dict())
    c.data.source = "synthetic"
    c.data.seq_len = 16
    c.data.max_predictions = 4
    c.data.synthetic_examples = 512
    c.batch_size = 8
    c.num_train_steps = 40
    c.optimizer.lr = 3e-3
    c.optimizer.warmup_steps = 5
    c.checkpoint.every_steps = 10
    c.checkpoint.best_metric = ""
    c.log.every_steps = 1
    c.log.eval_every_steps = 0
    c.log.progress = False
    c.log.plot = False
    return c


def set_keys(c, values):
    """Set the dotted keys of `values` ("optimizer.lr": 1e-2) in config `c`; returns `c`."""
    for key, value in values.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


def tiny_config(**over):
    """This config with dotted-key overrides."""
    return set_keys(get_config(), over)


def step_setup(config):
    """What a compiled train step needs for `config` on every device (data parallel):
    (task, mesh, optimizer, schedule, state, state shardings)."""
    from jaxformer.tasks import get_task
    from jaxformer.training import optim, sharding as sh, state as state_lib

    task = get_task(config, "/tmp/unused")
    mesh = sh.make_mesh({"data": -1})
    tx, sched = optim.make_optimizer(config.optimizer, config.num_train_steps)
    state, shardings, _ = state_lib.create_state(task, tx, mesh, seed=0)
    return task, mesh, tx, sched, state, shardings
