"""Inference: generation for the encoder-decoder, model loading, and the task pipelines.

`generate` imports eagerly; model loading (`loading`) and the pipelines (`pipelines`) on
first use.
"""

import importlib

from jaxformer.inference.decoding import GenerateOutput, generate

_LAZY = {
    "jaxformer.inference.loading": ("LoadedModel", "PipelineError", "load_model"),
    "jaxformer.inference.pipelines": (
        "Answer",
        "Classify",
        "Embed",  # deprecated alias of SentenceEmbed (warns)
        "FillMask",
        "PIPELINES",
        "SentenceEmbed",
        "Tag",
        "Translate",
        "pipeline",
    ),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = ["GenerateOutput", "generate", *sorted(set(_WHERE) - {"Embed"})]


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'jaxformer.inference' has no attribute {name!r}")
