"""ModernBERT configuration: one frozen dataclass, the layer plan, and named sizes."""

from __future__ import annotations

import dataclasses

from jaxformer.layers.feedforward import ACTIVATIONS
from jaxformer.models.configs import (
    ENCODER_SIZES,
    ConfigError,
    _ConfigMixin,
    _nearest,
    _size,
    check_choice,
    check_label_names,
    check_numerics,
    check_positive,
)

LAYER_TYPES = ("full_attention", "sliding_attention")
MODERNBERT_HEADS = (
    None,
    "mlm",
    "sequence_classification",
    "token_classification",
    "question_answering",
)
POOLING = ("cls", "mean")


@dataclasses.dataclass(frozen=True)
class ModernBertConfig(_ConfigMixin):
    """ModernBERT (Warner et al. 2024): pre-norm blocks, rotary positions, GeGLU, no biases,
    and a plan of global (full) and local (sliding-window) attention layers.

    Field names follow `EncoderConfig` where the meaning is the same; defaults are the
    released ModernBERT-base.
    """

    family: str = "modernbert"  # fixed: tells model builders this config from the others
    vocab_size: int = 50368
    hidden_size: int = 768  # H
    num_layers: int = 22
    num_heads: int = 12
    intermediate_size: int = 1152  # GeGLU width: Wi makes 2x this (input and gate)
    max_position_embeddings: int = 8192  # longest sequence (rotary: no table, a limit)
    # Per layer "full_attention" | "sliding_attention"; None: full every `global_every`
    # layers from layer 0, sliding in between (the released models: every 3rd).
    layer_types: tuple | None = None
    global_every: int = 3
    local_window: int = 128  # total window of sliding layers (HF local_attention): +-W/2
    global_rope_theta: float = 160000.0
    local_rope_theta: float = 10000.0
    layer_norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    decoder_bias: bool = True  # the MLM decoder's bias (its weight is the embedding table)
    classifier_bias: bool = False  # the head's dense layer (the classifier itself has one)
    hidden_act: str = "gelu"  # GeGLU: exact GELU on the input half
    classifier_activation: str = "gelu"
    classifier_pooling: str = "cls"  # cls | mean, for sequence classification
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0  # on the probabilities and on the attention output
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02
    pad_token_id: int = 50283
    # Heads
    head: str | None = None  # None | mlm | sequence_classification | token_classification
    num_labels: int = 2
    label_names: tuple | None = None
    # Numerics and performance
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_kernel: str = "xla"  # xla | cudnn | einsum (see docs/design.md, ModernBERT)
    remat_policy: str = "none"

    def __post_init__(self):
        check_choice("family", self.family, ("modernbert",))
        check_choice("head", self.head, MODERNBERT_HEADS)
        check_choice("classifier_pooling", self.classifier_pooling, POOLING)
        check_numerics(self)
        for name in ("hidden_act", "classifier_activation"):
            check_choice(name, getattr(self, name), sorted(ACTIVATIONS))
        check_positive(self, (*ENCODER_SIZES, "global_every", "num_labels"))
        if self.hidden_size % self.num_heads or self.head_dim % 2:
            raise ConfigError(
                f"hidden_size={self.hidden_size} / num_heads={self.num_heads} must be an even "
                "integer (rotary embeddings rotate pairs of dimensions)."
            )
        if self.local_window < 2 or self.local_window % 2:
            raise ConfigError(
                f"local_window={self.local_window} must be an even number >= 2 (the window "
                "spans local_window // 2 tokens on each side)."
            )
        for name in ("embedding_dropout", "attention_dropout", "mlp_dropout", "classifier_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1).")
        if self.layer_types is not None:
            kinds = tuple(self.layer_types)
            object.__setattr__(self, "layer_types", kinds)
            for i, kind in enumerate(kinds):
                if kind not in LAYER_TYPES:
                    raise ConfigError(
                        f"layer_types[{i}]={kind!r} is not a layer type jaxformer knows; use "
                        f"one of {list(LAYER_TYPES)}.{_nearest(str(kind), LAYER_TYPES)}"
                    )
            if len(kinds) != self.num_layers:
                raise ConfigError(
                    f"layer_types has {len(kinds)} entries but num_layers={self.num_layers}; "
                    "give one type per layer."
                )
        check_label_names(self)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_length(self) -> int:
        return self.max_position_embeddings

    @property
    def half_window(self) -> int:
        """A sliding layer's query sees keys at distance <= half_window."""
        return self.local_window // 2

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """The resolved plan: `layer_types`, or full attention every `global_every` layers."""
        if self.layer_types is not None:
            return self.layer_types
        return tuple(
            "sliding_attention" if i % self.global_every else "full_attention"
            for i in range(self.num_layers)
        )

    def rope_theta(self, kind: str) -> float:
        return self.global_rope_theta if kind == "full_attention" else self.local_rope_theta


# (layers, hidden, heads, intermediate). base and large as released; tiny and mini for CPU.
MODERNBERT_SIZES = {
    "tiny": (3, 128, 2, 192),
    "mini": (6, 256, 4, 384),
    "base": (22, 768, 12, 1152),
    "large": (28, 1024, 16, 2624),
}


def modernbert_config(size: str = "base", **overrides) -> ModernBertConfig:
    """ModernBERT at a named size (tiny/mini/base/large); `overrides` are config fields."""
    layers, hidden, heads, inter = _size(size, MODERNBERT_SIZES)
    base = dict(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=inter)
    return ModernBertConfig.from_dict({**base, **overrides})
