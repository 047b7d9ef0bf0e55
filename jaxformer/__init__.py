"""jaxformer: encoder-decoder and BERT-family transformers in JAX/Flax."""

from jaxformer.models import *  # noqa: F403
from jaxformer.models import __all__ as _models_all
from jaxformer.convert import from_pretrained, save_pretrained
from jaxformer.inference.decoding import generate, generation_options
from jaxformer.models.seq2seq_configs import TransformerConfig, transformer_config
from jaxformer.models.bart import Bart, BartConfig
from jaxformer.models.t5 import T5, T5Config
from jaxformer.models.transformer import Transformer

__version__ = "0.1.0"
__all__ = list(_models_all) + [
    "from_pretrained",
    "save_pretrained",
    "generate",
    "generation_options",
    "Bart",
    "BartConfig",
    "T5",
    "T5Config",
    "Transformer",
    "TransformerConfig",
    "transformer_config",
]
