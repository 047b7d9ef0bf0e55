"""Model configuration: frozen dataclasses, named sizes, validation with clear errors."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from jaxformer.errors import ConfigError
from jaxformer.layers.kernels import KERNELS  # one list, beside the kernels

BERT_FAMILIES = ("bert", "roberta", "albert", "electra")  # the families of EncoderConfig
SHARING = ("none", "all", "attention", "ffn")
ACTIVATIONS = ("gelu", "gelu_new", "gelu_tanh", "relu", "tanh")
HEADS = (
    None,
    "pretraining",
    "mlm",
    "rtd",
    "sequence_classification",
    "token_classification",
    "question_answering",
)
DTYPES = ("float32", "bfloat16", "float16")
REMAT = ("none", "full", "dots", "dots_no_batch")


def _nearest(name: str, valid) -> str:
    if not isinstance(name, str):
        return ""
    close = difflib.get_close_matches(name, list(valid), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def check_choice(field: str, value, choices) -> None:
    """Raises ConfigError unless `value` is one of `choices`, naming the nearest ones."""
    if value not in choices:
        hint = _nearest(value, [c for c in choices if isinstance(c, str)])
        raise ConfigError(f"{field}={value!r} is not one of {list(choices)}.{hint}")


# The size fields every encoder config has (each >= 1).
ENCODER_SIZES = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position_embeddings",
)


def check_numerics(cfg) -> None:
    """The attention kernel, dtypes and remat policy every encoder config names."""
    check_choice("attention_kernel", cfg.attention_kernel, KERNELS)
    check_choice("dtype", cfg.dtype, DTYPES)
    check_choice("param_dtype", cfg.param_dtype, DTYPES)
    check_choice("remat_policy", cfg.remat_policy, REMAT)


def check_label_names(cfg) -> None:
    """Stores `cfg.label_names` (when given) as a tuple of str, one name per label."""
    if cfg.label_names is not None:
        object.__setattr__(cfg, "label_names", tuple(str(x) for x in cfg.label_names))
        if len(cfg.label_names) != cfg.num_labels:
            raise ConfigError(
                f"label_names has {len(cfg.label_names)} names but "
                f"num_labels={cfg.num_labels}; give one name per label."
            )


def check_positive(cfg, names, optional=()) -> None:
    """Each field in `names` is >= 1; each in `optional` is >= 1 or None."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(cfg, name)}.")
    for name in optional:
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1 or None, got {value}.")


class _ConfigMixin:
    """Shared helpers: `replace` with checked keys, dict round trip, unknown-key errors."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = cls.field_names()
        for k in d:
            if k not in names:
                raise ConfigError(
                    f"unknown {cls.__name__} field {k!r}.{_nearest(k, names)} "
                    f"Valid fields: {', '.join(names)}."
                )
        return cls(**d)

    def replace(self, **changes):
        names = self.field_names()
        for k in changes:
            if k not in names:
                raise ConfigError(f"unknown {type(self).__name__} field {k!r}.{_nearest(k, names)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EncoderConfig(_ConfigMixin):
    """One encoder for BERT / RoBERTa / ALBERT / ELECTRA; the family is picked by fields."""

    family: str = "bert"  # bert | roberta | albert | electra
    vocab_size: int = 30522
    hidden_size: int = 768  # H
    num_layers: int = 12  # L: number of layer applications
    num_heads: int = 12  # A: H must divide by it
    intermediate_size: int = 3072  # feed-forward width, usually 4H
    embedding_size: int | None = None  # E: None means E = H (no projection)
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # segment (token type) vocabulary; RoBERTa: 1
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"  # gelu (exact) | gelu_new/gelu_tanh | relu | tanh
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None  # None: hidden_dropout
    initializer_range: float = 0.02
    pad_token_id: int = 0
    position_offset: int = 0  # RoBERTa: pad_token_id + 1 (positions skip past pad)
    pre_ln: bool = False  # pre-LN blocks instead of BERT's post-LN
    with_pooler: bool = True  # tanh pooler on the first token
    # ALBERT cross-layer sharing: none | all | attention | ffn. With "all", layers are grouped
    # as in ALBERT: num_hidden_groups distinct groups, each of inner_group_num blocks.
    sharing: str = "none"
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    # Heads
    head: str | None = None  # None | pretraining | mlm | rtd | *_classification | qa
    num_labels: int = 2
    label_names: tuple | None = None  # the classes' names (HF id2label); None: LABEL_i
    # pooler (BERT/ALBERT) | cls_mlp: MLP on the first token (RoBERTa tanh, ELECTRA gelu)
    classifier_style: str = "pooler"
    # Numerics and performance
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"  # parameter (master weight) dtype
    attention_kernel: str = (
        "auto"  # jaxformer.layers.kernels: auto | xla | einsum | cudnn | splash | pallas
    )
    remat_policy: str = "none"  # activation checkpointing per block
    scan_layers: bool = False  # lax.scan over identical blocks (sharing=none only)
    # With `mlm_positions`, run the last layer only at [CLS] and those rows: its other outputs
    # feed no head, so the result is identical and ~5% of BERT-base's training FLOPs are
    # skipped. Not with scan_layers (the scanned layers share one body).
    sparse_last_layer: bool = True

    def __post_init__(self):
        check_choice("family", self.family, BERT_FAMILIES)
        check_choice("sharing", self.sharing, SHARING)
        check_choice("hidden_act", self.hidden_act, ACTIVATIONS)
        check_choice("head", self.head, HEADS)
        check_numerics(self)
        check_choice("classifier_style", self.classifier_style, ("pooler", "cls_mlp"))
        check_positive(
            self,
            (
                *ENCODER_SIZES,
                "type_vocab_size",
                "num_hidden_groups",
                "inner_group_num",
                "num_labels",
            ),
            optional=("embedding_size",),
        )
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "pick num_heads so that hidden_size / num_heads is an integer."
            )
        e = self.embedding_size
        if e is not None and e > self.hidden_size and self.sharing != "none":
            raise ConfigError(
                f"embedding_size={e} > hidden_size={self.hidden_size} with sharing="
                f"{self.sharing!r}: factorized embeddings exist to make E smaller than H."
            )
        if self.sharing != "all" and (self.num_hidden_groups != 1 or self.inner_group_num != 1):
            raise ConfigError("num_hidden_groups / inner_group_num need sharing='all'.")
        if self.num_hidden_groups > self.num_layers:
            raise ConfigError(
                f"num_hidden_groups={self.num_hidden_groups} exceeds num_layers={self.num_layers}."
            )
        if self.scan_layers and (self.sharing != "none" or self.inner_group_num != 1):
            raise ConfigError(
                "scan_layers=True needs sharing='none' (shared layers already compile once)."
            )
        if self.position_offset < 0:
            raise ConfigError("position_offset must be >= 0.")
        for name in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1).")
        check_label_names(self)

    def runs_sparse_last_layer(self, n_positions: int, seq_len: int) -> bool:
        """Whether `EncoderModel` given `mlm_positions` [b, n_positions] over `seq_len`
        tokens runs its last layer at [CLS] + those rows only (fewer rows than the full
        layer, an MLM head, not scanned)."""
        return (
            self.sparse_last_layer
            and not self.scan_layers
            and self.head in ("mlm", "pretraining")
            and n_positions + 1 < seq_len
        )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def emb_size(self) -> int:
        """E: the width of the embedding tables."""
        return self.embedding_size or self.hidden_size

    @property
    def max_length(self) -> int:
        """Longest sequence the position table allows."""
        return self.max_position_embeddings - self.position_offset

    @property
    def num_physical_layers(self) -> int:
        """Distinct parameter blocks that exist for the attention and the feed-forward."""
        if self.sharing == "all":
            return self.num_hidden_groups * self.inner_group_num
        return self.num_layers


# -- named sizes ---------------------------------------------------------------------------
# (layers, hidden); heads = H/64 (at least 2), intermediate = 4H.
SIZES = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}
ALBERT_SIZES = {  # (layers, hidden, embedding, heads, intermediate)
    "base": (12, 768, 128, 12, 3072),
    "large": (24, 1024, 128, 16, 4096),
    "xlarge": (24, 2048, 128, 32, 8192),
    "xxlarge": (12, 4096, 128, 64, 16384),
}
ELECTRA_SIZES = {  # discriminator: (layers, hidden, embedding, heads, intermediate)
    "small": (12, 256, 128, 4, 1024),
    "base": (12, 768, 768, 12, 3072),
    "large": (24, 1024, 1024, 16, 4096),
}
# Generator width as a fraction of the discriminator's, as released (google/electra-*-generator:
# H = 256 at every size, so 1 for small). The paper's Table 6 lists 1/4 for ELECTRA-Small, the
# setting of its compute-matched study; the released small generator is as wide as its
# discriminator, and these fractions reproduce the released checkpoints.
ELECTRA_GENERATOR_FRACTION = {"small": 1.0, "base": 1 / 3, "large": 1 / 4}
TINY_GENERATOR_FRACTION = 1 / 4  # BERT size names (tiny CPU models)


def generator_dims(hidden: int, intermediate: int, fraction: float) -> dict:
    """The one ELECTRA generator rule: the discriminator's depth and embedding width, its
    hidden and MLP widths scaled by `fraction` (at least 16), one head per 64 dims (fewer
    when 64-dim heads do not divide the width)."""
    h = max(16, int(round(hidden * fraction)))
    heads = max(1, h // 64)
    while h % heads:
        heads -= 1
    inter = max(16, int(round(intermediate * fraction)))
    return {"hidden_size": h, "num_heads": heads, "intermediate_size": inter}


def _size(name: str, table: dict) -> tuple:
    if name not in table:
        raise ConfigError(f"unknown size {name!r}.{_nearest(name, table)} Known: {list(table)}.")
    return table[name]


def _bert_size(size: str) -> tuple[int, int, int, int]:
    """(layers, hidden, heads, intermediate) of a BERT size name: 64-dim heads (at least 2)
    and an MLP 4x the width."""
    layers, hidden = _size(size, SIZES)
    return layers, hidden, max(2, hidden // 64), 4 * hidden


def _dims(layers: int, hidden: int, heads: int, inter: int) -> dict:
    """The `EncoderConfig` size fields."""
    return dict(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=inter)


def bert_config(size: str = "base", **overrides) -> EncoderConfig:
    """BERT at a named size (tiny/mini/small/medium/base/large)."""
    base = dict(
        family="bert",
        **_dims(*_bert_size(size)),
    )
    return EncoderConfig.from_dict({**base, **overrides})


def roberta_config(size: str = "base", **overrides) -> EncoderConfig:
    """RoBERTa: BERT shape, byte-level BPE vocab, positions offset past the pad id."""
    base = dict(
        family="roberta",
        **_dims(*_bert_size(size)),
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        pad_token_id=1,
        position_offset=2,
        classifier_style="cls_mlp",
    )
    return EncoderConfig.from_dict({**base, **overrides})


def albert_config(size: str = "base", **overrides) -> EncoderConfig:
    """ALBERT: factorized embeddings and all-shared layers. Sizes base/large/xlarge/xxlarge,
    or a BERT size name for a small model (E = H/4)."""
    if size in ALBERT_SIZES:
        layers, hidden, emb, heads, inter = ALBERT_SIZES[size]
    else:
        layers, hidden, heads, inter = _bert_size(size)
        emb = max(16, hidden // 4)
    base = dict(
        family="albert",
        **_dims(layers, hidden, heads, inter),
        embedding_size=emb,
        vocab_size=30000,
        sharing="all",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        hidden_act="gelu_new",
    )
    return EncoderConfig.from_dict({**base, **overrides})


def electra_config(size: str = "small", generator: bool = False, **overrides) -> EncoderConfig:
    """ELECTRA discriminator (or its generator, `generator=True`) at small/base/large, or a
    BERT size name for tiny CPU models."""
    if size in ELECTRA_SIZES:
        layers, hidden, emb, heads, inter = ELECTRA_SIZES[size]
        frac = ELECTRA_GENERATOR_FRACTION[size]
    else:
        layers, hidden, heads, inter = _bert_size(size)
        emb, frac = hidden, TINY_GENERATOR_FRACTION
    if generator:
        dims = generator_dims(hidden, inter, frac)
        hidden, heads, inter = dims["hidden_size"], dims["num_heads"], dims["intermediate_size"]
    base = dict(
        family="electra",
        **_dims(layers, hidden, heads, inter),
        embedding_size=emb,
        with_pooler=False,
        classifier_style="cls_mlp",
    )
    return EncoderConfig.from_dict({**base, **overrides})


FAMILY_CONFIGS = {
    "bert": bert_config,
    "roberta": roberta_config,
    "albert": albert_config,
    "electra": electra_config,
}


def encoder_config(family: str, size: str, **overrides) -> EncoderConfig:
    """`encoder_config("albert", "base", head="mlm")`: any family at any named size."""
    check_choice("family", family, BERT_FAMILIES)
    return FAMILY_CONFIGS[family](size, **overrides)
