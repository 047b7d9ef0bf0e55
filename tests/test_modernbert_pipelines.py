"""The fill-mask, classify and tag pipelines on ModernBERT directories saved by
transformers (random weights, a hand-written WordPiece vocab) agree with transformers'
own pipelines, and the CLI serves them."""

import os
import subprocess
import sys

import numpy as np
import pytest

from test_pipelines_helpers import NER_LABELS, VOCAB

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from jaxformer.inference import pipelines

TOL = 1e-4
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = {
    "mlm": "ModernBertForMaskedLM",
    "sequence_classification": "ModernBertForSequenceClassification",
    "token_classification": "ModernBertForTokenClassification",
}


def make_modernbert_dir(path, head, labels=None, seed=0):
    """A 3-layer H=32 ModernBERT (window +-4) with `head`, every weight perturbed, and a
    WordPiece tokenizer that feeds no token types (ModernBERT has none)."""
    kw = {}
    if labels is not None:
        kw = dict(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    cfg = transformers.ModernBertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=128,
        local_attention=8,
        pad_token_id=0,
        cls_token_id=2,
        sep_token_id=3,
        bos_token_id=2,
        eos_token_id=3,
        **kw,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, CLASSES[head])(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(path)
    tok = transformers.BertTokenizer(
        vocab={w: i for i, w in enumerate(VOCAB)}, model_input_names=["input_ids", "attention_mask"]
    )
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("modernbert_pipelines")
    return {
        "mlm": make_modernbert_dir(root / "mlm", "mlm"),
        "cls": make_modernbert_dir(
            root / "cls", "sequence_classification", ["negative", "neutral", "positive"], 1
        ),
        "ner": make_modernbert_dir(root / "ner", "token_classification", NER_LABELS, 2),
    }


def hf_pipeline(task, path, **kw):
    return transformers.pipeline(task, model=path, device="cpu", **kw)


FILL = [
    "paris is the [MASK] of france.",
    "the [MASK] is the largest city of [MASK] and john works at google in new york.",
]


def assert_fill_mask_agrees(path):
    ref, ours = hf_pipeline("fill-mask", path), pipelines.FillMask(path)
    for text, got in zip(FILL, ours(FILL, top_k=5)):
        want = ref(text, top_k=5)
        if text.count("[MASK]") == 1:
            got, want = [got], [want]
        assert len(got) == len(want) == text.count("[MASK]")
        for g, w in zip(got, want):
            assert [c["token_str"] for c in g] == [c["token_str"] for c in w]
            assert [c["sequence"] for c in g] == [c["sequence"] for c in w]
            np.testing.assert_allclose([c["score"] for c in g], [c["score"] for c in w], atol=TOL)


def test_fill_mask_matches_transformers(dirs):
    assert_fill_mask_agrees(dirs["mlm"])


def test_fill_mask_on_a_model_saved_by_jaxformer(dirs, tmp_path):
    """from_pretrained -> save_pretrained (+ the tokenizer): both pipelines agree there."""
    import jaxformer

    model, params = jaxformer.from_pretrained(dirs["mlm"])
    jaxformer.save_pretrained(model, params, str(tmp_path))
    transformers.AutoTokenizer.from_pretrained(dirs["mlm"]).save_pretrained(str(tmp_path))
    assert_fill_mask_agrees(str(tmp_path))


def test_classify_matches_transformers(dirs):
    texts = ["paris is a beautiful city.", "many people visit the museum every year!"]
    ref, ours = hf_pipeline("text-classification", dirs["cls"]), pipelines.Classify(dirs["cls"])
    for g, t in zip(ours(texts, top_k=None), texts):
        w = sorted(ref(t, top_k=None), key=lambda d: d["score"], reverse=True)
        assert [d["label"] for d in g] == [d["label"] for d in w]
        np.testing.assert_allclose([d["score"] for d in g], [d["score"] for d in w], atol=TOL)


@pytest.mark.parametrize("aggregation", ["none", "first"])
def test_tag_matches_transformers(dirs, aggregation):
    texts = ["john smith works at google in new york.", "mary jones lives in londonton, england"]
    ref = hf_pipeline("token-classification", dirs["ner"], aggregation_strategy=aggregation)
    key = "entity" if aggregation == "none" else "entity_group"
    for text, got in zip(texts, pipelines.Tag(dirs["ner"])(texts, aggregation=aggregation)):
        want = ref(text)
        assert [(e[key], e["start"], e["end"]) for e in got] == [
            (e[key], e["start"], e["end"]) for e in want
        ]
        np.testing.assert_allclose(
            [e["score"] for e in got], [float(e["score"]) for e in want], atol=TOL
        )


def test_cli_fill_mask_on_a_modernbert_directory(dirs):
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "jaxformer.cli", "fill-mask", "--model", dirs["mlm"], FILL[0]]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    top = hf_pipeline("fill-mask", dirs["mlm"])(FILL[0], top_k=1)[0]["token_str"]
    assert top in run.stdout
