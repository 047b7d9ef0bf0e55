"""The data layer: tokenizers, sources, the tokenized corpus store and its lazy pretraining
examples, masking, packing (also of translation pairs), fine-tuning preprocessors, metrics
and feeding. See docs/data.md.

Names are imported on first use (PEP 562), so `jaxformer.data.packing` or `masking` work in
an environment without grain or tensorflow-datasets; only the modules that need them
(feeding, pretraining datasets, tfds sources) import them.
"""

import importlib

_EXPORTS = {
    "jaxformer.data.corpus": ("default_corpus",),
    "jaxformer.data.feeding": (
        "DataIterator",
        "batch_dataset",
        "make_global_batch",
        "shard_for_process",
    ),
    "jaxformer.data.lazy": ("StoreExamples", "store_batches"),
    "jaxformer.data.masking": ("Masker", "MaskingConfig", "dense_labels", "mask_tokens"),
    "jaxformer.data.packing": ("Packer", "padding_fraction"),
    "jaxformer.data.pairs": ("PairStats", "bucket_batches", "pack_pairs", "read_pairs"),
    "jaxformer.data.pretraining": (
        "PretrainingConfig",
        "create_instances",
        "mask_instance",
        "pad_example",
        "pretraining_dataset",
    ),
    "jaxformer.data.sources": (
        "Documents",
        "read_jsonl",
        "read_text_files",
        "split_sentences",
        "tfds_source",
        "tfds_texts",
    ),
    "jaxformer.data.store": ("PairStore", "Store", "StoreError", "prepare"),
    "jaxformer.data.tokenizers": (
        "SPECIAL_TOKENS",
        "MissingSpecialTokenError",
        "Tokenizer",
        "load_tokenizer",
        "train_tokenizer",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxformer.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
