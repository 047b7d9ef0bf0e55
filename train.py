"""Train a jaxformer model from a config: `python train.py --config configs/NAME.py --workdir DIR`.

With no arguments it runs the main job (configs/default.py). Overrides: `--config.a.b=value`.
The training system (sharded steps, checkpoints, metrics) lives in `jaxformer.training`.
"""

import sys

from jaxformer.training import cli

if __name__ == "__main__":
    sys.exit(cli.main())
