"""ModernBERT parity with transformers (PyTorch, CPU, float32, eval, eager attention).

Each case builds a random HF ModernBERT from a tiny config with odd sizes (never
downloaded), perturbs every weight, saves it with HF, loads it with
`jaxformer.from_pretrained`, and compares the hidden states and the head's outputs at the
real tokens of a padded batch whose rows (20, 13, 6 tokens) are longer than the local
window (+-3). Then the round trip: `jaxformer.save_pretrained` -> transformers loads the
same tensors and gives the same outputs.
"""

import numpy as np
import pytest

from torch_reference import torch, transformers

import jax

import jaxformer

TOL = 1e-4
LENGTHS, LENGTH = (20, 13, 6), 20
BASE = dict(
    vocab_size=97,
    hidden_size=60,  # 3 heads of 20
    num_hidden_layers=4,
    num_attention_heads=3,
    intermediate_size=37,
    max_position_embeddings=64,
    local_attention=6,  # sliding layers see +-3 tokens
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    cls_token_id=1,
    sep_token_id=2,
)
CASES = {  # id -> (HF class, config changes)
    "base-global-every-3": ("ModernBertModel", {}),
    "base-global-every-2": ("ModernBertModel", {"global_attn_every_n_layers": 2}),
    "mlm": ("ModernBertForMaskedLM", {}),
    "seq-cls-pooling": ("ModernBertForSequenceClassification", {"num_labels": 3}),
    "seq-mean-pooling": (
        "ModernBertForSequenceClassification",
        {"num_labels": 3, "classifier_pooling": "mean"},
    ),
    "token": ("ModernBertForTokenClassification", {"num_labels": 5}),
    "qa": ("ModernBertForQuestionAnswering", {}),
    "biases-and-thetas": (
        "ModernBertForMaskedLM",
        {
            "norm_bias": True,
            "attention_bias": True,
            "mlp_bias": True,
            "classifier_bias": True,
            "hidden_activation": "gelu_pytorch_tanh",
            "layer_types": ["sliding_attention", "full_attention"] * 2,
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 5000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 300.0},
            },
        },
    ),
}
OUTPUTS = {  # HF class -> {our EncoderOutput field: HF attribute}
    "ModernBertModel": {},
    "ModernBertForMaskedLM": {"mlm_logits": "logits"},
    "ModernBertForSequenceClassification": {"logits": "logits"},
    "ModernBertForTokenClassification": {"logits": "logits"},
    "ModernBertForQuestionAnswering": {"start_logits": "start_logits", "end_logits": "end_logits"},
}
MEASURED = {}


def build_hf(arch, extra, seed=0):
    cfg = transformers.ModernBertConfig(**{**BASE, **extra})
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(cfg).eval()
    with torch.no_grad():  # tied tensors are one Parameter, so they stay tied
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def padded_batch(vocab, seed=0):
    rng = np.random.RandomState(seed)
    mask = np.zeros((len(LENGTHS), LENGTH), np.int64)
    for row, n in enumerate(LENGTHS):
        mask[row, :n] = 1
    ids = np.where(mask == 1, rng.randint(3, vocab, mask.shape), 0)
    return ids, mask


def hf_outputs(model, ids, mask):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
        )
    res = {"last_hidden_state": out.hidden_states[-1].numpy()}
    for ours, theirs in OUTPUTS[type(model).__name__].items():
        res[ours] = getattr(out, theirs).numpy()
    return res


def max_diffs(ours, theirs, mask):
    """Max |diff| per output at real tokens (padded rows of a sliding layer can see no key:
    their values are unspecified on both sides)."""
    diffs = {}
    for k, v in theirs.items():
        o = np.asarray(ours[k])
        assert o.shape == v.shape, (k, o.shape, v.shape)
        d = np.abs(o - v)
        diffs[k] = float(d[mask.astype(bool)].max() if d.shape[:2] == mask.shape else d.max())
    return diffs


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    arch, extra = CASES[request.param]
    hf_model = build_hf(arch, extra)
    path = tmp_path_factory.mktemp(request.param)
    hf_model.save_pretrained(path)
    model, params = jaxformer.from_pretrained(str(path))
    ids, mask = padded_batch(BASE["vocab_size"])
    return dict(
        name=request.param,
        hf_model=hf_model,
        model=model,
        params=params,
        inputs=(ids, mask),
        hf=hf_outputs(hf_model, ids, mask),
        tmp=tmp_path_factory,
    )


def test_config_read_from_transformers(case):
    cfg, hf_cfg = case["model"].cfg, case["hf_model"].config
    assert list(cfg.layer_kinds) == list(hf_cfg.layer_types)
    assert cfg.half_window == hf_cfg.sliding_window
    assert cfg.global_rope_theta == hf_cfg.rope_parameters["full_attention"]["rope_theta"]
    assert cfg.local_rope_theta == hf_cfg.rope_parameters["sliding_attention"]["rope_theta"]


def test_parity_with_transformers(case):
    out = jax.jit(case["model"].apply)({"params": case["params"]}, *case["inputs"])
    ours = {k: v for k, v in vars(out).items() if v is not None}
    diffs = max_diffs(ours, case["hf"], case["inputs"][1])
    assert len(diffs) == 1 + len(OUTPUTS[type(case["hf_model"]).__name__])
    MEASURED[case["name"]] = max(diffs.values())
    print(f"\nModernBERT parity {case['name']}: max |diff| {diffs}")
    assert max(diffs.values()) <= TOL, diffs


def test_save_pretrained_round_trip(case):
    """ours -> save_pretrained -> transformers from_pretrained: same tensors, same outputs."""
    path = case["tmp"].mktemp(case["name"] + "-saved")
    jaxformer.save_pretrained(case["model"], case["params"], str(path))
    arch = type(case["hf_model"]).__name__
    reloaded = getattr(transformers, arch).from_pretrained(str(path), attn_implementation="eager")
    want, got = case["hf_model"].state_dict(), reloaded.state_dict()
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k].numpy(), want[k].numpy(), err_msg=k)
    assert list(reloaded.config.layer_types) == list(case["hf_model"].config.layer_types)
    diffs = max_diffs(hf_outputs(reloaded, *case["inputs"]), case["hf"], case["inputs"][1])
    assert max(diffs.values()) <= 1e-6, diffs
