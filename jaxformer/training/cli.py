"""`python train.py [--config configs/NAME.py] [--workdir DIR] [--config.KEY=VALUE ...]`."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from jaxformer.training import config_lib

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        config, workdir, _ = config_lib.parse_args(argv)
    except (config_lib.ConfigOverrideError, FileNotFoundError, AttributeError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    from jaxformer.training import distributed

    distributed.initialize(config.distributed)  # before anything touches the devices
    from jaxformer.convert.huggingface import ModelFileError
    from jaxformer.data.labelled import DataFileError
    from jaxformer.training import loop, sharding

    try:
        loop.train(config, workdir)
    except (sharding.ShardingError, DataFileError, ModelFileError) as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 2
    except loop.NonFiniteError as e:
        print(f"train.py: {e}", file=sys.stderr)
        return 3
    return 0
