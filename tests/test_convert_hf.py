"""HF interop beyond parity: our configs exported to transformers, scanned layers, .bin and
bf16 files, loading with another head, config mapping, and the errors for bad input."""

import json
import os
import warnings

import numpy as np
import pytest

from torch_reference import torch, transformers

import jax
import jax.numpy as jnp
from flax.traverse_util import unflatten_dict
from safetensors.numpy import load_file, save_file

import jaxformer
from jaxformer.convert import (
    MissingWeightError,
    encoder_config_from_hf,
    hf_config_from_encoder_config,
    hf_state_dict_from_params,
    params_from_hf_state_dict,
)
from jaxformer.convert.hf_params import param_shapes
from jaxformer.models.configs import ConfigError

SMALL = dict(vocab_size=99, max_position_embeddings=32)
AUTO = {
    None: "AutoModel",
    "pretraining": "AutoModelForPreTraining",
    "rtd": "AutoModelForPreTraining",
    "mlm": "AutoModelForMaskedLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "question_answering": "AutoModelForQuestionAnswering",
}
HF_NAMES = {
    "mlm_logits": ("prediction_logits", "logits"),
    "pair_logits": ("seq_relationship_logits", "sop_logits"),
    "rtd_logits": ("logits",),
    "logits": ("logits",),
    "start_logits": ("start_logits",),
    "end_logits": ("end_logits",),
}


def inputs(cfg):
    ids = np.random.RandomState(1).randint(3, cfg.vocab_size, (2, 10))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ids[mask == 0] = cfg.pad_token_id
    types = np.zeros_like(ids)
    if cfg.type_vocab_size > 1:
        types[:, 5:] = mask[:, 5:]
    return ids, mask, types


def random_params(cfg, seed=0):
    """Random params of the right shapes, straight from numpy: compiling `model.init` costs
    seconds on CPU. LayerNorm scales sit near 1, everything else near 0."""
    rng = np.random.RandomState(seed)
    flat = {
        path: (1.0 if path.endswith("scale") else 0.0) + 0.05 * rng.standard_normal(shape)
        for path, shape in param_shapes(cfg).items()
    }
    params = unflatten_dict({tuple(k.split("/")): v.astype(np.float32) for k, v in flat.items()})
    return jaxformer.EncoderModel(cfg), params


def hf_run(model, ids, mask, types):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types),
            output_hidden_states=True,
        )


def tiny_hf(arch="BertForPreTraining", seed=0, **kw):
    cfg = transformers.BertConfig(
        **{
            **SMALL,
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            **kw,
        }
    )
    torch.manual_seed(seed)
    return getattr(transformers, arch)(cfg).eval()


@pytest.fixture(scope="module")
def pretraining_dir(tmp_path_factory):
    model = tiny_hf()
    path = tmp_path_factory.mktemp("bert-pretraining")
    model.save_pretrained(path)
    return str(path), model


# -- our configs -> transformers ------------------------------------------------------------

EXPORTS = {
    "bert-pretraining": jaxformer.bert_config(
        "tiny", hidden_size=64, num_heads=2, intermediate_size=96, head="pretraining", **SMALL
    ),
    "roberta-classifier": jaxformer.roberta_config(
        "tiny",
        hidden_size=64,
        num_heads=4,
        intermediate_size=96,
        num_layers=2,
        with_pooler=False,
        head="sequence_classification",
        num_labels=3,
        vocab_size=99,
        max_position_embeddings=34,
    ),
    "albert-unshared-e-equals-h": jaxformer.albert_config(
        "tiny",
        hidden_size=48,
        embedding_size=48,
        num_heads=3,
        intermediate_size=64,
        sharing="none",
        with_pooler=False,
        head="mlm",
        **SMALL,
    ),
    "albert-groups": jaxformer.albert_config(
        "tiny",
        num_layers=3,
        hidden_size=48,
        embedding_size=16,
        num_heads=2,
        intermediate_size=64,
        num_hidden_groups=2,
        inner_group_num=2,
        head="pretraining",
        **SMALL,
    ),
    "electra-generator-e-gt-h": jaxformer.electra_config(
        "tiny", generator=True, head="mlm", **SMALL
    ),
    "bert-scanned-qa": jaxformer.bert_config(
        "tiny",
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        scan_layers=True,
        with_pooler=False,
        head="question_answering",
        **SMALL,
    ),
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_export_matches_transformers(name, tmp_path):
    cfg = EXPORTS[name]
    model, params = random_params(cfg)
    ids, mask, types = inputs(cfg)
    ours = jax.jit(model.apply)({"params": params}, ids, mask, types)
    jaxformer.save_pretrained(model, params, str(tmp_path))
    hf_model = getattr(transformers, AUTO[cfg.head]).from_pretrained(str(tmp_path)).eval()
    theirs = hf_run(hf_model, ids, mask, types)
    compared = {"last_hidden_state": (ours.last_hidden_state, theirs.hidden_states[-1])}
    for field, names in HF_NAMES.items():
        if getattr(ours, field) is not None:
            hf_name = next(n for n in names if getattr(theirs, n, None) is not None)
            compared[field] = (getattr(ours, field), getattr(theirs, hf_name))
    for field, (a, b) in compared.items():
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-4, rtol=0, err_msg=field)
    assert len(compared) > 1 or cfg.head is None
    # and back: the file loads into the same jaxformer params
    model2, params2 = jaxformer.from_pretrained(str(tmp_path), scan_layers=cfg.scan_layers)
    assert model2.cfg.head == cfg.head
    jax.tree.map(np.testing.assert_array_equal, params2, jax.tree.map(np.asarray, params))


# -- scanned layers, file formats --------------------------------------------------------------


def test_scanned_load_matches_unscanned_and_saves_back(pretraining_dir, tmp_path):
    path, hf_model = pretraining_dir
    model, params = jaxformer.from_pretrained(path)
    smodel, sparams = jaxformer.from_pretrained(path, scan_layers=True)
    assert sparams["encoder"]["layers"]["attention"]["attention"]["query"]["kernel"].shape == (
        2,
        32,
        2,
        16,
    )
    ids, mask, types = inputs(model.cfg)
    a = jax.jit(model.apply)({"params": params}, ids, mask, types)
    b = jax.jit(smodel.apply)({"params": sparams}, ids, mask, types)
    np.testing.assert_allclose(a.mlm_logits, b.mlm_logits, atol=1e-5)
    sd = hf_state_dict_from_params(sparams, smodel.cfg)
    want = hf_model.state_dict()
    assert set(sd) == set(want)
    for k in want:
        np.testing.assert_array_equal(sd[k], want[k].numpy(), err_msg=k)


def test_bin_sharded_legacy_names_and_bf16_files(pretraining_dir, tmp_path):
    path, hf_model = pretraining_dir
    _, want = jaxformer.from_pretrained(path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text(json.dumps(read_config(path)))
    torch.save(hf_model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    _, got = jaxformer.from_pretrained(str(tmp_path / "bin"))
    jax.tree.map(np.testing.assert_array_equal, got, want)

    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    legacy = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v.numpy()
        for k, v in hf_model.state_dict().items()
    }
    for got in (
        jaxformer.from_pretrained(str(tmp_path / "sharded"))[1],
        params_from_hf_state_dict(legacy, encoder_config_from_hf(read_config(path))),
    ):
        jax.tree.map(np.testing.assert_array_equal, got, want)

    hf_model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    hf_model.to(torch.float32)
    _, got = jaxformer.from_pretrained(str(tmp_path / "bf16"))
    rounded = jax.tree.map(lambda x: np.asarray(jnp.asarray(x, jnp.bfloat16), np.float32), want)
    jax.tree.map(np.testing.assert_array_equal, got, rounded)
    _, low = jaxformer.from_pretrained(path, param_dtype="bfloat16")
    assert low["encoder"]["pooler"]["kernel"].dtype == jnp.bfloat16


# -- another head than the checkpoint's ------------------------------------------------------------


def test_load_with_new_head_initialises_it_and_reports_unused(pretraining_dir):
    path, _ = pretraining_dir
    _, full = jaxformer.from_pretrained(path)
    with pytest.warns(UserWarning) as record:
        model, params = jaxformer.from_pretrained(
            path, head="sequence_classification", num_labels=3
        )
    messages = " ".join(str(w.message) for w in record)
    assert "newly initialised" in messages and "classifier/out_proj/kernel" in messages
    assert "cls.seq_relationship.weight" in messages  # unused real weights are named
    assert params["classifier"]["out_proj"]["kernel"].shape == (32, 3)
    jax.tree.map(np.testing.assert_array_equal, params["encoder"], full["encoder"])
    ids, mask, types = inputs(model.cfg)
    assert jax.jit(model.apply)({"params": params}, ids, mask, types).logits.shape == (2, 3)


def test_base_checkpoint_loads_with_mlm_head_and_task_checkpoint_as_base(tmp_path):
    bare = tiny_hf("BertModel")
    bare.save_pretrained(tmp_path / "bare")
    with pytest.warns(UserWarning, match="newly initialised.*mlm/transform/kernel"):
        model, params = jaxformer.from_pretrained(str(tmp_path / "bare"), head="mlm")
    np.testing.assert_array_equal(
        params["encoder"]["embeddings"]["word"]["embedding"],
        bare.embeddings.word_embeddings.weight.detach().numpy(),
    )
    tiny_hf("BertForMaskedLM").save_pretrained(tmp_path / "mlm")
    with pytest.warns(UserWarning, match="not used: .*cls.predictions.transform.dense.weight"):
        model, params = jaxformer.from_pretrained(str(tmp_path / "mlm"), head="base")
    assert model.cfg.head is None and not model.cfg.with_pooler  # HF's MLM class has none


# -- config mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        jaxformer.bert_config("base", head="pretraining"),
        jaxformer.roberta_config("base", head="mlm", with_pooler=False),
        jaxformer.albert_config("large", head="sequence_classification", num_labels=5),
        jaxformer.bert_config(
            "base",
            head="sequence_classification",
            num_labels=3,
            label_names=("entailment", "neutral", "contradiction"),
        ),
        jaxformer.electra_config("small", head="rtd"),
        jaxformer.electra_config("base", generator=True, head="mlm"),
    ],
    ids=lambda c: f"{c.family}-{c.head}",
)
def test_config_round_trip(cfg):
    hf = json.loads(json.dumps(hf_config_from_encoder_config(cfg)))  # as written to disk
    back = encoder_config_from_hf(hf)
    keep = ("dtype", "param_dtype", "attention_kernel", "remat_policy", "scan_layers")
    assert back == cfg.replace(
        **{k: getattr(back, k) for k in keep},
        classifier_dropout=(
            back.classifier_dropout
            if cfg.classifier_dropout is None and cfg.family == "albert"
            else cfg.classifier_dropout
        ),
    )  # HF ALBERT stores the resolved value
    assert getattr(transformers, hf["architectures"][0])  # a class transformers has


def test_label_names_travel_as_id2label(tmp_path):
    cfg = jaxformer.bert_config(
        "tiny",
        head="token_classification",
        num_labels=3,
        with_pooler=False,
        label_names=["O", "B-PER", "I-PER"],
        **SMALL,
    )
    model = jaxformer.EncoderModel(cfg)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    jaxformer.save_pretrained(model, params, str(tmp_path))
    hf = transformers.AutoConfig.from_pretrained(str(tmp_path))
    assert hf.id2label == {0: "O", 1: "B-PER", 2: "I-PER"} and hf.label2id["I-PER"] == 2
    back, _ = jaxformer.from_pretrained(str(tmp_path))
    assert back.cfg.label_names == ("O", "B-PER", "I-PER")
    with pytest.raises(ConfigError, match="label_names has 2 names but num_labels=3"):
        cfg.replace(label_names=("a", "b"))


def test_roberta_config_from_hf_offsets_positions():
    cfg = encoder_config_from_hf(
        {
            "model_type": "roberta",
            "architectures": ["RobertaModel"],
            "pad_token_id": 1,
            "max_position_embeddings": 514,
            "type_vocab_size": 1,
            "layer_norm_eps": 1e-5,
        }
    )
    assert (cfg.position_offset, cfg.max_length, cfg.classifier_style) == (2, 512, "cls_mlp")


# -- bad input -------------------------------------------------------------------------------------


def read_config(path):
    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)


def _write_dir(path, config, state_dict=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if state_dict is not None:
        save_file(state_dict, str(path / "model.safetensors"), metadata={"format": "pt"})
    return str(path)


def test_unsupported_model_type_is_named(tmp_path):
    path = _write_dir(tmp_path, {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(ConfigError, match=r"unsupported HuggingFace model_type 'gpt2'.*'bert'"):
        jaxformer.from_pretrained(path)


def test_unsupported_architecture_is_named_with_the_supported_ones(tmp_path):
    path = _write_dir(tmp_path, {"model_type": "bert", "architectures": ["BertLMHeadModel"]})
    with pytest.raises(ConfigError, match=r"'BertLMHeadModel'.*supported: BertForMaskedLM"):
        jaxformer.from_pretrained(path)


def test_missing_weight_names_the_hf_key(pretraining_dir, tmp_path):
    path, _ = pretraining_dir
    sd = load_file(os.path.join(path, "model.safetensors"))
    del sd["bert.encoder.layer.1.output.dense.weight"]
    bad = _write_dir(tmp_path, read_config(path), sd)
    with pytest.raises(
        MissingWeightError, match=r"'bert\.encoder\.layer\.1\.output\.dense\.weight' is missing"
    ):
        jaxformer.from_pretrained(bad)


def test_wrong_shape_and_untied_decoder_and_unused_weight(pretraining_dir):
    path, _ = pretraining_dir
    cfg = encoder_config_from_hf(read_config(path))
    sd = load_file(os.path.join(path, "model.safetensors"))
    bad = dict(sd, **{"bert.pooler.dense.weight": np.zeros((32, 31), np.float32)})
    with pytest.raises(
        ValueError,
        match=r"'bert\.pooler\.dense\.weight' has shape \(32, 31\), "
        r"expected \(32, 32\)",
    ):
        params_from_hf_state_dict(bad, cfg)
    untied = dict(
        sd, **{"cls.predictions.decoder.weight": sd["bert.embeddings.word_embeddings.weight"] + 1.0}
    )
    with pytest.raises(ValueError, match="cannot load an untied decoder"):
        params_from_hf_state_dict(untied, cfg)
    extra = dict(sd, **{"bert.encoder.layer.2.output.dense.weight": np.zeros((2, 2), np.float32)})
    with pytest.warns(UserWarning, match=r"not used: bert\.encoder\.layer\.2\.output\.dense"):
        params_from_hf_state_dict(extra, cfg)
    with warnings.catch_warnings():  # position_ids buffers are not weights: no warning
        warnings.simplefilter("error")
        params_from_hf_state_dict(
            dict(sd, **{"bert.embeddings.position_ids": np.arange(32)[None]}), cfg
        )


def test_albert_learned_square_projection_is_refused(tmp_path):
    hf_cfg = transformers.AlbertConfig(
        **SMALL,
        embedding_size=32,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    transformers.AlbertModel(hf_cfg).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="embedding_hidden_mapping_in' is not the identity"):
        jaxformer.from_pretrained(str(tmp_path))


def test_no_weights_file(tmp_path):
    path = _write_dir(tmp_path, {"model_type": "bert", "architectures": ["BertModel"]})
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        jaxformer.from_pretrained(path)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(pre_ln=True), "pre_ln"),
        (dict(sharing="attention"), "sharing='attention'"),
        (dict(head="rtd"), "head='rtd'"),
        (dict(classifier_style="cls_mlp", head="sequence_classification"), "classifier_style"),
    ],
)
def test_save_refuses_what_hf_cannot_express(change, match, tmp_path):
    cfg = jaxformer.bert_config("tiny", **SMALL).replace(**change)
    model = jaxformer.EncoderModel(cfg)
    with pytest.raises(ConfigError, match=match):
        jaxformer.save_pretrained(model, {}, str(tmp_path))


@pytest.mark.parametrize(
    "kind,head",
    [
        ("XLMRoberta", "ForMaskedLM"),
        ("XLMRoberta", "ForSequenceClassification"),
        ("Camembert", "Model"),
    ],
)
def test_xlm_roberta_and_camembert_load_as_roberta_with_parity(kind, head, tmp_path):
    """XLM-R and CamemBERT are RoBERTa's architecture under other names: a random tiny
    checkpoint of each loads through `from_pretrained` and matches transformers."""
    conf = getattr(transformers, f"{kind}Config")(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
        pad_token_id=1,
        type_vocab_size=1,
        num_labels=3,
    )
    torch.manual_seed(0)
    hf_model = getattr(transformers, kind + head)(conf).eval()
    hf_model.save_pretrained(str(tmp_path))
    model, params = jaxformer.from_pretrained(str(tmp_path))
    assert model.cfg.family == "roberta" and model.cfg.position_offset == 2
    rng = np.random.RandomState(0)
    ids = rng.randint(3, 120, (2, 9))
    mask = np.ones_like(ids)
    ids[1, 6:], mask[1, 6:] = 1, 0  # padded row
    with torch.no_grad():
        ref = hf_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    out = model.apply({"params": params}, ids, attention_mask=mask)
    if head == "Model":
        got, want = out.last_hidden_state, ref.last_hidden_state
    elif head == "ForMaskedLM":
        got, want = out.mlm_logits, ref.logits
    else:
        got, want = out.logits, ref.logits
    got, want = np.asarray(got), want.numpy()
    if got.ndim == 3:  # per token: the real ones only
        got, want = got[mask > 0], want[mask > 0]
    np.testing.assert_allclose(got, want, atol=2e-5)
