"""Test set-up: CPU only, persistent compilation cache, float32 matmuls at full precision."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from suite_env import configure_jax  # after the environment above: it imports jax

configure_jax()

# No hook orders the files for `-n 2 --dist loadfile`: pytest-xdist's loadfile scheduler
# queues whole files by their number of tests, most first (--loadscope-reorder, on by
# default), so the collection order only breaks ties.
