"""Train a jaxformer model from a config: `python train.py --config configs/NAME.py --workdir DIR`.

With no arguments it runs the main job (configs/default.py). Overrides: `--config.a.b=value`.
The tasks live in `jaxformer.tasks`; the training system (sharded steps, checkpoints,
metrics) in `jaxformer.training`.
"""

import sys

from jaxformer import launch

if __name__ == "__main__":
    sys.exit(launch.main())
