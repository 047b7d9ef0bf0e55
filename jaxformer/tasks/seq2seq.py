"""The encoder-decoder Transformer as a training-loop task (`config.task = "seq2seq"`).

Data: `data.source` = "numbers" (the generated digits -> words corpus, word-level vocab:
learnable on CPU), "tfds:NAME" (e.g. tfds:wmt14_translate/de-en, BPE vocab of
`model.vocab_size`) or "store:DIR" (a `jaxformer prepare --pairs` store, its last
`data.eval_fraction` held out). `jaxformer.data.pairs.PairFeed` feeds it, packed
(`data.pack`) or one pair a row; pairs over `data.seq_len` are dropped and counted
(`data_summary`, summary.json). Loss: label-smoothed cross-entropy per real target token,
normalised by the whole batch's token count so gradient accumulation is exact. Every eval
also decodes `decode.examples` held-out sources (greedy, or beam search with
`decode.num_beams`) and reports sacrebleu BLEU and exact match (`eval_bleu`,
`eval_exact_match`: a checkpoint can be kept by them). The run saves its tokenizer and
`model_config.json`, so `jaxformer translate --model WORKDIR` and `Translate(WORKDIR)` serve
it.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
import jax.numpy as jnp

from jaxformer.data import pairs as P
from jaxformer.objectives import losses
from jaxformer.training.loss_task import ArrayData
from jaxformer.training.task import Task

__all__ = ["Seq2SeqTask", "decode_config", "translation_scores"]


def decode_config(
    num_beams: int = 1, length_penalty: float = 0.6, examples: int = 256
) -> ml_collections.ConfigDict:
    """The config's `decode` section, read at each eval: `num_beams` (1 = greedy, k = beam
    search), `length_penalty` (beam search's GNMT alpha) and `examples` (held-out pairs
    decoded for BLEU and exact match)."""
    return ml_collections.ConfigDict(
        dict(num_beams=num_beams, length_penalty=length_penalty, examples=examples)
    )


def translation_scores(hypotheses, references) -> dict:
    """Corpus BLEU (sacrebleu, 0-100) and exact match (percent) of decoded strings."""
    import sacrebleu

    refs = list(references)
    bleu = sacrebleu.corpus_bleu(list(hypotheses), [refs]).score
    exact = 100.0 * float(np.mean([h == r for h, r in zip(hypotheses, refs)]))
    return {"bleu": float(bleu), "exact_match": exact}


class Seq2SeqTask(Task):
    def __init__(self, config, workdir):
        super().__init__(config, workdir)
        from jaxformer.data import translation_task as tt
        from jaxformer.models.seq2seq_configs import TransformerConfig
        from jaxformer.models.transformer import Transformer

        d = config.data
        L = d.seq_len
        if d.source == "numbers":
            corpus = tt.make_number_corpus(d.synthetic_examples, 256, seed=d.seed)
            train_pairs, eval_pairs = corpus["train"], corpus["test"]
            tok = tt.train_tokenizer([s for p in train_pairs for s in p])
        elif d.source.startswith("tfds:"):
            train_pairs = tt.tfds_translation_pairs(d.source[5:], "train")
            eval_pairs = tt.tfds_translation_pairs(d.source[5:], "validation")
            tok = tt.train_tokenizer(
                [s for p in train_pairs for s in p], kind="bpe", vocab_size=config.model.vocab_size
            )
        elif d.source.startswith("store:"):
            train_pairs, n_train, eval_pairs, tok = _store_pairs(d.source[6:], d.eval_fraction)
        else:
            raise ValueError(
                f"unknown data.source {d.source!r} for seq2seq; use 'numbers', 'tfds:NAME' or "
                "'store:DIR' (a `jaxformer prepare --pairs` store)."
            )
        if isinstance(train_pairs, list):  # texts in memory: encode them once
            train_pairs = P.PairArrays(*(tok.encode(side) for side in zip(*train_pairs)))
            n_train = len(train_pairs)
        self.train_pairs = train_pairs
        lengths = [x[:n_train] for x in P.pair_lengths(train_pairs)]
        self.train_kept, stats = P.count_pairs(*lengths, L)
        self.eval_pairs, self.eval_arrays, eval_stats = _eval_set(tok, eval_pairs, L)
        # Pairs over the limit are skipped by the feed, never an error: the counts are the
        # run's record of what it did not train or evaluate on.
        self.data_stats = {
            "pairs": n_train,
            "kept": stats.kept,
            "dropped_too_long": stats.dropped_too_long,
            "dropped_empty": stats.dropped_empty,
            "eval_pairs": eval_stats.kept,
            "eval_dropped_too_long": eval_stats.dropped_too_long,
        }
        self.tokenizer = tok
        model = dict(config.model)
        if tok.vocab_size > model["vocab_size"]:
            raise ValueError(
                f"the tokenizer has {tok.vocab_size} ids but model.vocab_size="
                f"{model['vocab_size']}."
            )
        model.update(
            pad_token_id=tok.pad_id, eos_token_id=tok.eos_id, decoder_start_token_id=tok.pad_id
        )
        self.model_cfg = TransformerConfig.from_dict(model)
        self.model = Transformer(self.model_cfg)
        self.seq_len = L
        if jax.process_index() == 0:  # what the pipelines load a run's checkpoints with
            from jaxformer.tasks.finetune.weights import save_model_config

            tok.save(os.path.join(workdir, "tokenizer"))
            save_model_config(workdir, self.model_cfg)

    def init_inputs(self):
        z = jnp.zeros((1, self.seq_len), jnp.int32)
        return {"inputs": z, "attention_mask": jnp.ones_like(z), "decoder_input_ids": z}

    def init_params(self, rng):
        p, d = jax.random.split(rng)
        x = self.init_inputs()
        return self.model.init(
            {"params": p, "dropout": d}, x["inputs"], x["attention_mask"], x["decoder_input_ids"]
        )["params"]

    def normalizers(self, batch):
        return {"tokens": losses.weight_count(batch["labels_mask"])}

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        from jaxformer.objectives.seq2seq import shift_right

        c = self.model_cfg
        labels = jnp.maximum(batch["labels"], 0)
        dec_in = batch.get("decoder_input_ids")  # packed rows: the start token opens each pair
        if dec_in is None:
            dec_in = shift_right(batch["labels"], c.decoder_start_token_id, c.pad_token_id)
        packed = {k: batch[k] for k in ("segment_ids", "decoder_segment_ids") if k in batch}
        out = self.model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            dec_in,
            deterministic=deterministic,
            rngs={"dropout": rng},
            **packed,
        )
        loss, m = losses.weighted_cross_entropy(
            out.logits,
            labels,
            batch["labels_mask"],
            label_smoothing=self.config.data.label_smoothing,
            normalizer=norms["tokens"],
        )
        return loss, {"token_accuracy": m["accuracy"]}

    def train_iterator(self, batch_size, pi, pc):
        d, c = self.config.data, self.model_cfg
        return P.PairFeed(
            self.train_pairs,
            self.train_kept,
            batch_size,
            self.seq_len,
            pad_id=c.pad_token_id,
            start_id=c.decoder_start_token_id,
            eos_id=c.eos_token_id,
            pack=bool(d.pack),
            seed=d.seed,
            window=d.window,
            process_index=pi,
            process_count=pc,
        )

    def data_summary(self):
        return {"data": dict(self.data_stats)}

    def eval_batches(self, batch_size, pi, pc):
        it = ArrayData(self.eval_arrays, batch_size, 1234, pi, pc)
        return [next(it) for _ in range(self.config.log.eval_batches)]

    def decode(self, params, sources: dict, num_beams: int = 1, batch_size: int = 256):
        """Decoded strings of encoded sources (`input_ids`, `attention_mask` rows)."""
        from jaxformer.inference.decoding import generate

        out = []
        for i in range(0, len(sources["input_ids"]), batch_size):
            gen = generate(
                self.model,
                params,
                sources["input_ids"][i : i + batch_size],
                sources["attention_mask"][i : i + batch_size],
                max_length=self.seq_len,
                num_beams=num_beams,
                length_penalty_alpha=self.config.decode.length_penalty,
            )
            out += self.tokenizer.decode(np.asarray(jax.device_get(gen.sequences)))
        return out

    def eval_metrics(self, params):
        """BLEU and exact match of the first `decode.examples` held-out pairs, decoded with
        `decode.num_beams` beams (1: greedy)."""
        dec = self.config.decode
        n = min(len(self.eval_pairs), int(dec.examples))
        if n == 0:
            return {}
        sources = {k: self.eval_arrays[k][:n] for k in ("input_ids", "attention_mask")}
        hyps = self.decode(params, sources, num_beams=int(dec.num_beams))
        return translation_scores(hyps, [t for _, t in self.eval_pairs[:n]])

    def tokens_per_example(self):
        return 2 * self.seq_len

    def flops_per_token(self, params):
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        return 6.0 * n


def _store_pairs(path: str, eval_fraction: float):
    """(the store, its number of training pairs, held-out (source, target) texts, tokenizer)
    of a `PairStore`: its last `eval_fraction` pairs (at least one) are held out; training
    reads the others lazily."""
    from jaxformer.data import translation_task as tt
    from jaxformer.data.store import PairStore

    store = PairStore(path)
    hf = store.tokenizer().hf
    if hf.token_to_id(tt.PAD) is None or hf.token_to_id(tt.EOS) is None:
        raise ValueError(
            f"the store {path} has a tokenizer without {tt.PAD} and {tt.EOS}; prepare it with "
            "--tokenizer-family roberta, or --tokenizer RUN/tokenizer of a seq2seq run."
        )
    tok = tt.Seq2SeqTokenizer(hf)
    n = len(store)
    held = max(1, int(round(n * eval_fraction)))
    if held >= n:
        raise ValueError(f"the store {path} has {n} pairs: too few to hold {held} out.")
    held_ids = [store[i] for i in range(n - held, n)]
    texts = [(tok.decode(s.tolist()).strip(), tok.decode(t.tolist()).strip()) for s, t in held_ids]
    return store, n - held, texts, tok


def _eval_set(tok, texts, length: int):
    """(the held-out texts that fit, their padded arrays, counts): pairs over the limit are
    dropped and counted, as in training."""
    ids = list(zip(*(tok.encode(side) for side in zip(*texts))))
    kept, stats = P.count_pairs(*P.pair_lengths(ids), length)
    if not len(kept):
        raise ValueError(f"no held-out pair fits data.seq_len={length}: raise it.")
    arrays = next(
        P.bucket_batches(
            [ids[i] for i in kept],
            [length],
            pad_id=tok.pad_id,
            batch_size=len(kept),
            eos_id=tok.eos_id,
        )
    )
    return [texts[i] for i in kept], arrays, stats
