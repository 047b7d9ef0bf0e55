"""`python train.py [--config configs/NAME.py] [--workdir DIR] [--config.KEY=VALUE ...]`:
checks the config, builds the task it names (`jaxformer.tasks`) and runs the loop
(`jaxformer.training.train`).

Exit status: 0 done (or stopped by SIGTERM / the first Ctrl-C after saving a checkpoint),
2 bad arguments or config, 3 too many non-finite steps, 130 a second Ctrl-C.
"""

from __future__ import annotations

import sys


def _error(e) -> int:
    print(f"train.py: {e}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the loop's handler is installed: nothing to save yet
        print("train.py: interrupted before training started; nothing saved.", file=sys.stderr)
        return 130


def _main(argv) -> int:
    from jaxformer import tasks
    from jaxformer.training import checks, config_lib

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config, workdir, _ = config_lib.parse_args(argv)
        checks.check_config(config)  # before anything is written
        tasks.check_task(config.task)
    except config_lib.HelpRequested as h:
        print(h.text)
        return 0
    except (config_lib.ConfigOverrideError, checks.ConfigError) as e:
        return _error(e)
    except (FileNotFoundError, AttributeError) as e:  # the config file: missing, no get_config
        return _error(e)
    from jaxformer.training import distributed

    distributed.initialize(config.distributed)  # before anything touches the devices
    from jaxformer.convert.huggingface import ModelFileError
    from jaxformer.data.labelled import DataFileError
    from jaxformer.training import loop, sharding

    try:
        loop.train(config, workdir, tasks.get_task)
    except (sharding.ShardingError, checks.ConfigError, DataFileError, ModelFileError) as e:
        return _error(e)
    except loop.NonFiniteError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 3
    return 0
