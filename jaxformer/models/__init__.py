"""Models: the BERT-family encoder with its heads, ModernBERT, and the encoder-decoder
Transformer."""

from typing import Any

from jaxformer.models.bert import Encoder, EncoderModel
from jaxformer.models.configs import (
    BERT_FAMILIES,
    ConfigError,
    EncoderConfig,
    albert_config,
    bert_config,
    electra_config,
    encoder_config,
    roberta_config,
)
from jaxformer.models.heads import Pooler, l2_normalize, pool
from jaxformer.models.modernbert import ModernBertModel
from jaxformer.models.modernbert_configs import ModernBertConfig, modernbert_config
from jaxformer.models.outputs import EncoderOutput, Seq2SeqOutput

__all__ = [
    "ENCODER_FAMILIES",
    "build_encoder",
    "encoder_config_from_dict",
    "encoder_model",
    "ModernBertConfig",
    "ModernBertModel",
    "modernbert_config",
    "Encoder",
    "EncoderModel",
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

# Every encoder family: EncoderConfig's (BERT_FAMILIES) and ModernBERT.
ENCODER_FAMILIES = (*BERT_FAMILIES, "modernbert")


def encoder_config_from_dict(fields: dict[str, Any]):
    """A `ModernBertConfig` for `family="modernbert"`, else an `EncoderConfig`."""
    if fields.get("family") == "modernbert":
        return ModernBertConfig.from_dict(fields)
    return EncoderConfig.from_dict(fields)


def encoder_model(cfg):
    """The model class for an encoder config: `ModernBertModel` or `EncoderModel`."""
    return ModernBertModel(cfg) if isinstance(cfg, ModernBertConfig) else EncoderModel(cfg)


def build_encoder(fields: dict[str, Any]):
    """(config, model) for a config dict: `family="modernbert"` builds a `ModernBertModel`,
    any other family an `EncoderModel`."""
    cfg = encoder_config_from_dict(fields)
    return cfg, encoder_model(cfg)
