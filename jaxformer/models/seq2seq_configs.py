"""Configuration of the encoder-decoder Transformer: one frozen dataclass and named sizes.

Field names follow `EncoderConfig` where they mean the same thing; the names used before
(`OLD_NAMES`) still work in the constructor, `replace`, `from_dict` and attribute reads, with a
DeprecationWarning naming the new one.
"""

from __future__ import annotations

import dataclasses
import warnings

from jaxformer.layers.feedforward import ACTIVATIONS
from jaxformer.models.configs import (
    DTYPES,
    KERNELS,
    REMAT,
    ConfigError,
    _ConfigMixin,
    _nearest,
    check_choice,
    check_positive,
)

LAYOUTS = ("interleaved", "halves")

# Deprecated field name -> the current one (EncoderConfig's name for the same thing).
OLD_NAMES = {
    "d_model": "hidden_size",
    "d_ff": "intermediate_size",
    "decoder_d_ff": "decoder_intermediate_size",
    "max_len": "max_position_embeddings",
    "dropout": "hidden_dropout",
    "activation": "hidden_act",
    "init_std": "initializer_range",
}


def _current_names(fields: dict, stacklevel: int = 3) -> dict:
    """`fields` with each deprecated key renamed (warning once per key); both names: error."""
    out = dict(fields)
    for old, new in OLD_NAMES.items():
        if old not in out:
            continue
        if new in out:
            raise ConfigError(
                f"TransformerConfig got both {old!r} and {new!r}; {old!r} is the deprecated "
                f"name of {new!r}: pass only {new!r}."
            )
        warnings.warn(
            f"TransformerConfig field {old!r} is deprecated; use {new!r}.",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        out[new] = out.pop(old)
    return out


@dataclasses.dataclass(frozen=True)
class _TransformerFields(_ConfigMixin):
    """The fields and checks of `TransformerConfig` (which adds the deprecated names)."""

    vocab_size: int = 32000  # source vocabulary (the only one when shared)
    target_vocab_size: int | None = None  # None: vocab_size
    hidden_size: int = 512
    num_heads: int = 8  # encoder heads (and decoder heads unless decoder_num_heads is set)
    intermediate_size: int = 2048  # encoder feed-forward width (and the decoder's by default)
    decoder_num_heads: int | None = None  # None: num_heads (Marian may differ per side)
    decoder_intermediate_size: int | None = None  # None: intermediate_size
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    max_position_embeddings: int = 512  # rows of the sinusoidal table: longest source/target
    hidden_dropout: float = 0.1  # on embeddings+positions and on each sub-layer output
    attention_dropout: float = 0.0  # on attention probabilities
    hidden_act: str = "relu"  # relu (paper) | swish (Marian) | gelu ...
    layer_norm_eps: float = 1e-6
    pre_ln: bool = False  # post-LN as in the paper; pre-LN adds final norms
    share_embeddings: bool = True  # one table for source and target tokens
    tie_output: bool = True  # output projection = target embedding (transposed)
    scale_embedding: bool = True  # multiply token embeddings by sqrt(hidden_size)
    position_layout: str = "interleaved"  # interleaved (paper) | halves (Marian / fairseq)
    final_logits_bias: bool = False  # Marian adds a (frozen) bias to the logits
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0  # Marian and T5 start decoding from the pad id
    forced_eos_token_id: int | None = None  # forced at generation's length limit (Marian)
    suppress_tokens: tuple | None = None  # never generated (Marian's checkpoints: the pad id)
    initializer_range: float = 0.02
    # Numerics and performance
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_kernel: str = "auto"  # jaxformer.layers.kernels.KERNELS
    # Activation checkpointing per encoder/decoder layer in training (none | full | dots |
    # dots_no_batch); decoding with the cache never rematerialises.
    remat_policy: str = "none"

    def __post_init__(self):
        check_choice("hidden_act", self.hidden_act, sorted(ACTIVATIONS))
        check_choice("position_layout", self.position_layout, LAYOUTS)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("param_dtype", self.param_dtype, DTYPES)
        check_choice("attention_kernel", self.attention_kernel, KERNELS)
        check_choice("remat_policy", self.remat_policy, REMAT)
        check_positive(
            self,
            (
                "vocab_size",
                "hidden_size",
                "num_heads",
                "intermediate_size",
                "num_encoder_layers",
                "num_decoder_layers",
                "max_position_embeddings",
            ),
            optional=("target_vocab_size", "decoder_num_heads", "decoder_intermediate_size"),
        )
        if self.suppress_tokens is not None:
            object.__setattr__(self, "suppress_tokens", tuple(int(t) for t in self.suppress_tokens))
            for t in self.suppress_tokens:
                if not 0 <= t < self.tgt_vocab_size:
                    raise ConfigError(
                        f"suppress_tokens holds {t}, outside the target vocabulary "
                        f"[0, {self.tgt_vocab_size})."
                    )
        if self.share_embeddings and self.tgt_vocab_size != self.vocab_size:
            raise ConfigError(
                f"share_embeddings=True needs one vocabulary, but vocab_size="
                f"{self.vocab_size} and target_vocab_size={self.target_vocab_size}."
            )
        for name in ("num_heads", "decoder_num_heads"):
            heads = getattr(self, name)
            if heads is not None and self.hidden_size % heads:
                raise ConfigError(
                    f"hidden_size={self.hidden_size} is not divisible by {name}={heads}."
                )
        if self.hidden_size % 2:
            raise ConfigError(
                f"sinusoidal positions need an even hidden_size, got {self.hidden_size}."
            )
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        for name in (
            "pad_token_id",
            "eos_token_id",
            "decoder_start_token_id",
            "forced_eos_token_id",
        ):
            v = getattr(self, name)
            if v is not None and not 0 <= v < self.tgt_vocab_size:
                raise ConfigError(
                    f"{name}={v} is outside the target vocabulary [0, {self.tgt_vocab_size})."
                )

    @property
    def max_length(self) -> int:
        """Longest source / target the position table allows."""
        return self.max_position_embeddings

    @property
    def tgt_vocab_size(self) -> int:
        return self.target_vocab_size or self.vocab_size

    @property
    def head_dim(self) -> int:
        """The encoder's head width."""
        return self.hidden_size // self.num_heads

    def heads(self, decoder: bool = False) -> int:
        """Attention heads of one side (the decoder's apply to its self- and cross-attention)."""
        return (self.decoder_num_heads or self.num_heads) if decoder else self.num_heads

    def ffn_dim(self, decoder: bool = False) -> int:
        """Feed-forward width of one side."""
        return (
            (self.decoder_intermediate_size or self.intermediate_size)
            if decoder
            else self.intermediate_size
        )


class TransformerConfig(_TransformerFields):
    """The encoder-decoder of Vaswani et al. (2017); Marian is a setting of these fields.

    The deprecated names in `OLD_NAMES` are accepted (with a DeprecationWarning) by the
    constructor, `replace` and `from_dict`, and readable as attributes."""

    def __init__(self, *args, **fields):
        super().__init__(*args, **_current_names(fields))

    @classmethod
    def from_dict(cls, d):
        return super().from_dict(_current_names(d))

    def replace(self, **changes):
        return super().replace(**_current_names(changes))

    def __getattr__(self, name):
        # Called only when normal lookup fails: the deprecated names.
        if name in OLD_NAMES:
            new = OLD_NAMES[name]
            warnings.warn(
                f"TransformerConfig.{name} is deprecated; use .{new}.",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(self, new)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


# (layers per stack, hidden_size, intermediate_size, heads)
TRANSFORMER_SIZES = {
    "nano": (1, 32, 64, 2),  # unit tests
    "tiny": (2, 64, 256, 4),  # learns the synthetic translation task on CPU in minutes
    "mini": (2, 128, 512, 4),
    "small": (3, 256, 1024, 4),
    "base": (6, 512, 2048, 8),  # Vaswani et al. base
    "big": (6, 1024, 4096, 16),  # Vaswani et al. big
}


def transformer_config(size: str = "base", **overrides) -> TransformerConfig:
    """The Transformer at a named size (nano/tiny/mini/small/base/big); fields override."""
    if size not in TRANSFORMER_SIZES:
        raise ConfigError(
            f"unknown size {size!r}.{_nearest(size, TRANSFORMER_SIZES)} "
            f"Known: {list(TRANSFORMER_SIZES)}."
        )
    layers, d, ff, h = TRANSFORMER_SIZES[size]
    base = {
        "num_encoder_layers": layers,
        "num_decoder_layers": layers,
        "hidden_size": d,
        "intermediate_size": ff,
        "num_heads": h,
    }
    if size == "big":
        base["hidden_dropout"] = 0.3  # the paper's EN-DE big model
    return TransformerConfig.from_dict({**base, **overrides})
