"""BERT-family pretraining (`config.task = "pretrain"` or "mlm"): MLM, plus NSP/SOP.

Also the pieces the other MLM tasks reuse: the masking and packing checks, the synthetic
sequences for tests, and the fill-mask report printed at the end of a run.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.models import build_encoder
from jaxformer.objectives import pretraining as objectives
from jaxformer.objectives.losses import row_count, weight_count
from jaxformer.training.task import Task

__all__ = ["PretrainTask", "check_masking", "check_pack", "fill_mask_report", "synthetic_instances"]


class _IdTokenizer:
    """Just enough of a tokenizer for synthetic data: specials 0..4 like ours (pad unk cls sep
    mask), every other id a whole word."""

    pad_id, unk_id, cls_id, sep_id, mask_id = 0, 1, 2, 3, 4

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.special_ids = np.arange(5, dtype=np.int32)

    def word_starts(self, ids):
        return np.ones(np.shape(ids), bool)


MASKING = ("static", "dynamic", "device")


def check_masking(config) -> None:
    """A clear error for an unknown `data.masking`."""
    m = config.data.masking
    if m not in MASKING:
        raise ValueError(
            f"unknown data.masking {m!r}; use 'static' (BERT: drawn once on the host), "
            "'dynamic' (RoBERTa: drawn on the host each read) or 'device' (drawn in the step)."
        )


def check_pack(config, objective: str) -> None:
    """A clear error for `data.pack=true` with what packed rows cannot train."""
    d = config.data
    if not d.pack:
        return
    if objective != "none":
        raise ValueError(
            f"data.pack=true supports objective='none' only; objective={objective!r} needs a "
            "per-segment pair head: set --config.data.pack=false or --config.data.objective=none."
        )
    if d.source == "synthetic":
        raise ValueError(
            "data.pack=true needs a store, default_corpus or text: source; data.source="
            "'synthetic' rows are not packed: set --config.data.pack=false."
        )


def synthetic_instances(n: int, seq_len: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """Learnable token sequences: [CLS] a, a+d, a+2d, ... (mod the non-special vocab) [SEP];
    a masked token is predictable from its neighbours."""
    rng = np.random.default_rng(seed)
    k = vocab_size - 5
    out = []
    for _ in range(n):
        a, d = rng.integers(0, k), rng.integers(1, 4)
        body = (a + d * np.arange(seq_len - 2)) % k + 5
        ids = np.concatenate([[2], body, [3]]).astype(np.int32)
        out.append({"input_ids": ids, "token_type_ids": np.zeros(seq_len, np.int32)})
    return out


class PretrainTask(Task):
    """BERT-family pretraining: MLM, plus NSP/SOP when `data.objective` is nsp/sop.

    Data: `data.source` = "store:DIR" (a store from `jaxformer prepare`), "default_corpus"
    (the embedded corpus) or "text:GLOB" (local files; both prepared into a cached store on
    first use, with a tokenizer of `model.vocab_size` trained on them), or "synthetic"
    (generated sequences, no tokenizer: for tests). Examples are built lazily from the store
    (`jaxformer.data.lazy`) with static, dynamic or device masking and fed by
    `jaxformer.data.feeding.DataIterator`. With `data.masking="device"` the host ships
    unmasked ids (and `word_starts` for whole-word masking) and `device_batch` draws the
    masks in the step (`jaxformer.objectives.masking`); eval batches stay masked on the host.
    """

    def __init__(self, config, workdir: str):
        super().__init__(config, workdir)
        d = config.data
        check_masking(config)
        check_pack(config, d.objective)
        self.seq_len = d.seq_len
        self.objective = d.objective
        model_cfg = dict(config.model)
        head = "pretraining" if self.objective in ("nsp", "sop") else "mlm"
        if model_cfg.get("head") not in (None, head):
            raise ValueError(
                f"data.objective={self.objective!r} needs model.head={head!r}, "
                f"got {model_cfg.get('head')!r}."
            )
        model_cfg["head"] = head
        self.model_cfg, self.model = build_encoder(model_cfg)
        self._tokenizer = None
        self._instances = None

    # -- data ----------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._load_data()
        return self._tokenizer

    def _pretraining_config(self):
        from jaxformer.data import MaskingConfig, PretrainingConfig

        d = self.config.data
        return PretrainingConfig(
            max_seq_len=d.seq_len,
            objective=d.objective,
            short_seq_prob=d.short_seq_prob,
            dupe_factor=d.dupe_factor,
            masking=MaskingConfig(
                mlm_probability=d.mlm_probability,
                max_predictions=d.max_predictions,
                whole_word=d.whole_word,
            ),
        )

    def _load_data(self):
        """Opens the store (preparing `default_corpus` / `text:GLOB` into one on first use)
        and holds the last `eval_fraction` of its documents out for eval. The tokenizer is
        the store's; a tokenizer already in the workdir (a resumed or continued run) must be
        the one the store was prepared with."""
        from jaxformer.data.store import Store, store_for_source, tokenizer_sha

        d, v = self.config.data, self.model_cfg.vocab_size
        if d.source == "synthetic":
            if self.objective != "none":
                raise ValueError("data.source='synthetic' supports objective='none' only.")
            self._tokenizer = _IdTokenizer(v)
            self._instances = synthetic_instances(d.synthetic_examples, d.seq_len, v, seed=1)
            self._eval_instances = synthetic_instances(64, d.seq_len, v, seed=2)
            return
        tok_dir = os.path.join(self.workdir, "tokenizer")
        given = tok_dir if os.path.exists(os.path.join(tok_dir, "tokenizer.json")) else None
        path = store_for_source(d.source, family=d.tokenizer_family, vocab_size=v, tokenizer=given)
        store = Store(path)
        store_tok = os.path.join(path, "tokenizer")
        if given is not None and tokenizer_sha(given) != tokenizer_sha(store_tok):
            raise ValueError(
                f"the store {path} was prepared with another tokenizer than the workdir's "
                f"{given}: prepare the store with --tokenizer {given}, or use a new workdir."
            )
        tok = store.tokenizer()
        if tok.vocab_size > v:
            raise ValueError(
                f"the store {path} has a tokenizer of {tok.vocab_size} ids but "
                f"model.vocab_size={v}: set --config.model.vocab_size={tok.vocab_size} or "
                "prepare the store with a smaller --vocab-size."
            )
        if given is None and jax.process_index() == 0:
            tok.save(tok_dir)  # what fine-tuning and the exports read
        n = store.num_documents
        n_eval = max(2, int(n * d.eval_fraction))  # NSP draws from another held-out document
        if n - n_eval < 2:
            raise ValueError(
                f"the store {path} holds {n} documents: too few to hold {n_eval} out for eval "
                "and train on at least 2."
            )
        self._store, self._tokenizer = store, tok
        self._train_docs, self._eval_docs = (0, n - n_eval), (n - n_eval, n)

    def _examples(self, documents, masking, seed):
        from jaxformer.data.lazy import StoreExamples

        return StoreExamples(
            self._store,
            self.tokenizer,
            self._pretraining_config(),
            documents=documents,
            seed=seed,
            masking=masking,
            pack=bool(self.config.data.pack),
        )

    def _synthetic(self, instances, masking, seed, epochs, batch_size, pi, pc):
        import grain

        from jaxformer.data import batch_dataset, pad_example, pretraining_dataset
        from jaxformer.data import shard_for_process

        if masking == "device":  # unmasked rows: the train step masks
            ds = grain.MapDataset.source(instances).seed(seed).shuffle()
            ds = ds.map(lambda x: pad_example(x, self.seq_len, self.tokenizer.pad_id))
            ds = ds.repeat(epochs)
        else:
            ds = pretraining_dataset(
                instances,
                self.tokenizer,
                self._pretraining_config(),
                masking=masking,
                seed=seed,
                num_epochs=epochs,
            )
        return batch_dataset(shard_for_process(ds, pi, pc), batch_size // pc)

    def train_iterator(self, batch_size, process_index, process_count):
        """Batches of this process's examples, forever. masking "device": no mlm_* keys (and
        `word_starts` with data.whole_word); "static"/"dynamic": masked on the host."""
        from jaxformer.data import DataIterator
        from jaxformer.data.lazy import store_batches

        d = self.config.data
        self.tokenizer  # noqa: B018  (opens the data)
        if d.source == "synthetic":
            ds = self._synthetic(
                self._instances, d.masking, d.seed, None, batch_size, process_index, process_count
            )
        else:
            ds = store_batches(
                self._examples(self._train_docs, d.masking, d.seed),
                batch_size // process_count,
                seed=d.seed,
                process_index=process_index,
                process_count=process_count,
            )
        return DataIterator(ds, prefetch=d.prefetch)

    def eval_batches(self, batch_size, process_index, process_count):
        """Up to `log.eval_batches` statically masked batches of the held-out documents (packed
        rows with data.pack); a held-out set smaller than one batch is repeated to fill it,
        with a warning."""
        from jaxformer.data.lazy import held_out_warning, store_batches

        self.tokenizer  # noqa: B018
        if self.config.data.source == "synthetic":
            ds = self._synthetic(
                self._eval_instances, "static", 1234, 1, batch_size, process_index, process_count
            )
            return [ds[i] for i in range(min(len(ds), self.config.log.eval_batches))]
        examples = self._examples(self._eval_docs, "static", 1234)
        self.eval_warning = held_out_warning(len(examples), batch_size)
        if self.eval_warning:
            print(f"warning: {self.eval_warning}", flush=True)
        ds = store_batches(
            examples,
            batch_size // process_count,
            process_index=process_index,
            process_count=process_count,
            shuffle=False,
        )
        n = min(self.config.log.eval_batches, -(-len(examples) // batch_size))
        return [ds[i] for i in range(n)]

    # -- loss ----------------------------------------------------------------------------
    def device_batch(self, batch, rng):
        """With data.masking="device", draws the MLM masks of a batch of unmasked ids.

        In: input_ids, attention_mask, token_type_ids [B, L] (+ pair_label; packed rows:
        segment_ids, position_ids, per-segment pair keys; word_starts [B, L] when
        data.whole_word). Out: the same with input_ids masked, word_starts dropped, and
        mlm_positions / mlm_ids [B, P] int32, mlm_weights [B, P] float32 added (P =
        data.max_predictions, or `default_packed_predictions` for packed rows). A batch
        that already carries mlm_positions (host-masked eval) passes unchanged."""
        if self.config.data.masking != "device" or "mlm_positions" in batch:
            return batch
        from jaxformer.data import packing
        from jaxformer.objectives.masking import device_mask

        d, tok, pcfg = self.config.data, self.tokenizer, self._pretraining_config()
        if d.whole_word and "word_starts" not in batch:
            raise ValueError(
                "data.whole_word=True with data.masking='device' needs word_starts in the "
                "batch; the data source does not provide them."
            )
        batch = dict(batch)
        starts = batch.pop("word_starts", None)
        slots = (
            packing.default_packed_predictions(pcfg)
            if "segment_ids" in batch
            else d.max_predictions
        )
        batch.update(
            device_mask(
                rng,
                batch["input_ids"],
                special_ids=tok.special_ids,
                mask_id=tok.mask_id,
                vocab_size=tok.vocab_size,
                config=pcfg.masking,
                attention_mask=batch.get("attention_mask"),
                word_starts=starts if d.whole_word else None,
                max_predictions=slots,
            )
        )
        return batch

    def normalizers(self, batch):
        norms = {"mlm": weight_count(batch["mlm_weights"])}
        if self.objective != "none":
            norms["pair"] = row_count(batch["input_ids"])
        return norms

    def loss_fn(self, params, batch, rng, norms, deterministic=False):
        # packed rows pass segment_ids: the block-diagonal mask and per-segment positions
        # (the model adds its family's position offset, which 0-based position_ids lack)
        out = self.model.apply(
            {"params": params},
            batch["input_ids"],
            mlm_positions=batch["mlm_positions"],
            rngs={"dropout": rng},
            **objectives.encoder_inputs(batch, deterministic),
        )
        loss, metrics = objectives.mlm_loss(
            out, batch, norms["mlm"], self.config.data.label_smoothing
        )
        if self.objective != "none":
            pair, pair_metrics = objectives.pair_loss(out, batch, norms["pair"])
            loss = loss + pair
            metrics.update(pair_metrics)
        return loss, metrics

    # -- reporting -----------------------------------------------------------------------
    def baseline_metrics(self, eval_batches) -> dict:
        """The most-frequent-token baseline on the held-out masked positions: the accuracy of
        always predicting the single id that is most common among those very targets (the
        best any constant guess can do there)."""
        ids = np.concatenate([np.asarray(b["mlm_ids"]).ravel() for b in eval_batches])
        w = np.concatenate([np.asarray(b["mlm_weights"]).ravel() for b in eval_batches]) > 0
        if not w.any():
            return {}
        counts = np.bincount(ids[w])
        return {
            "eval_baseline_mlm_accuracy": float(counts.max() / w.sum()),
            "baseline_token": (
                self.tokenizer.id_to_token(int(counts.argmax()))
                if hasattr(self.tokenizer, "id_to_token")
                else str(int(counts.argmax()))
            ),
        }

    def flops_per_token(self, params) -> float:
        """Training FLOPs per token (`benchmarking.encoder_flops`): every applied layer (shared
        ALBERT layers count each time they run), attention, and the MLM head at the
        predicted positions only."""
        from jaxformer.benchmarking import encoder_flops

        return encoder_flops(
            self.model_cfg, self.seq_len, "train", predictions=self.config.data.max_predictions
        )["total"]

    def finish(self, params, workdir):
        sentences = list(self.config.demo_sentences)
        if not sentences or self.config.data.source == "synthetic":
            return ""
        return "fill-mask predictions:\n" + fill_mask_report(
            self.model, params, self.tokenizer, sentences
        )


def fill_mask_report(model, params, tokenizer, sentences, top_k: int = 5) -> str:
    """Top-k predictions with probabilities for each [MASK] in each sentence."""
    lines = []
    mask_tok = tokenizer.specials.mask
    for s in sentences:
        enc = tokenizer.encode(s.replace("[MASK]", mask_tok))
        ids = np.asarray(enc.ids, np.int32)[None]
        pos = np.flatnonzero(ids[0] == tokenizer.mask_id)
        if not len(pos):
            lines.append(f"{s}\n  (no {mask_tok} token)")
            continue
        out = model.apply({"params": params}, ids, mlm_positions=pos[None].astype(np.int32))
        probs = np.asarray(jax.nn.softmax(out.mlm_logits[0].astype(jnp.float32), -1))
        lines.append(s)
        for j, p in enumerate(probs):
            top = np.argsort(-p)[:top_k]
            preds = ", ".join(f"{tokenizer.id_to_token(int(t))!r} {p[t]:.3f}" for t in top)
            lines.append(f"  mask {j + 1}: {preds}")
    return "\n".join(lines)
