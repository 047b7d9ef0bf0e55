"""Task pipelines: fill-mask, classify, answer, tag, embed / similar / summarize, translate.

Each pipeline loads a HuggingFace directory or a jaxformer checkpoint
(`jaxformer.inference.loading.load_model`), batches
its inputs, pads them to a few length buckets and runs a jit-compiled forward
(`jaxformer.inference.buckets.BucketedFn`), so it compiles once per bucket, not per length.
Post-processing follows the `transformers` pipelines (scores agree to 1e-4 on the same
weights): fill-mask top-k probabilities and strings, text-classification softmax / sigmoid,
question-answering span scoring (windows with `doc_stride` overlap, `max_answer_len`,
no-answer), token-classification aggregation strategies.

Small inputs: an empty list of inputs gives an empty result ([] or, for `SentenceEmbed`, a
`[0, hidden]` array; `similar` with no candidates gives []); an empty or blank text, question,
context, query or document is a `PipelineError` naming what is empty.

    from jaxformer.inference.pipelines import pipeline
    fill = pipeline("fill-mask", "path/to/model")
    fill("Paris is the [MASK] of France.", top_k=3)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.data.sources import split_sentences
from jaxformer.inference.buckets import BucketedFn, batch_buckets, bucket_for, length_buckets
from jaxformer.inference.loading import LoadedModel, PipelineError, load_model
from jaxformer.models import ENCODER_FAMILIES
from jaxformer.models import heads as heads_lib
from jaxformer.models.configs import EncoderConfig

__all__ = [
    "PipelineError",
    "LoadedModel",
    "load_model",
    "FillMask",
    "Classify",
    "Answer",
    "Tag",
    "SentenceEmbed",
    "Translate",
    "pipeline",
    "PIPELINES",
]


def _check_kind(loaded: LoadedModel, task: str, heads: Sequence[str | None] | None):
    """A clear error when the checkpoint cannot serve `task`."""
    if loaded.kind != ("seq2seq" if task == "translate" else "encoder"):
        want = (
            "an encoder-decoder (Transformer / Marian)"
            if task == "translate"
            else f"a BERT-family encoder ({', '.join(ENCODER_FAMILIES)})"
        )
        raise PipelineError(
            f"{task}: {loaded.path!r} is a {loaded.kind} checkpoint; this pipeline needs {want}."
        )
    if heads is not None and loaded.config.head not in heads:
        raise PipelineError(
            f"{task}: the checkpoint in {loaded.path!r} has head {loaded.config.head!r} "
            f"({loaded.config.family}); this pipeline needs a model with head "
            f"{' or '.join(repr(h) for h in heads)}."
        )


# ---- shared machinery --------------------------------------------------------------------
class _EncoderPipeline:
    """Loads once, keeps a bucketed jit-compiled forward; subclasses post-process."""

    task = ""
    heads: tuple | None = None

    def __init__(
        self,
        model: str | LoadedModel,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        max_unknown_fraction: float = 0.5,
    ):
        self.loaded = model if isinstance(model, LoadedModel) else load_model(os.fspath(model))
        _check_kind(self.loaded, self.task, self.heads)
        self.model, self.tokenizer = self.loaded.model, self.loaded.tokenizer
        self.cfg: EncoderConfig = self.loaded.config
        limit = self.cfg.max_length
        if self.loaded.meta.get("max_seq_length"):
            limit = min(limit, self.loaded.meta["max_seq_length"])
        self.max_length = min(max_length or limit, limit)
        self.max_unknown_fraction = max_unknown_fraction
        self.labels = self.loaded.labels
        # A private copy of the Rust tokenizer: truncation settings must not leak into the
        # caller's tokenizer.
        from tokenizers import Tokenizer as RustTokenizer

        self._rust = RustTokenizer.from_str(self.tokenizer.hf.to_str())
        self._rust.no_padding()
        self._rust.enable_truncation(self.max_length, strategy="longest_first")
        self.forward = BucketedFn(
            self._forward,
            self.loaded.params,
            self.max_length,
            batch_size,
            pad_values={"input_ids": self.tokenizer.pad_id},
        )

    @property
    def compilations(self) -> int:
        return self.forward.compilations

    def _apply(self, params, input_ids, attention_mask, token_type_ids, **kw):
        return self.model.apply(
            {"params": params},
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            **kw,
        )

    def _forward(self, params, **arrays):
        raise NotImplementedError

    # -- input checks --------------------------------------------------------------------
    def _check_text(self, text, what: str = "text") -> str:
        if not isinstance(text, str):
            raise PipelineError(f"{self.task}: {what} must be a string, got {type(text).__name__}.")
        if not text.strip():
            raise PipelineError(f"{self.task}: {what} is empty.")
        return text

    def _check_vocabulary(self, enc, text: str, what: str = "text") -> None:
        """Rejects text the vocabulary cannot read (e.g. another script): more than
        `max_unknown_fraction` of its tokens are the unknown token. Byte-level BPE has no
        unknown token, so this never fires for RoBERTa."""
        ids = [i for i, s in zip(enc.ids, enc.special_tokens_mask) if not s]
        unk = sum(i == self.tokenizer.unk_id for i in ids)
        if ids and unk / len(ids) > self.max_unknown_fraction:
            raise PipelineError(
                f"{self.task}: {unk} of the {len(ids)} tokens of the {what} are unknown to the "
                f"model's vocabulary ({text[:60]!r}); it is probably in a language or script "
                "the model was not trained on."
            )

    def _encode(self, texts: Sequence, what: str = "text"):
        encs = self._rust.encode_batch(list(texts))
        for t, e in zip(texts, encs):
            self._check_vocabulary(e, t if isinstance(t, str) else " / ".join(t), what)
        return encs

    @staticmethod
    def _rows(encs):
        return [{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encs]


def _as_list(x) -> tuple[list, bool]:
    return (list(x), False) if isinstance(x, (list, tuple)) else ([x], True)


def _softmax(x, axis=-1):
    x = np.asarray(x, np.float64 if x.dtype == np.float64 else np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- fill-mask ---------------------------------------------------------------------------
class FillMask(_EncoderPipeline):
    """Top-k fillers for every mask token of each text.

    `__call__(text, top_k=5)` -> for one mask: a list of `{"score", "token", "token_str",
    "sequence"}`; for several masks: one such list per mask (in order). A list of texts gives
    a list of those. As in `transformers`, each mask is predicted independently and the
    sequence of a multi-mask text keeps the special tokens and the other masks.
    """

    task = "fill-mask"
    heads = ("mlm", "pretraining")

    def _forward(self, params, input_ids, attention_mask, token_type_ids, mask_positions):
        out = self._apply(
            params, input_ids, attention_mask, token_type_ids, mlm_positions=mask_positions
        )
        return jax.nn.softmax(out.mlm_logits.astype(jnp.float32), axis=-1)  # [b, n, vocab]

    def __call__(self, texts, top_k: int = 5):
        texts, single = _as_list(texts)
        if top_k < 1:
            raise PipelineError("fill-mask: top_k must be >= 1.")
        if not texts:
            return []
        mask_tok = self.tokenizer.specials.mask
        for t in texts:
            self._check_text(t)
            if mask_tok not in t:
                raise PipelineError(
                    f"fill-mask: no mask token {mask_tok!r} in {t[:80]!r}; "
                    f"write {mask_tok} where a word should be predicted."
                )
        encs = self._encode(texts)
        positions = []
        for t, e in zip(texts, encs):
            pos = [i for i, x in enumerate(e.ids) if x == self.tokenizer.mask_id]
            if not pos:
                raise PipelineError(
                    f"fill-mask: the mask token of {t[:80]!r} fell beyond the "
                    f"model's {self.max_length} tokens."
                )
            positions.append(pos)
        n_slots = 1 << (max(map(len, positions)) - 1).bit_length()  # few distinct shapes

        def extra(idx, batch, length):
            pos = np.zeros((batch, n_slots), np.int32)
            for j, i in enumerate(idx):
                pos[j, : len(positions[i])] = positions[i]
            return {"mask_positions": pos}

        probs = self.forward(self._rows(encs), extra=extra)
        out = [
            self._post(np.asarray(e.ids), pos, p[: len(pos)], top_k)
            for e, pos, p in zip(encs, positions, probs)
        ]
        return out[0] if single else out

    def _post(self, ids, positions, probs, top_k):
        k = min(top_k, probs.shape[-1])
        single_mask = len(positions) == 1
        result = []
        for pos, p in zip(positions, probs):
            top = np.argsort(-p, kind="stable")[:k]
            row = []
            for t in top:
                filled = ids.copy()
                filled[pos] = t
                filled = filled[filled != self.tokenizer.pad_id]
                row.append(
                    {
                        "score": float(p[t]),
                        "token": int(t),
                        "token_str": self.tokenizer.decode([int(t)], skip_special_tokens=False),
                        "sequence": self.tokenizer.decode(filled, skip_special_tokens=single_mask),
                    }
                )
            result.append(row)
        return result[0] if single_mask else result


# ---- classification ----------------------------------------------------------------------
class Classify(_EncoderPipeline):
    """Sequence classification of texts or (text, pair) tuples.

    `__call__(texts, top_k=1, function=None)`: per text `{"label", "score"}` (top_k=1) or the
    top_k labels sorted by score (top_k=None: all). function: "softmax",
    "sigmoid" or "none"; by default as `transformers`: none for regression, sigmoid for one
    label or multi-label, softmax otherwise.
    """

    task = "classify"
    heads = ("sequence_classification",)

    def _forward(self, params, input_ids, attention_mask, token_type_ids):
        return self._apply(params, input_ids, attention_mask, token_type_ids).logits

    def _function(self, function):
        if function is not None:
            return function
        pt = self.loaded.meta.get("problem_type")
        if pt == "regression":
            return "none"
        if pt == "multi_label_classification" or self.cfg.num_labels == 1:
            return "sigmoid"
        return "softmax"

    def __call__(self, texts, top_k: int | None = 1, function: str | None = None):
        items, single = (
            ([texts], True)
            if isinstance(texts, (str, dict))
            or (
                isinstance(texts, tuple)
                and len(texts) == 2
                and all(isinstance(t, str) for t in texts)
            )
            else (list(texts), False)
        )
        inputs = []
        for x in items:
            if isinstance(x, dict):
                x = (x["text"], x["text_pair"]) if x.get("text_pair") is not None else x["text"]
            if isinstance(x, (tuple, list)):
                if len(x) != 2:
                    raise PipelineError("classify: a pair input is (text, text_pair).")
                x = (self._check_text(x[0]), self._check_text(x[1], "text_pair"))
            else:
                self._check_text(x)
            inputs.append(x)
        if not inputs:
            return []
        logits = np.asarray(self.forward(self._rows(self._encode(inputs))), np.float32)
        fn = self._function(function)
        if fn == "softmax":
            scores = _softmax(logits)
        elif fn == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-logits))
        elif fn == "none":
            scores = logits
        else:
            raise PipelineError(f"classify: function={fn!r}; use softmax, sigmoid or none.")
        out = []
        for s in scores:
            if top_k == 1:
                out.append({"label": self.labels[int(s.argmax())], "score": float(s.max())})
                continue
            ranked = [{"label": self.labels[i], "score": float(v)} for i, v in enumerate(s)]
            out.append(sorted(ranked, key=lambda d: d["score"], reverse=True)[:top_k])
        return out[0] if single else out


# ---- extractive question answering -------------------------------------------------------
class Answer(_EncoderPipeline):
    """Extractive QA over contexts of any length.

    `__call__(question, context, top_k=1, max_answer_len=15, handle_impossible_answer=False,
    doc_stride=None, max_seq_len=None)` -> `{"score", "start", "end", "answer"}` (or top_k of
    them). The context is cut into windows of `max_seq_len` tokens (question included)
    overlapping by `doc_stride` tokens (defaults min(384, model max) and min(max_seq_len // 2,
    128)); start / end probabilities are softmaxes over each window's context tokens and
    [CLS]; a span's score is p_start * p_end, spans longer than `max_answer_len` tokens are
    excluded and answers are widened to whole words, as in the `transformers` pipeline.
    handle_impossible_answer (SQuAD 2.0 models): the empty answer, scored by the smallest
    p_start[CLS] * p_end[CLS] over windows, is returned when it beats every span.
    """

    task = "answer"
    heads = ("question_answering",)

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        # Full windows are 384 tokens by default: a bucket of their own, not padding to 512.
        self.forward.lengths = sorted(set(self.forward.lengths) | {min(384, self.max_length)})

    def _forward(self, params, input_ids, attention_mask, token_type_ids):
        out = self._apply(params, input_ids, attention_mask, token_type_ids)
        return out.start_logits.astype(jnp.float32), out.end_logits.astype(jnp.float32)

    def _windows(self, question: str, context: str, max_seq_len: int, doc_stride: int):
        self._rust.enable_truncation(max_seq_len, stride=doc_stride, strategy="only_second")
        try:
            enc = self._rust.encode(question, context)
        except Exception as e:  # the Rust error says "Truncation error: ..."
            raise PipelineError(
                f"answer: the question is too long for windows of {max_seq_len} tokens with "
                f"a stride of {doc_stride} ({e}); shorten the question or lower doc_stride."
            ) from None
        finally:
            self._rust.enable_truncation(self.max_length, strategy="longest_first")
        return [enc] + list(enc.overflowing)

    def __call__(
        self,
        question,
        context,
        top_k: int = 1,
        max_answer_len: int = 15,
        handle_impossible_answer: bool = False,
        doc_stride: int | None = None,
        max_seq_len: int | None = None,
    ):
        questions, single = _as_list(question)
        contexts, _ = _as_list(context)
        if len(contexts) == 1 and len(questions) > 1:
            contexts = contexts * len(questions)
        if len(contexts) != len(questions):
            raise PipelineError(f"answer: {len(questions)} questions but {len(contexts)} contexts.")
        if top_k < 1 or max_answer_len < 1:
            raise PipelineError("answer: top_k and max_answer_len must be >= 1.")
        if not questions:
            return []
        max_seq_len = min(max_seq_len or 384, self.max_length)
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        windows, owner = [], []
        for k, (q, c) in enumerate(zip(questions, contexts)):
            self._check_text(q, "question")
            self._check_text(c, "context")
            wins = self._windows(q, c, max_seq_len, doc_stride)
            self._check_vocabulary(_Joined(wins, 0), q, "question")
            self._check_vocabulary(_Joined(wins, 1), c, "context")
            windows += wins
            owner += [k] * len(wins)
        logits = self.forward(self._rows(windows))
        answers = [[] for _ in questions]
        null = [np.inf] * len(questions)
        for k, enc, (start, end) in zip(owner, windows, logits):
            spans, null_score = self._spans(enc, start, end, top_k, max_answer_len)
            null[k] = min(null[k], null_score)
            for s, e, score in spans:
                a, b = self._chars(enc, s, e)
                answers[k].append(
                    {"score": score, "start": a, "end": b, "answer": contexts[k][a:b]}
                )
        out = []
        for k, ans in enumerate(answers):
            if handle_impossible_answer:
                ans.append({"score": null[k], "start": 0, "end": 0, "answer": ""})
            ans = sorted(ans, key=lambda d: d["score"], reverse=True)[:top_k]
            out.append(ans[0] if top_k == 1 else ans)
        return out[0] if single else out

    def _spans(self, enc, start, end, top_k, max_answer_len):
        """Top spans of one window as (start token, end token, p_start * p_end), and the
        window's null score p_start[0] * p_end[0]."""
        n = len(enc.ids)
        start, end = np.asarray(start[:n], np.float32), np.asarray(end[:n], np.float32)
        allowed = np.array([s == 1 for s in enc.sequence_ids])
        allowed |= np.asarray(enc.ids) == self.tokenizer.cls_id  # [CLS] carries "no answer"
        # -10000 (not -inf) for excluded tokens, exactly as transformers does.
        p_start = _softmax(np.where(allowed, start, -10000.0))
        p_end = _softmax(np.where(allowed, end, -10000.0))
        null_score = float(p_start[0] * p_end[0])
        p_start[0] = p_end[0] = 0.0
        scores = np.tril(np.triu(np.outer(p_start, p_end)), max_answer_len - 1)
        context = np.array([s == 1 for s in enc.sequence_ids])
        scores = np.where(context[:, None] & context[None, :], scores, -1.0)
        flat = -scores.ravel()
        k = min(top_k, flat.size)
        top = np.argpartition(flat, k - 1)[:k]
        flat = top[np.argsort(flat[top], kind="stable")]
        s_idx, e_idx = np.unravel_index(flat, scores.shape)
        return [
            (int(s), int(e), float(scores[s, e])) for s, e in zip(s_idx, e_idx) if scores[s, e] >= 0
        ], null_score

    @staticmethod
    def _chars(enc, s, e):
        """Character span of tokens s..e, widened to whole words (align_to_words)."""
        try:
            a = enc.word_to_chars(enc.token_to_word(s), 1)[0]
            b = enc.word_to_chars(enc.token_to_word(e), 1)[1]
        except Exception:
            a, b = enc.offsets[s][0], enc.offsets[e][1]
        return int(a), int(b)


class _Joined:
    """The ids of one sequence (0 question, 1 context) across windows, shaped like an
    Encoding for `_check_vocabulary`."""

    def __init__(self, windows, seq: int):
        ids = [
            i
            for w in windows[: 1 if seq == 0 else None]
            for i, s in zip(w.ids, w.sequence_ids)
            if s == seq
        ]
        self.ids, self.special_tokens_mask = ids, [0] * len(ids)


# ---- token classification ----------------------------------------------------------------
AGGREGATIONS = ("none", "simple", "first", "average", "max")


class Tag(_EncoderPipeline):
    """Token classification (NER): entities with labels, scores and character offsets.

    `__call__(texts, aggregation="first", ignore_labels=("O",))` -> per text a list of
    `{"entity_group" (or "entity" for aggregation="none"), "score", "word", "start", "end"}`.
    Aggregations are those of the `transformers` pipeline: none (each token), simple (merge
    adjacent tokens with the same tag), first / average / max (first make each word one tag
    from its pieces' first / mean / most confident scores, then merge as simple). Word pieces
    are recognised as in `transformers`: a `##` piece (WordPiece) or, for other tokenizers, a
    token not preceded by a space. `word` is the original text between start and end.
    Texts longer than the model's maximum length are truncated.
    """

    task = "tag"
    heads = ("token_classification",)

    def _forward(self, params, input_ids, attention_mask, token_type_ids):
        out = self._apply(params, input_ids, attention_mask, token_type_ids)
        return out.logits.astype(jnp.float32)

    def __call__(self, texts, aggregation: str = "first", ignore_labels=("O",)):
        if aggregation not in AGGREGATIONS:
            raise PipelineError(
                f"tag: aggregation={aggregation!r}; use one of {list(AGGREGATIONS)}."
            )
        texts, single = _as_list(texts)
        for t in texts:
            self._check_text(t)
        if not texts:
            return []
        encs = self._encode(texts)
        logits = self.forward(self._rows(encs))
        out = []
        for text, enc, lg in zip(texts, encs, logits):
            scores = _softmax(np.asarray(lg[: len(enc.ids)], np.float32))
            entities = self._aggregate(self._pre_entities(text, enc, scores), aggregation)
            key = "entity" if aggregation == "none" else "entity_group"
            out.append(
                [
                    {**e, "word": text[e["start"] : e["end"]]}
                    for e in entities
                    if e[key] not in ignore_labels
                ]
            )
        return out[0] if single else out

    def _pre_entities(self, text, enc, scores):
        wordpiece = self.tokenizer.family == "bert"
        pre = []
        for i, (tid, special) in enumerate(zip(enc.ids, enc.special_tokens_mask)):
            if special:
                continue
            a, b = enc.offsets[i]
            if tid == self.tokenizer.unk_id:
                sub = False
            elif wordpiece:  # "##ing" is longer than the "ing" it covers
                sub = len(self.tokenizer.id_to_token(tid)) != b - a
            else:
                sub = a > 0 and " " not in text[a - 1 : a + 1]
            pre.append({"scores": scores[i], "start": a, "end": b, "index": i, "is_subword": sub})
        return pre

    def _aggregate(self, pre, aggregation):
        if aggregation in ("none", "simple"):
            ents = [
                {
                    "entity": self.labels[int(p["scores"].argmax())],
                    "score": float(p["scores"].max()),
                    "index": p["index"],
                    "start": p["start"],
                    "end": p["end"],
                }
                for p in pre
            ]
            if aggregation == "none":
                return ents
            return self._group(ents)
        words, group = [], []
        for p in pre:
            if group and not p["is_subword"]:
                words.append(self._word(group, aggregation))
                group = []
            group.append(p)
        if group:
            words.append(self._word(group, aggregation))
        return self._group(words)

    def _word(self, pieces, aggregation):
        if aggregation == "first":
            s = pieces[0]["scores"]
        elif aggregation == "max":
            s = max(pieces, key=lambda p: p["scores"].max())["scores"]
        else:
            s = np.nanmean(np.stack([p["scores"] for p in pieces]), axis=0)
        i = int(s.argmax())
        return {
            "entity": self.labels[i],
            "score": float(s[i]),
            "start": pieces[0]["start"],
            "end": pieces[-1]["end"],
        }

    @staticmethod
    def _tag(name):
        if name.startswith(("B-", "I-")):
            return name[0], name[2:]
        return "I", name

    def _group(self, ents):
        groups, cur = [], []
        for e in ents:
            if cur:
                bi, tag = self._tag(e["entity"])
                if not (tag == self._tag(cur[-1]["entity"])[1] and bi != "B"):
                    groups.append(cur)
                    cur = []
            cur.append(e)
        if cur:
            groups.append(cur)
        return [
            {
                "entity_group": g[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([e["score"] for e in g])),
                "start": g[0]["start"],
                "end": g[-1]["end"],
            }
            for g in groups
        ]


# ---- embeddings, similarity, extractive summaries ----------------------------------------
class SentenceEmbed(_EncoderPipeline):
    """Sentence vectors from any encoder checkpoint (the head is ignored).

    `__call__(texts, pooling=None, normalize=True)` -> float32 `[n, hidden]` (one text:
    `[hidden]`). pooling: "mean" (default, or what a sentence-transformers directory's
    `1_Pooling` says), "cls" or "max"; vectors are L2-normalised unless normalize=False.
    """

    task = "embed"
    heads = None

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        self.pooling = self.loaded.meta.get("pooling", "mean")
        self._by_pooling = {}

    def _forward(self, params, input_ids, attention_mask, token_type_ids):
        return self._apply(params, input_ids, attention_mask, token_type_ids).last_hidden_state

    def _fn(self, pooling):
        if pooling not in ("mean", "cls", "max"):
            raise PipelineError(f"embed: pooling={pooling!r}; use 'mean', 'cls' or 'max'.")
        if pooling not in self._by_pooling:

            def fn(params, input_ids, attention_mask, token_type_ids):
                h = self._forward(params, input_ids, attention_mask, token_type_ids)
                return heads_lib.pool(h.astype(jnp.float32), attention_mask, pooling)

            self._by_pooling[pooling] = BucketedFn(
                fn,
                self.loaded.params,
                self.max_length,
                self.forward.max_batch,
                pad_values={"input_ids": self.tokenizer.pad_id},
            )
        return self._by_pooling[pooling]

    @property
    def compilations(self) -> int:
        return sum(f.compilations for f in self._by_pooling.values())

    def __call__(self, texts, pooling: str | None = None, normalize: bool = True):
        texts, single = _as_list(texts)
        fn = self._fn(pooling or self.pooling)
        if not texts:
            return np.zeros((0, self.cfg.hidden_size), np.float32)
        for t in texts:
            self._check_text(t)
        vecs = np.stack(fn(self._rows(self._encode(texts)))).astype(np.float32)
        if normalize:
            vecs /= np.maximum(np.linalg.norm(vecs, axis=-1, keepdims=True), 1e-12)
        return vecs[0] if single else vecs

    def similar(
        self,
        query: str,
        texts: Sequence[str],
        top_k: int | None = None,
        pooling: str | None = None,
    ) -> list[dict]:
        """`texts` ranked by cosine similarity to `query`: `{"index", "text", "score"}`
        ([] when there are no texts)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        self._check_text(query, "query")
        if not texts:
            return []
        vecs = self(list([query]) + texts, pooling=pooling)
        scores = vecs[1:] @ vecs[0]
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"index": int(i), "text": texts[i], "score": float(scores[i])} for i in order]

    def summarize(self, text: str, n_sentences: int = 3, pooling: str | None = None) -> dict:
        """Extractive summary: the `n_sentences` sentences whose embeddings are closest to the
        centroid of all sentence embeddings, in document order. Sentences are split by
        `jaxformer.data.split_sentences`, for which a line break always ends a sentence.

        Returns `{"summary", "sentences", "indices", "scores"}` (scores: cosine to the
        centroid of each kept sentence).
        """
        if not isinstance(text, str) or not text.strip():
            raise PipelineError("summarize: the text is empty.")
        if n_sentences < 1:
            raise PipelineError("summarize: n_sentences must be >= 1.")
        sents = split_sentences(text)
        vecs = self(sents, pooling=pooling) if len(sents) > 1 else self([sents[0]], pooling=pooling)
        centroid = vecs.mean(0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        sims = vecs @ centroid
        keep = sorted(np.argsort(-sims, kind="stable")[:n_sentences].tolist())
        chosen = [sents[i] for i in keep]
        return {
            "summary": " ".join(chosen),
            "sentences": chosen,
            "indices": keep,
            "scores": [float(sims[i]) for i in keep],
        }


# ---- translation -------------------------------------------------------------------------
class Translate:
    """Translation with an encoder-decoder checkpoint (jaxformer Transformer or HF Marian).

    `__call__(texts, beam=4, max_length=64, **generate_kw)` -> translated string(s). Sources
    end with the source tokenizer's separator as EOS (as `data.finetuning.encode_translation`
    builds them), are sorted by length, batched and padded to length / batch buckets, then
    decoded by `jaxformer.inference.decoding.generate` (which compiles per bucket shape);
    the output stops at the model's EOS.
    """

    task = "translate"

    def __init__(self, model: str | LoadedModel, *, batch_size: int = 16):
        self.loaded = model if isinstance(model, LoadedModel) else load_model(os.fspath(model))
        _check_kind(self.loaded, self.task, None)
        self.model, self.cfg = self.loaded.model, self.loaded.config
        self.source, self.target = self.loaded.tokenizer, self.loaded.target_tokenizer
        self.max_length = self.cfg.max_length
        self.batch_size = batch_size
        self.lengths = length_buckets(self.max_length)
        self.batches = batch_buckets(batch_size)

    def __call__(self, texts, beam: int = 4, max_length: int = 64, **generate_kw):
        from jaxformer.inference.decoding import generate

        texts, single = _as_list(texts)
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise PipelineError("translate: empty text.")
        if not texts:
            return []
        rows = [
            ids[: self.max_length - 1] + [self.source.sep_id]
            for ids in self.source.tokenize_ids(texts)
        ]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out: list = [None] * len(rows)
        eos = self.cfg.eos_token_id
        for c in range(0, len(order), self.batch_size):
            idx = order[c : c + self.batch_size]
            length = bucket_for(max(len(rows[i]) for i in idx), self.lengths)
            batch = bucket_for(len(idx), self.batches)
            ids = np.full((batch, length), self.source.pad_id, np.int32)
            mask = np.zeros((batch, length), np.int32)
            for j, i in enumerate(idx):
                ids[j, : len(rows[i])], mask[j, : len(rows[i])] = rows[i], 1
            mask[len(idx) :, 0] = 1
            gen = generate(
                self.model,
                self.loaded.params,
                ids,
                mask,
                max_length=min(max_length, self.cfg.max_length),
                num_beams=beam,
                **generate_kw,
            )
            seqs = np.asarray(jax.device_get(gen.sequences))
            for j, i in enumerate(idx):
                toks = seqs[j].tolist()
                toks = toks[: toks.index(eos)] if eos in toks else toks
                out[i] = self.target.decode(toks, skip_special_tokens=True)
        return out[0] if single else out


# ---- factory -----------------------------------------------------------------------------
PIPELINES = {
    "fill-mask": FillMask,
    "classify": Classify,
    "text-classification": Classify,
    "answer": Answer,
    "question-answering": Answer,
    "tag": Tag,
    "ner": Tag,
    "token-classification": Tag,
    "embed": SentenceEmbed,
    "similar": SentenceEmbed,
    "summarize": SentenceEmbed,
    "translate": Translate,
    "translation": Translate,
}


def pipeline(task: str, model: str | LoadedModel, **kw):
    """`pipeline("fill-mask", "DIR")` -> the task's pipeline object (see `PIPELINES`)."""
    if task not in PIPELINES:
        raise PipelineError(f"unknown task {task!r}; known: {sorted(PIPELINES)}.")
    return PIPELINES[task](model, **kw)


def __getattr__(name):
    # `Embed` was this pipeline's name until it collided with `jaxformer.layers.Embed`.
    if name == "Embed":
        warnings.warn(
            "jaxformer.inference.pipelines.Embed is deprecated; use SentenceEmbed "
            "(the same class).",
            DeprecationWarning,
            stacklevel=2,
        )
        return SentenceEmbed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
