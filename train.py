"""Train a jaxformer model from a config: `python train.py --config configs/NAME.py --workdir DIR`.

The training system (sharded steps, checkpoints, metrics) lives in `jaxformer.training`.
"""

import sys


def main(argv=None) -> int:
    try:
        from jaxformer.training import cli
    except ImportError as e:  # the training package is not installed in this checkout
        print(f"train.py: the training system is not available ({e}).", file=sys.stderr)
        return 2
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
