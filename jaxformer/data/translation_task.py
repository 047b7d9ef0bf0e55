"""Translation data: a generated parallel corpus that needs no network, and WMT via tfds.

The generated task translates numbers written in digits into English words
("40317" -> "forty thousand three hundred seventeen"): a small grammar with real
structure (place value, teens, the thousands group), a held-out split of numbers never seen
in training, and a word-level tokenizer trained with HF `tokenizers` on the training split.

Batches are dicts of numpy int32 `[batch, length]` arrays: input_ids, attention_mask,
labels (target ids then EOS, padded), labels_mask (see `jaxformer.objectives.seq2seq`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

__all__ = [
    "EOS",
    "PAD",
    "UNK",
    "Seq2SeqTokenizer",
    "batches",
    "encode_pairs",
    "make_number_corpus",
    "number_to_words",
    "tfds_translation_pairs",
    "train_tokenizer",
]

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"  # ids 0, 1, 2 in a trained vocabulary

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def _below_thousand(n: int) -> list[str]:
    words = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        n %= 10
        if n:
            words.append(_ONES[n])
    elif n or not words:
        words.append(_ONES[n])
    return words


def number_to_words(n: int) -> str:
    """0 <= n < 10**6 in English words, e.g. 4307 -> 'four thousand three hundred seven'."""
    if not 0 <= n < 10**6:
        raise ValueError(f"number_to_words covers [0, 10**6), got {n}.")
    if n < 1000:
        return " ".join(_below_thousand(n))
    high, low = divmod(n, 1000)
    words = _below_thousand(high) + ["thousand"] + (_below_thousand(low) if low else [])
    return " ".join(words)


def make_number_corpus(
    num_train: int = 20000, num_test: int = 1000, max_digits: int = 6, seed: int = 0
) -> dict[str, list[tuple[str, str]]]:
    """{"train", "test"}: (digits, words) pairs; no number appears in both splits.

    The digit count is drawn uniformly (so short numbers are not swamped by long ones), then
    the number uniformly among numbers of that many digits.
    """
    total = sum(10**d - (10 ** (d - 1) if d > 1 else 0) for d in range(1, max_digits + 1))
    if num_train + num_test > total:
        raise ValueError(
            f"asked for {num_train + num_test} distinct numbers but only {total} "
            f"have at most {max_digits} digits."
        )
    rng = np.random.default_rng(seed)
    seen: set[int] = set()
    order: list[int] = []
    while len(order) < num_train + num_test:
        d = int(rng.integers(1, max_digits + 1))
        n = int(rng.integers(0 if d == 1 else 10 ** (d - 1), 10**d))
        if n not in seen:
            seen.add(n)
            order.append(n)
    pairs = [(str(n), number_to_words(n)) for n in order]
    # The held-out split is drawn from the same distribution, after dedup, by position.
    return {"train": pairs[:num_train], "test": pairs[num_train:]}


@dataclasses.dataclass
class Seq2SeqTokenizer:
    """One trained vocabulary for source and target; digits are split one per token."""

    hf: Tokenizer

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    @property
    def pad_id(self) -> int:
        return self.hf.token_to_id(PAD)

    @property
    def eos_id(self) -> int:
        return self.hf.token_to_id(EOS)

    @property
    def sep_id(self) -> int:
        """The end of a source (EOS), under the name the pipelines read."""
        return self.eos_id

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    tokenize_ids = encode  # the pipelines' name

    def decode(self, ids, skip_special_tokens: bool = True):
        """Rows of ids -> texts (one row -> one text), each cut at the first EOS; pad and
        specials are dropped."""
        rows = np.asarray(ids)
        out = []
        for row in np.atleast_2d(rows).tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            out.append(self.hf.decode(row, skip_special_tokens=skip_special_tokens))
        return out[0] if rows.ndim == 1 else out

    def save(self, directory: str) -> str:
        """Writes the vocabulary as a jaxformer tokenizer directory (what the pipelines and
        `jaxformer.data.load_tokenizer` read): `</s>` is its separator (EOS), and `<s>` and
        `<mask>`, which the format names, are added after the vocabulary if absent."""
        import copy

        from jaxformer.data.tokenizers import SPECIAL_TOKENS, Tokenizer

        hf = copy.deepcopy(self.hf)
        s = SPECIAL_TOKENS["roberta"]  # <s> </s> <mask> <pad> <unk>: our pad, EOS and unk
        missing = [t for t in (s.cls, s.mask) if hf.token_to_id(t) is None]
        if missing:
            hf.add_special_tokens(missing)
        return Tokenizer(hf, "roberta").save(directory)


def train_tokenizer(
    texts: Sequence[str], kind: str = "word", vocab_size: int = 8000
) -> Seq2SeqTokenizer:
    """A vocabulary (with <pad>=0, </s>=1, <unk>=2) trained on `texts`.

    kind="word": word level, digits one per token (the generated corpus); kind="bpe":
    byte-pair merges up to `vocab_size` over SentencePiece-style `▁` words (real text, WMT).
    """
    specials = [PAD, EOS, UNK]
    if kind == "word":
        hf = Tokenizer(models.WordLevel(unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
        )
        trainer = trainers.WordLevelTrainer(special_tokens=specials)
    elif kind == "bpe":
        hf = Tokenizer(models.BPE(unk_token=UNK))
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; use 'word' or 'bpe'.")
    hf.train_from_iterator(list(texts), trainer)
    tok = Seq2SeqTokenizer(hf)
    assert (tok.pad_id, tok.eos_id) == (0, 1), "special tokens must come first"
    return tok


def encode_pairs(
    tok: Seq2SeqTokenizer,
    pairs: Sequence[tuple[str, str]],
    max_source_len: int | None = None,
    max_target_len: int | None = None,
) -> dict[str, np.ndarray]:
    """(source, target) pairs -> padded arrays; EOS closes both sides. Raises if a pair is
    longer than a given maximum (never truncates silently)."""
    if not pairs:
        raise ValueError("no pairs to encode.")
    src = [ids + [tok.eos_id] for ids in tok.encode([s for s, _ in pairs])]
    tgt = [ids + [tok.eos_id] for ids in tok.encode([t for _, t in pairs])]
    s_len = max_source_len or max(map(len, src))
    t_len = max_target_len or max(map(len, tgt))

    def pad(rows, n, what):
        longest = max(map(len, rows))
        if longest > n:
            raise ValueError(f"a {what} has {longest} tokens (with EOS) > max {n}.")
        ids = np.full((len(rows), n), tok.pad_id, np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        mask = np.arange(n)[None, :] < np.array([len(r) for r in rows])[:, None]
        return ids, mask.astype(np.int32)

    input_ids, attention_mask = pad(src, s_len, "source")
    labels, labels_mask = pad(tgt, t_len, "target")
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "labels_mask": labels_mask,
    }


def batches(
    arrays: dict[str, np.ndarray],
    batch_size: int,
    seed: int = 0,
    shuffle: bool = True,
    repeat: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-size batches (the last partial batch of an epoch is dropped when repeating)."""
    n = len(next(iter(arrays.values())))
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n) if shuffle else np.arange(n)
        stop = n - n % batch_size if repeat else n
        for i in range(0, stop, batch_size):
            idx = order[i : i + batch_size]
            yield {k: v[idx] for k, v in arrays.items()}
        if not repeat:
            return


def tfds_translation_pairs(
    name: str = "wmt14_translate/de-en",
    split: str = "train",
    source_lang: str = "en",
    target_lang: str = "de",
    data_dir: str | None = None,
    limit: int | None = None,
) -> list[tuple[str, str]]:
    """(source, target) text pairs from a tfds translation dataset (`wmt14_translate/de-en`,
    `wmt_t2t_translate/de-en`, ...) read through `tfds.data_source` (no TensorFlow)."""
    from jaxformer.data.sources import tfds_source

    source = tfds_source(name, split=split, data_dir=data_dir)
    n = len(source) if limit is None else min(limit, len(source))
    pairs = []
    for i in range(n):
        ex = source[i]
        missing = [lang for lang in (source_lang, target_lang) if lang not in ex]
        if missing:
            raise KeyError(f"{name} examples have fields {sorted(ex)}, not {missing}.")
        text = lambda x: x.decode("utf-8") if isinstance(x, bytes) else str(x)
        pairs.append((text(ex[source_lang]), text(ex[target_lang])))
    return pairs
