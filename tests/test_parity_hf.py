"""Parity with HuggingFace transformers (PyTorch, CPU, float32, eval) on identical weights.

Each case builds a random HF model from a tiny config (never downloaded), perturbs every
weight so biases and LayerNorms are not trivial, saves it with HF, loads it with
`jaxformer.from_pretrained`, and compares hidden states and every head output under `jax.jit`
on a padded batch with mixed token types. Then the round trip: `jaxformer.save_pretrained`
-> `transformers` `from_pretrained` gives the same state dict and the same outputs.
"""

import numpy as np
import pytest

from torch_reference import torch, transformers

import jax

import jaxformer

TOL = 1e-4
BATCH, LENGTH = 3, 12

# Tiny, deliberately odd sizes: 3 layers with H=96 and 3 heads, ALBERT with 2 groups of 2
# inner layers over 3 layers (groups 0, 0, 1), ELECTRA with E != H.
FAMILY_CONFIGS = {
    "bert": (
        "BertConfig",
        dict(
            vocab_size=99,
            hidden_size=96,
            num_hidden_layers=3,
            num_attention_heads=3,
            intermediate_size=160,
            max_position_embeddings=40,
        ),
    ),
    "roberta": (
        "RobertaConfig",
        dict(
            vocab_size=99,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=40,
            type_vocab_size=1,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
            layer_norm_eps=1e-5,
        ),
    ),
    "albert": (
        "AlbertConfig",
        dict(
            vocab_size=99,
            embedding_size=24,
            hidden_size=48,
            num_hidden_layers=3,
            num_attention_heads=3,
            intermediate_size=96,
            num_hidden_groups=2,
            inner_group_num=2,
            max_position_embeddings=40,
        ),
    ),
    "electra": (
        "ElectraConfig",
        dict(
            vocab_size=99,
            embedding_size=24,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=96,
            max_position_embeddings=40,
        ),
    ),
}
PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "electra": "Electra"}
TASKS = {
    "base": "Model",
    "mlm": "ForMaskedLM",
    "seq": "ForSequenceClassification",
    "tok": "ForTokenClassification",
    "qa": "ForQuestionAnswering",
}

CASES = {}  # id -> (family, HF class name, extra config)
for fam in FAMILY_CONFIGS:
    for task, suffix in TASKS.items():
        extra = {"seq": {"num_labels": 3}, "tok": {"num_labels": 5}}.get(task, {})
        CASES[f"{fam}-{task}"] = (fam, PREFIX[fam] + suffix, extra)
CASES["bert-pretraining"] = ("bert", "BertForPreTraining", {})
CASES["bert-regression"] = ("bert", "BertForSequenceClassification", {"num_labels": 1})
CASES["bert-relu"] = ("bert", "BertModel", {"hidden_act": "relu", "num_hidden_layers": 2})
CASES["albert-pretraining"] = ("albert", "AlbertForPreTraining", {})
CASES["albert-one-group"] = (
    "albert",
    "AlbertModel",
    {"num_hidden_groups": 1, "inner_group_num": 1},
)
CASES["electra-rtd"] = ("electra", "ElectraForPreTraining", {})
CASES["electra-e-equals-h"] = ("electra", "ElectraModel", {"embedding_size": 48})

# our output field -> HF output attribute, per HF class suffix
OUTPUTS = {
    "Model": {"pooled": "pooler_output"},
    "ForPreTraining": {"mlm_logits": "prediction_logits", "pair_logits": "seq_relationship_logits"},
    "ForMaskedLM": {"mlm_logits": "logits"},
    "ForSequenceClassification": {"logits": "logits"},
    "ForTokenClassification": {"logits": "logits"},
    "ForQuestionAnswering": {"start_logits": "start_logits", "end_logits": "end_logits"},
}
SPECIAL_OUTPUTS = {
    "AlbertForPreTraining": {"mlm_logits": "prediction_logits", "pair_logits": "sop_logits"},
    "ElectraForPreTraining": {"rtd_logits": "logits"},
    "ElectraModel": {},  # no pooler
}


def output_names(arch):
    """{our EncoderOutput field: HF output attribute} for HF class `arch`."""
    if arch in SPECIAL_OUTPUTS:
        return SPECIAL_OUTPUTS[arch]
    return OUTPUTS[next(s for s in OUTPUTS if arch.endswith(s))]


MEASURED = {}  # case -> max |diff| over all compared tensors (read by docs tooling)


def build_hf(family, arch, extra, seed=0):
    cls_name, kw = FAMILY_CONFIGS[family]
    hf_cfg = getattr(transformers, cls_name)(**{**kw, **extra})
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(hf_cfg).eval()
    with torch.no_grad():  # tied tensors are one Parameter, so they stay tied
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def batch(cfg, seed=0):
    """Padded batch: rows of 12, 9 and 5 real tokens; token types 0 then 1 where the family
    has two; pads carry pad_token_id (RoBERTa positions depend on it)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, cfg.vocab_size, (BATCH, LENGTH))
    mask = np.zeros((BATCH, LENGTH), np.int64)
    for row, n in enumerate((12, 9, 5)):
        mask[row, :n] = 1
    ids = np.where(mask == 1, ids, cfg.pad_token_id)
    types = np.zeros_like(ids)
    if cfg.type_vocab_size > 1:
        types[:, 4:] = 1
        types[mask == 0] = 0
    return ids, mask, types


def hf_outputs(model, ids, mask, types):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            token_type_ids=torch.tensor(types),
            output_hidden_states=True,
        )
    res = {"last_hidden_state": out.hidden_states[-1].numpy()}
    for ours, theirs in output_names(type(model).__name__).items():
        res[ours] = getattr(out, theirs).numpy()
    return res


def our_outputs(model, params, ids, mask, types):
    out = jax.jit(model.apply)({"params": params}, ids, mask, types)
    return {k: np.asarray(v) for k, v in vars(out).items() if v is not None}


def max_diffs(ours, theirs):
    assert set(theirs) <= set(ours), f"missing outputs {set(theirs) - set(ours)}"
    diffs = {}
    for k, v in theirs.items():
        assert ours[k].shape == v.shape, (k, ours[k].shape, v.shape)
        diffs[k] = float(np.abs(ours[k] - v).max())
    return diffs


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    family, arch, extra = CASES[request.param]
    hf_model = build_hf(family, arch, extra)
    path = tmp_path_factory.mktemp(request.param)
    hf_model.save_pretrained(path)
    model, params = jaxformer.from_pretrained(str(path))
    ids, mask, types = batch(model.cfg)
    return dict(
        name=request.param,
        hf_model=hf_model,
        model=model,
        params=params,
        inputs=(ids, mask, types),
        hf=hf_outputs(hf_model, ids, mask, types),
        tmp=tmp_path_factory,
    )


def test_parity_with_transformers(case):
    ours = our_outputs(case["model"], case["params"], *case["inputs"])
    diffs = max_diffs(ours, case["hf"])
    assert len(diffs) == 1 + len(output_names(type(case["hf_model"]).__name__))
    MEASURED[case["name"]] = max(diffs.values())
    assert max(diffs.values()) <= TOL, diffs


def test_save_pretrained_round_trip(case):
    """ours -> save_pretrained -> transformers from_pretrained: same tensors, same outputs."""
    path = case["tmp"].mktemp(case["name"] + "-saved")
    jaxformer.save_pretrained(case["model"], case["params"], str(path))
    arch = type(case["hf_model"]).__name__
    reloaded = getattr(transformers, arch).from_pretrained(str(path)).eval()
    want, got = case["hf_model"].state_dict(), reloaded.state_dict()
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k].numpy(), want[k].numpy(), err_msg=k)
    diffs = max_diffs(hf_outputs(reloaded, *case["inputs"]), case["hf"])
    assert max(diffs.values()) <= 1e-6, diffs  # same tensors; torch may pick another kernel
