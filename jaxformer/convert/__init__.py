"""HuggingFace interop: `from_pretrained` / `save_pretrained` and the pure mappings under them."""

from jaxformer.convert.hf_config import (
    encoder_config_from_hf,
    hf_config_from_encoder_config,
    supported_architectures,
)
from jaxformer.convert.hf_params import (
    MissingWeightError,
    hf_state_dict_from_params,
    params_from_hf_state_dict,
)
from jaxformer.convert.surgery import merge_encoder
from jaxformer.convert.huggingface import (
    ModelFileError,
    from_pretrained,
    load_hf_state_dict,
    save_pretrained,
)

__all__ = [
    "MissingWeightError",
    "ModelFileError",
    "encoder_config_from_hf",
    "from_pretrained",
    "hf_config_from_encoder_config",
    "hf_state_dict_from_params",
    "load_hf_state_dict",
    "merge_encoder",
    "params_from_hf_state_dict",
    "save_pretrained",
    "supported_architectures",
]
