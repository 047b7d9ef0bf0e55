"""HuggingFace `config.json` <-> `EncoderConfig`, and the architectures we map."""

from __future__ import annotations

from typing import Any

from jaxformer.models.configs import ConfigError, EncoderConfig

# family -> {our head: HF architecture}. None is the bare base model.
ARCHITECTURES = {
    "bert": {None: "BertModel", "pretraining": "BertForPreTraining", "mlm": "BertForMaskedLM"},
    "roberta": {None: "RobertaModel", "mlm": "RobertaForMaskedLM"},
    "albert": {
        None: "AlbertModel",
        "pretraining": "AlbertForPreTraining",
        "mlm": "AlbertForMaskedLM",
    },
    "electra": {None: "ElectraModel", "rtd": "ElectraForPreTraining", "mlm": "ElectraForMaskedLM"},
}
_TASKS = {
    "sequence_classification": "ForSequenceClassification",
    "token_classification": "ForTokenClassification",
    "question_answering": "ForQuestionAnswering",
}
_CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "electra": "Electra"}
for _fam, _archs in ARCHITECTURES.items():
    _archs.update({h: _CLASS_PREFIX[_fam] + suffix for h, suffix in _TASKS.items()})
HEAD_OF_ARCHITECTURE = {
    arch: (fam, head) for fam, archs in ARCHITECTURES.items() for head, arch in archs.items()
}

# The attribute HF keeps the base model under in task models (`bert.encoder...`).
BASE_PREFIX = {"bert": "bert", "roberta": "roberta", "albert": "albert", "electra": "electra"}

# HF's defaults per family, for keys a config.json leaves out, in HF's key names (None: a
# key the family does not have); then ALBERT's layer groups, and what every family shares.
_FAMILY_KEYS = (
    "vocab_size",
    "embedding_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "pad_token_id",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)
_FAMILY_DEFAULTS = {
    "bert": (30522, None, 768, 12, 12, 3072, 0, "gelu", 0.1, 0.1),
    "roberta": (50265, None, 768, 12, 12, 3072, 1, "gelu", 0.1, 0.1),
    "albert": (30000, 128, 4096, 12, 64, 16384, 0, "gelu_new", 0.0, 0.0),
    "electra": (30522, 128, 256, 12, 4, 1024, 0, "gelu", 0.1, 0.1),
}
_HF_DEFAULTS = {
    fam: {k: v for k, v in zip(_FAMILY_KEYS, row) if v is not None}
    for fam, row in _FAMILY_DEFAULTS.items()
}
_HF_DEFAULTS["albert"].update(num_hidden_groups=1, inner_group_num=1, classifier_dropout_prob=0.1)
_COMMON_DEFAULTS = dict(
    max_position_embeddings=512,
    type_vocab_size=2,
    initializer_range=0.02,
    layer_norm_eps=1e-12,
    classifier_dropout=None,
)

# Our size fields -> their config.json keys, named alike in every HF encoder family.
SIZE_KEYS = dict(
    {k: k for k in ("vocab_size", "hidden_size", "intermediate_size", "max_position_embeddings")},
    num_layers="num_hidden_layers",
    num_heads="num_attention_heads",
)

# HF activation name -> ours, and back.
_ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "tanh": "tanh",
}
_ACT_TO_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_new",
    "gelu_tanh": "gelu_pytorch_tanh",
    "relu": "relu",
    "tanh": "tanh",
}


def supported_architectures() -> list[str]:
    return sorted(HEAD_OF_ARCHITECTURE)


def hf_has_pooler(family: str, head: str | None) -> bool:
    """Whether HF's class for (family, head) builds the tanh pooler."""
    if family == "electra":
        return False
    return head in (None, "pretraining") or (
        head == "sequence_classification" and family in ("bert", "albert")
    )


# model_type -> (family, HF class prefix): RoBERTa's architecture under another name (the
# same weights under `roberta.`); they load as that family and are written back as it.
MODEL_TYPE_ALIASES = {
    "xlm-roberta": ("roberta", "XLMRoberta"),
    "camembert": ("roberta", "Camembert"),
}


def family_and_head(hf: dict[str, Any]) -> tuple[str, str | None]:
    """(family, head) named by `model_type` and `architectures[0]`; clear error otherwise."""
    family = hf.get("model_type")
    if family in MODEL_TYPE_ALIASES:
        family, prefix = MODEL_TYPE_ALIASES[family]
        archs = hf.get("architectures") or [prefix + "Model"]
        arch = archs[0]
        if arch.startswith(prefix):
            arch = _CLASS_PREFIX[family] + arch[len(prefix) :]
        hf = dict(hf, model_type=family, architectures=[arch])
    if family not in ARCHITECTURES:
        raise ConfigError(
            f"unsupported HuggingFace model_type {family!r}; jaxformer converts "
            f"{sorted(ARCHITECTURES) + sorted(MODEL_TYPE_ALIASES)}."
        )
    archs = hf.get("architectures") or [ARCHITECTURES[family][None]]
    arch = archs[0]
    if arch not in ARCHITECTURES[family].values():
        raise ConfigError(
            f"unsupported HuggingFace architecture {arch!r} (model_type={family!r}); supported: "
            f"{', '.join(sorted(ARCHITECTURES[family].values()))}."
        )
    return family, HEAD_OF_ARCHITECTURE[arch][1]


def labels_from_hf(hf: dict[str, Any]) -> tuple[int, tuple | None]:
    """(num_labels, label names or None when they are HF's defaults LABEL_i) of a config."""
    if not hf.get("id2label"):
        return hf.get("num_labels", 2), None
    num_labels = len(hf["id2label"])
    names = [
        str(hf["id2label"].get(str(i), hf["id2label"].get(i, f"LABEL_{i}")))
        for i in range(num_labels)
    ]
    if names == [f"LABEL_{i}" for i in range(num_labels)]:
        return num_labels, None
    return num_labels, tuple(names)


def fields_from_hf(get, keys: dict[str, str]) -> dict[str, Any]:
    """{our field: its value} for `keys` (our field -> config.json key), read through `get`
    (key -> value or default)."""
    return {field: get(key) for field, key in keys.items()}


def hf_fields(cfg, keys: dict[str, str]) -> dict[str, Any]:
    """{config.json key: `cfg`'s value} for `keys` (our field -> config.json key)."""
    return {key: getattr(cfg, field) for field, key in keys.items()}


def hf_labels(cfg) -> dict[str, Any]:
    """config.json's `id2label` and `label2id` for `cfg`'s classes."""
    names = label_names(cfg)
    return dict(
        id2label={str(i): n for i, n in enumerate(names)},
        label2id={n: i for i, n in enumerate(names)},
    )


def encoder_config_from_hf(hf: dict[str, Any], **overrides) -> EncoderConfig:
    """An `EncoderConfig` (head included) from a HF `config.json` dict; `overrides` win."""
    family, head = family_and_head(hf)
    get = lambda k: hf.get(k, _HF_DEFAULTS[family].get(k, _COMMON_DEFAULTS.get(k)))
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ConfigError(
            f"position_embedding_type={hf['position_embedding_type']!r} is not "
            "supported; jaxformer has absolute learned positions only."
        )
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ConfigError("decoder / cross-attention BERT configs are not supported.")
    act = get("hidden_act")
    if act not in _ACT_FROM_HF:
        raise ConfigError(f"hidden_act={act!r} is not supported; known: {sorted(_ACT_FROM_HF)}.")
    num_labels, label_names = labels_from_hf(hf)
    pad = get("pad_token_id")
    pad = 0 if pad is None else pad
    fields = dict(
        family=family,
        head=head,
        **fields_from_hf(get, SIZE_KEYS),
        type_vocab_size=get("type_vocab_size"),
        layer_norm_eps=get("layer_norm_eps"),
        hidden_act=_ACT_FROM_HF[act],
        hidden_dropout=get("hidden_dropout_prob"),
        attention_dropout=get("attention_probs_dropout_prob"),
        classifier_dropout=get(
            "classifier_dropout_prob" if family == "albert" else "classifier_dropout"
        ),
        initializer_range=get("initializer_range"),
        pad_token_id=pad,
        # RoBERTa numbers positions from pad_token_id + 1 (HF create_position_ids_from_input_ids).
        position_offset=pad + 1 if family == "roberta" else 0,
        with_pooler=hf_has_pooler(family, head),
        num_labels=num_labels,
        label_names=label_names,
        classifier_style="cls_mlp" if family in ("roberta", "electra") else "pooler",
    )
    if family in ("albert", "electra"):
        fields["embedding_size"] = get("embedding_size") or get("hidden_size")
    if family == "albert":
        fields.update(
            sharing="all",
            num_hidden_groups=get("num_hidden_groups"),
            inner_group_num=get("inner_group_num"),
        )
    return EncoderConfig.from_dict({**fields, **overrides})


def hf_layout(cfg: EncoderConfig) -> tuple[int, int]:
    """(num_hidden_groups, inner_group_num) of the HF ALBERT equivalent of `cfg`."""
    if cfg.sharing == "all":
        return cfg.num_hidden_groups, cfg.inner_group_num
    if cfg.sharing == "none":  # one group per layer is ALBERT with nothing shared
        return cfg.num_layers, 1
    raise ConfigError(
        f"sharing={cfg.sharing!r} has no HuggingFace ALBERT equivalent (HF shares "
        "whole layers in groups); use sharing='all' or 'none'."
    )


def check_hf_compatible(cfg: EncoderConfig) -> None:
    """Raises `ConfigError` naming the field when HF has no class for `cfg`."""
    fam = cfg.family
    if cfg.pre_ln:
        raise ConfigError("pre_ln=True has no HuggingFace BERT-family equivalent (all post-LN).")
    if cfg.head not in ARCHITECTURES[fam]:
        raise ConfigError(
            f"head={cfg.head!r} has no HuggingFace {_CLASS_PREFIX[fam]} class; "
            f"{fam} supports heads {[h for h in ARCHITECTURES[fam]]}."
        )
    if fam in ("bert", "roberta") and cfg.emb_size != cfg.hidden_size:
        raise ConfigError(
            f"embedding_size={cfg.embedding_size} != hidden_size for family="
            f"{fam!r}: HF {_CLASS_PREFIX[fam]} has no embedding projection."
        )
    if fam == "albert":
        hf_layout(cfg)
    elif cfg.sharing != "none":
        raise ConfigError(f"sharing={cfg.sharing!r} needs family='albert' in HuggingFace.")
    if fam == "roberta" and cfg.position_offset != cfg.pad_token_id + 1:
        raise ConfigError(
            f"position_offset={cfg.position_offset} must be pad_token_id + 1 = "
            f"{cfg.pad_token_id + 1} for HF RoBERTa."
        )
    if fam != "roberta" and cfg.position_offset:
        raise ConfigError(f"position_offset={cfg.position_offset} needs family='roberta' in HF.")
    want_style = "cls_mlp" if fam in ("roberta", "electra") else "pooler"
    if cfg.head == "sequence_classification" and cfg.classifier_style != want_style:
        raise ConfigError(
            f"classifier_style={cfg.classifier_style!r}: HF {_CLASS_PREFIX[fam]} "
            f"classifies with {want_style!r}."
        )


def label_names(cfg: EncoderConfig) -> list[str]:
    """The classes' names: `cfg.label_names`, or HF's defaults LABEL_0, LABEL_1, ..."""
    return list(cfg.label_names or [f"LABEL_{i}" for i in range(cfg.num_labels)])


def hf_config_from_encoder_config(cfg: EncoderConfig) -> dict[str, Any]:
    """The `config.json` dict HF needs to build the same model as `cfg`."""
    check_hf_compatible(cfg)
    fam = cfg.family
    d = dict(
        architectures=[ARCHITECTURES[fam][cfg.head]],
        model_type=fam,
        **hf_fields(cfg, SIZE_KEYS),
        hidden_act=_ACT_TO_HF[cfg.hidden_act],
        hidden_dropout_prob=cfg.hidden_dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        type_vocab_size=cfg.type_vocab_size,
        initializer_range=cfg.initializer_range,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=cfg.pad_token_id,
        position_embedding_type="absolute",
        tie_word_embeddings=True,  # our MLM decoder is always the word-embedding table
        dtype=cfg.param_dtype,
        **hf_labels(cfg),
    )
    if fam == "albert":
        d["classifier_dropout_prob"] = (
            cfg.hidden_dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
        )
        d["num_hidden_groups"], d["inner_group_num"] = hf_layout(cfg)
    else:
        d["classifier_dropout"] = cfg.classifier_dropout
    if fam in ("albert", "electra"):
        d["embedding_size"] = cfg.emb_size
    return d
