"""The data layer: tokenizers, sources, the tokenized corpus store and its lazy pretraining
examples, masking, packing, fine-tuning preprocessors, metrics and feeding. See
docs/data.md."""

from jaxformer.data.corpus import default_corpus
from jaxformer.data.feeding import DataIterator, batch_dataset, make_global_batch, shard_for_process
from jaxformer.data.lazy import StoreExamples, store_batches
from jaxformer.data.masking import Masker, MaskingConfig, dense_labels, mask_tokens
from jaxformer.data.packing import Packer, padding_fraction
from jaxformer.data.pretraining import (
    PretrainingConfig,
    create_instances,
    mask_instance,
    pad_example,
    pretraining_dataset,
)
from jaxformer.data.sources import (
    Documents,
    read_jsonl,
    read_text_files,
    split_sentences,
    tfds_source,
    tfds_texts,
)
from jaxformer.data.store import PairStore, Store, StoreError, prepare
from jaxformer.data.tokenizers import (
    FAMILIES,
    MissingSpecialTokenError,
    Tokenizer,
    load_tokenizer,
    train_tokenizer,
)

__all__ = [
    "DataIterator",
    "Documents",
    "FAMILIES",
    "Masker",
    "MaskingConfig",
    "MissingSpecialTokenError",
    "Packer",
    "PairStore",
    "PretrainingConfig",
    "Store",
    "StoreError",
    "StoreExamples",
    "Tokenizer",
    "batch_dataset",
    "create_instances",
    "default_corpus",
    "dense_labels",
    "load_tokenizer",
    "make_global_batch",
    "mask_instance",
    "mask_tokens",
    "pad_example",
    "padding_fraction",
    "prepare",
    "pretraining_dataset",
    "read_jsonl",
    "read_text_files",
    "shard_for_process",
    "split_sentences",
    "store_batches",
    "tfds_source",
    "tfds_texts",
    "train_tokenizer",
]
