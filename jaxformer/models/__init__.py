"""Models: the BERT-family encoder with its heads, and the encoder-decoder Transformer."""

from jaxformer.models.bert import Encoder, EncoderModel, layer_plan
from jaxformer.models.configs import (
    ConfigError,
    EncoderConfig,
    albert_config,
    bert_config,
    electra_config,
    encoder_config,
    roberta_config,
)
from jaxformer.models.heads import Pooler, l2_normalize, pool
from jaxformer.models.outputs import EncoderOutput, Seq2SeqOutput

__all__ = [
    "Encoder",
    "EncoderModel",
    "layer_plan",
    "ConfigError",
    "EncoderConfig",
    "albert_config",
    "bert_config",
    "electra_config",
    "encoder_config",
    "roberta_config",
    "Pooler",
    "l2_normalize",
    "pool",
    "EncoderOutput",
    "Seq2SeqOutput",
]
