"""Configuration of the encoder-decoder Transformer: one frozen dataclass and named sizes."""

from __future__ import annotations

import dataclasses

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


@dataclasses.dataclass(frozen=True)
class TransformerConfig(_ConfigMixin):
    """The encoder-decoder of Vaswani et al. (2017); Marian is a setting of these fields."""

    vocab_size: int = 32000  # source vocabulary (the only one when shared)
    target_vocab_size: int | None = None  # None: vocab_size
    d_model: int = 512
    num_heads: int = 8  # encoder heads (and decoder heads unless decoder_num_heads is set)
    d_ff: int = 2048  # encoder feed-forward width (and the decoder's unless decoder_d_ff)
    decoder_num_heads: int | None = None  # None: num_heads (Marian may differ per side)
    decoder_d_ff: int | None = None  # None: d_ff
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    max_len: int = 512  # rows of the sinusoidal table: longest source/target
    dropout: float = 0.1  # on embeddings+positions and on each sub-layer output
    attention_dropout: float = 0.0  # on attention probabilities
    activation: str = "relu"  # relu (paper) | swish (Marian) | gelu ...
    layer_norm_eps: float = 1e-6
    pre_ln: bool = False  # post-LN as in the paper; pre-LN adds final norms
    share_embeddings: bool = True  # one table for source and target tokens
    tie_output: bool = True  # output projection = target embedding (transposed)
    scale_embedding: bool = True  # multiply token embeddings by sqrt(d_model)
    position_layout: str = "interleaved"  # interleaved (paper) | halves (Marian / fairseq)
    final_logits_bias: bool = False  # Marian adds a (frozen) bias to the logits
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0  # Marian and T5 start decoding from the pad id
    forced_eos_token_id: int | None = None  # forced at generation's length limit (Marian)
    suppress_tokens: tuple | None = None  # never generated (Marian's checkpoints: the pad id)
    init_std: float = 0.02
    # Numerics and performance
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_kernel: str = "auto"  # jaxformer.layers.kernels.KERNELS
    # Activation checkpointing per encoder/decoder layer in training (none | full | dots |
    # dots_no_batch); decoding with the cache never rematerialises.
    remat_policy: str = "none"

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"activation={self.activation!r} is not one of "
                f"{sorted(ACTIVATIONS)}.{_nearest(self.activation, ACTIVATIONS)}"
            )
        check_choice("position_layout", self.position_layout, LAYOUTS)
        check_choice("dtype", self.dtype, DTYPES)
        check_choice("param_dtype", self.param_dtype, DTYPES)
        check_choice("attention_kernel", self.attention_kernel, KERNELS)
        check_choice("remat_policy", self.remat_policy, REMAT)
        check_positive(
            self,
            (
                "vocab_size",
                "d_model",
                "num_heads",
                "d_ff",
                "num_encoder_layers",
                "num_decoder_layers",
                "max_len",
            ),
            optional=("target_vocab_size", "decoder_num_heads", "decoder_d_ff"),
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
            if heads is not None and self.d_model % heads:
                raise ConfigError(f"d_model={self.d_model} is not divisible by {name}={heads}.")
        if self.d_model % 2:
            raise ConfigError(f"sinusoidal positions need an even d_model, got {self.d_model}.")
        for name in ("dropout", "attention_dropout"):
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
    def tgt_vocab_size(self) -> int:
        return self.target_vocab_size or self.vocab_size

    @property
    def head_dim(self) -> int:
        """The encoder's head width."""
        return self.d_model // self.num_heads

    def heads(self, decoder: bool = False) -> int:
        """Attention heads of one side (the decoder's apply to its self- and cross-attention)."""
        return (self.decoder_num_heads or self.num_heads) if decoder else self.num_heads

    def ffn_dim(self, decoder: bool = False) -> int:
        """Feed-forward width of one side."""
        return (self.decoder_d_ff or self.d_ff) if decoder else self.d_ff


# (layers per stack, d_model, d_ff, heads)
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
        "d_model": d,
        "d_ff": ff,
        "num_heads": h,
    }
    if size == "big":
        base["dropout"] = 0.3  # the paper's EN-DE big model
    return TransformerConfig.from_dict({**base, **overrides})
