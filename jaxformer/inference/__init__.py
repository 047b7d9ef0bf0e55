"""Inference: generation for the encoder-decoder, and the task pipelines.

`generate` imports eagerly; the pipelines (tokenizers, model loading) on first use.
"""

import importlib

from jaxformer.inference.decoding import GenerateOutput, generate

_PIPELINES = (
    "Answer",
    "Classify",
    "Embed",
    "FillMask",
    "LoadedModel",
    "PipelineError",
    "Tag",
    "Translate",
    "load_model",
    "pipeline",
)

__all__ = ["GenerateOutput", "generate", *_PIPELINES]


def __getattr__(name):
    if name in _PIPELINES:
        return getattr(importlib.import_module("jaxformer.inference.pipelines"), name)
    raise AttributeError(f"module 'jaxformer.inference' has no attribute {name!r}")
