"""Test set-up: CPU only, persistent compilation cache, float32 matmuls at full precision."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax

_cache = os.environ.get(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "jaxformer-jax")
)
jax.config.update("jax_compilation_cache_dir", _cache)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_default_matmul_precision", "highest")


# The longest files first: with `-n 2 --dist loadfile` a worker takes a whole file at a
# time in collection order, so a long file collected last would run alone at the end.
_LONGEST_FIRST = (
    "test_training_resume.py",
    "test_training_multihost.py",
    "test_transformer_translation.py",
    "test_recipes_e2e.py",
    "test_pipelines_workdirs.py",
    "test_finetune_tfds.py",
    "test_training_multidevice.py",
    "test_data_store_e2e.py",
    "test_research.py",
    "test_benchmarks.py",
    "test_modernbert_training.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
