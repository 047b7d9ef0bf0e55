"""`python tests/training_run.py ARGS...` = `python train.py ARGS...` for subprocess tests,
with the shared compilation cache and an optional per-step delay (JF_STEP_DELAY seconds) so
a test can signal the run while it is training."""

import os
import sys
import time

from suite_env import configure_jax

configure_jax()

from jaxformer import launch as cli
from jaxformer.training import sharding

_delay = float(os.environ.get("JF_STEP_DELAY", "0"))
if _delay:
    _to_global = sharding.to_global

    def _slow(*args, **kwargs):
        time.sleep(_delay)
        return _to_global(*args, **kwargs)

    sharding.to_global = _slow

if __name__ == "__main__":
    sys.exit(cli.main())
