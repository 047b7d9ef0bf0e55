"""The encoder-decoder Transformer as a training-loop task (`config.task = "seq2seq"`).

Data: `data.source` = "numbers" (the generated digits -> words corpus, word-level vocab:
learnable on CPU) or "tfds:NAME" (e.g. tfds:wmt14_translate/de-en, BPE vocab of
`model.vocab_size`). Loss: label-smoothed cross-entropy per real target token, normalised by
the whole batch's token count so gradient accumulation is exact.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from jaxformer.objectives import losses
from jaxformer.training.tasks import Task


class ArrayIterator:
    """Batches of rows from numpy arrays, reshuffled each epoch; batch k is a pure function
    of (seed, k), so the position is one integer."""

    def __init__(self, arrays: dict, batch_size: int, seed: int, pi: int = 0, pc: int = 1):
        self.arrays, self.b, self.seed, self.pi, self.pc = arrays, batch_size, seed, pi, pc
        self.n = len(next(iter(arrays.values())))
        self.k = 0

    def _rows(self, k):
        rows = []
        for r in range(k * self.b, (k + 1) * self.b):
            epoch, i = divmod(r, self.n)
            rows.append(np.random.default_rng([self.seed, epoch]).permutation(self.n)[i])
        per = self.b // self.pc
        return np.asarray(rows[self.pi * per : (self.pi + 1) * per])

    def __iter__(self):
        return self

    def __next__(self):
        rows = self._rows(self.k)
        self.k += 1
        return {k: v[rows] for k, v in self.arrays.items()}

    def get_state(self):
        return {"batch": self.k}

    def set_state(self, state):
        self.k = int(state["batch"])


class Seq2SeqTask(Task):
    def __init__(self, config, workdir):
        super().__init__(config, workdir)
        from jaxformer.data import translation_task as tt
        from jaxformer.models.seq2seq_configs import TransformerConfig
        from jaxformer.models.transformer import Transformer

        d = config.data
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
        else:
            raise ValueError(
                f"unknown data.source {d.source!r} for seq2seq; use 'numbers' or 'tfds:NAME'."
            )
        L = d.seq_len
        self.train_arrays = tt.encode_pairs(tok, train_pairs, L, L)
        self.eval_arrays = tt.encode_pairs(tok, eval_pairs, L, L)
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
        return {"tokens": jnp.maximum(batch["labels_mask"].astype(jnp.float32).sum(), 1.0)}

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        from jaxformer.objectives.seq2seq import shift_right

        c = self.model_cfg
        labels = jnp.maximum(batch["labels"], 0)
        dec_in = shift_right(batch["labels"], c.decoder_start_token_id, c.pad_token_id)
        out = self.model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            dec_in,
            deterministic=deterministic,
            rngs={"dropout": rng},
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
        return ArrayIterator(self.train_arrays, batch_size, self.config.data.seed, pi, pc)

    def eval_batches(self, batch_size, pi, pc):
        it = ArrayIterator(self.eval_arrays, batch_size, 1234, pi, pc)
        return [next(it) for _ in range(self.config.log.eval_batches)]

    def tokens_per_example(self):
        return 2 * self.seq_len

    def flops_per_token(self, params):
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        return 6.0 * n
