"""Tokenizers for the BERT family, built on HuggingFace `tokenizers` (Rust).

Three families, each with its model, special tokens and pair template:

  bert    (BERT, ELECTRA)  WordPiece, `##` continuation pieces   [CLS] A [SEP] B [SEP]
  roberta                  byte-level BPE, no unknown tokens      <s> A </s></s> B </s>
  albert                   Unigram (SentencePiece-style `▁`)      [CLS] A [SEP] B [SEP]

`token_type_ids` follow the originals: 0 for A and its specials, 1 for B and its final
separator (bert, albert); all 0 for roberta. Offsets are character offsets into the original
text, kept for QA and NER.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

__all__ = [
    "SPECIAL_TOKENS",
    "SpecialTokens",
    "Tokenizer",
    "MissingSpecialTokenError",
    "train_tokenizer",
    "load_tokenizer",
]


class MissingSpecialTokenError(ValueError):
    """The tokenizer's vocabulary lacks a special token its family requires."""


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
    cls: str
    sep: str
    mask: str
    pad: str
    unk: str

    def as_list(self) -> list[str]:
        # Order fixes the ids of trained vocabularies: pad 0 (matches `pad_id=0` padding).
        return [self.pad, self.unk, self.cls, self.sep, self.mask]


# The special tokens of each tokenizer family (aliases in `_ALIASES`).
SPECIAL_TOKENS = {
    "bert": SpecialTokens("[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"),
    "roberta": SpecialTokens("<s>", "</s>", "<mask>", "<pad>", "<unk>"),
    "albert": SpecialTokens("[CLS]", "[SEP]", "[MASK]", "<pad>", "<unk>"),
}
_ALIASES = {
    "electra": "bert",
    "wordpiece": "bert",
    "bpe": "roberta",
    "gpt2": "roberta",
    "unigram": "albert",
    "sentencepiece": "albert",
}
# Which sub-word marks a word boundary (for whole-word masking).
_WORD_MARK = {"bert": ("continuation", "##"), "roberta": ("start", "Ġ"), "albert": ("start", "▁")}


def _family(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in SPECIAL_TOKENS:
        raise ValueError(
            f"unknown tokenizer family {name!r}; expected one of "
            f"{sorted(SPECIAL_TOKENS) + sorted(_ALIASES)}"
        )
    return name


class Tokenizer:
    """A HF `tokenizers.Tokenizer` plus the family's special-token ids.

    Raises `MissingSpecialTokenError` if the vocabulary lacks one of the family's specials.
    """

    def __init__(self, hf: HFTokenizer, family: str, specials: SpecialTokens | None = None):
        self.family = _family(family)
        self.hf = hf
        self.specials = specials or SPECIAL_TOKENS[self.family]
        ids = {}
        for field in dataclasses.fields(SpecialTokens):
            tok = getattr(self.specials, field.name)
            i = hf.token_to_id(tok)
            if i is None:
                raise MissingSpecialTokenError(
                    f"{self.family} tokenizer has no {field.name} token {tok!r} in its vocabulary "
                    f"(size {hf.get_vocab_size()}); "
                    "add it or pick the family whose specials it uses"
                )
            ids[field.name] = i
        self.cls_id, self.sep_id, self.mask_id = ids["cls"], ids["sep"], ids["mask"]
        self.pad_id, self.unk_id = ids["pad"], ids["unk"]
        self.special_ids = np.array(sorted(set(ids.values())), np.int32)
        vocab = hf.get_vocab(with_added_tokens=True)
        self.vocab_size = max(vocab.values()) + 1
        self._word_start = self._word_start_table(vocab)
        self._install_post_processor()

    # ---- construction helpers -------------------------------------------------------------
    def _word_start_table(self, vocab: dict[str, int]) -> np.ndarray:
        """is_start[id]: the token begins a new word (specials count as their own words)."""
        kind, mark = _WORD_MARK[self.family]
        table = np.zeros(self.vocab_size, bool)
        for tok, i in vocab.items():
            table[i] = (
                (not tok.startswith(mark)) if kind == "continuation" else tok.startswith(mark)
            )
        table[self.special_ids] = True
        return table

    def _install_post_processor(self):
        s = self.specials
        if self.family == "roberta":
            self.hf.post_processor = processors.RobertaProcessing(
                (s.sep, self.sep_id),
                (s.cls, self.cls_id),
                trim_offsets=True,
                add_prefix_space=False,
            )
        else:
            self.hf.post_processor = processors.TemplateProcessing(
                single=f"{s.cls} $A {s.sep}",
                pair=f"{s.cls} $A {s.sep} $B:1 {s.sep}:1",
                special_tokens=[(s.cls, self.cls_id), (s.sep, self.sep_id)],
            )

    # ---- encoding -----------------------------------------------------------------------------
    def encode(
        self,
        text: str | Sequence[str],
        pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        is_pretokenized: bool = False,
    ):
        """One `tokenizers.Encoding` (ids, type_ids, offsets, word_ids, ...)."""
        return self.hf.encode(
            text, pair, is_pretokenized=is_pretokenized, add_special_tokens=add_special_tokens
        )

    def tokenize_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text without special tokens (batched in Rust)."""
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def build_inputs(self, a: Sequence[int], b: Sequence[int] | None = None):
        """(input_ids, token_type_ids) lists for ids of A (and B), as the post-processor does."""
        c, s = self.cls_id, self.sep_id
        if b is None:
            ids = [c, *a, s]
            return ids, [0] * len(ids)
        if self.family == "roberta":
            ids = [c, *a, s, s, *b, s]
            return ids, [0] * len(ids)
        return [c, *a, s, *b, s], [0] * (len(a) + 2) + [1] * (len(b) + 1)

    def num_special_tokens(self, pair: bool) -> int:
        return (4 if self.family == "roberta" else 3) if pair else 2

    def word_starts(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask over `ids` (last axis is the sequence): tokens that begin a word.

        Specials are words of their own, and the token after a special always starts a word
        (byte-level BPE writes the first word of a text without its `Ġ`).
        """
        ids = np.asarray(ids)
        starts = self._word_start[ids]
        special = np.isin(ids, self.special_ids)
        starts[..., 1:] |= special[..., :-1]
        starts[..., :1] = True
        return starts

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.hf.id_to_token(int(i))

    # ---- persistence --------------------------------------------------------------------------
    def save(self, directory: str) -> str:
        """Writes `tokenizer.json` and a HF-style `tokenizer_config.json`; returns the dir."""
        os.makedirs(directory, exist_ok=True)
        self.hf.save(os.path.join(directory, "tokenizer.json"))
        s = self.specials
        config = {
            "jaxformer_family": self.family,
            "cls_token": s.cls,
            "sep_token": s.sep,
            "mask_token": s.mask,
            "pad_token": s.pad,
            "unk_token": s.unk,
        }
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=2)
        return directory


# ---- training ---------------------------------------------------------------------------
def _normalizer(family: str, lowercase: bool, strip_accents: bool | None):
    if family == "bert":
        # BERT's own rule: strip accents iff lowercasing, unless told otherwise.
        return normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=strip_accents,
            lowercase=lowercase,
        )
    steps = [normalizers.NFKC()] if family == "albert" else []
    if strip_accents:
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps) if steps else None


def _build_pipeline(family: str, model, lowercase: bool, strip_accents: bool | None):
    hf = HFTokenizer(model)
    norm = _normalizer(family, lowercase, strip_accents)
    if norm is not None:
        hf.normalizer = norm
    if family == "bert":
        hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        hf.decoder = decoders.WordPiece(prefix="##")
    elif family == "roberta":
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
    else:
        hf.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        hf.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return hf


def train_tokenizer(
    texts: Iterable[str],
    family: str = "bert",
    *,
    vocab_size: int = 8000,
    lowercase: bool | None = None,
    strip_accents: bool | None = None,
    min_frequency: int = 2,
) -> Tokenizer:
    """Trains the family's tokenizer on `texts`.

    lowercase defaults to True for bert/albert, False for roberta (which is cased).
    strip_accents None means "as BERT": stripped iff lowercased.
    """
    family = _family(family)
    lowercase = (family != "roberta") if lowercase is None else lowercase
    specials = SPECIAL_TOKENS[family]
    if family == "bert":
        model = models.WordPiece(unk_token=specials.unk, continuing_subword_prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials.as_list(),
            continuing_subword_prefix="##",
        )
    elif family == "roberta":
        model = models.BPE()  # byte-level: every byte is in the alphabet, so no unknowns.
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials.as_list(),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    else:
        model = models.Unigram()
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials.as_list(), unk_token=specials.unk
        )
    hf = _build_pipeline(family, model, lowercase, strip_accents)
    if family == "bert":
        texts = list(texts)  # read twice: once for the alphabet, once to train
        # HF numbers the `##` continuation characters in the order it meets them while
        # walking a hash map of words, which changes from process to process; merge ties
        # are then broken by those ids, so vocabularies differ run to run. Listing every
        # `##c` up front (as specials, unmarked after training) fixes their ids.
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials.as_list() + _continuations(hf, texts),
            continuing_subword_prefix="##",
        )
    hf.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(_canonical(hf, family), family)


def _continuations(hf: HFTokenizer, texts: Sequence[str]) -> list[str]:
    """`##c` for every character that follows another inside a pre-tokenized word (the
    continuation symbols HF's trainer creates), sorted."""
    chars = set()
    for t in texts:
        t = hf.normalizer.normalize_str(t) if hf.normalizer else t
        for word, _ in hf.pre_tokenizer.pre_tokenize_str(t):
            chars.update(word[1:])
    return ["##" + c for c in sorted(chars)]


def _canonical(hf: HFTokenizer, family: str) -> HFTokenizer:
    """The trained tokenizer in a form that is the same in every process: the `##c` helpers
    are plain vocabulary, and Unigram scores (summed in a thread-dependent order, so they
    differ in the last bits) are rounded to 1e-9 and the pieces sorted by (-score, piece).
    The characters Unigram appends last, with made-up falling scores in hash-set order, get
    those scores in character order instead."""
    j = json.loads(hf.to_str())
    keep = set(SPECIAL_TOKENS[family].as_list())
    j["added_tokens"] = [t for t in j["added_tokens"] if t["content"] in keep]
    if family == "albert":
        vocab = [[p, round(s, 9)] for p, s in j["model"]["vocab"]]
        n = len(keep)  # the specials stay first, at the ids they were given
        tail = len(vocab)
        while tail > n and len(vocab[tail - 1][0]) == 1:
            tail -= 1
        chars = sorted(p for p, _ in vocab[tail:])
        scores = sorted((s for _, s in vocab[tail:]), reverse=True)
        body = sorted(vocab[n:tail], key=lambda v: (-v[1], v[0]))
        j["model"]["vocab"] = vocab[:n] + body + [[c, s] for c, s in zip(chars, scores)]
    return HFTokenizer.from_str(json.dumps(j, ensure_ascii=False))


# ---- loading ----------------------------------------------------------------------------
def _guess_family(hf: HFTokenizer) -> str:
    vocab = hf.get_vocab(with_added_tokens=True)
    model = type(hf.model).__name__
    if model == "WordPiece":
        return "bert"
    if model == "Unigram":
        return "albert"
    return "roberta" if "<s>" in vocab else "bert"


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_tokenizer(path: str, family: str | None = None) -> Tokenizer:
    """Loads a `tokenizer.json` file, or a HF model directory.

    A directory is read from `tokenizer.json` if present, else `vocab.txt` (WordPiece, with
    `do_lower_case` from `tokenizer_config.json`, default True), else `vocab.json` +
    `merges.txt` (byte-level BPE). Special-token names come from `tokenizer_config.json` when
    it has them, else from the family (guessed from the model type if not given).
    """
    if os.path.isdir(path):
        config = _read_json(os.path.join(path, "tokenizer_config.json"))
        tj, vt = os.path.join(path, "tokenizer.json"), os.path.join(path, "vocab.txt")
        vj, mt = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
        if os.path.exists(tj):
            hf = HFTokenizer.from_file(tj)
        elif os.path.exists(vt):
            family = family or "bert"
            lower = config.get("do_lower_case", True)
            hf = _build_pipeline(
                "bert",
                models.WordPiece.from_file(vt, unk_token=config.get("unk_token", "[UNK]")),
                lower,
                config.get("strip_accents"),
            )
        elif os.path.exists(vj) and os.path.exists(mt):
            family = family or "roberta"
            hf = _build_pipeline("roberta", models.BPE.from_file(vj, mt), False, None)
        else:
            raise FileNotFoundError(
                f"{path} has none of tokenizer.json, vocab.txt, vocab.json+merges.txt"
            )
    elif os.path.isfile(path):
        config = _read_json(os.path.join(os.path.dirname(path), "tokenizer_config.json"))
        hf = HFTokenizer.from_file(path)
    else:
        raise FileNotFoundError(f"no tokenizer at {path}")
    family = _family(family or config.get("jaxformer_family") or _guess_family(hf))
    base = SPECIAL_TOKENS[family]

    def name(key, default):  # HF configs store either "tok" or {"content": "tok", ...}
        v = config.get(key, default)
        return v["content"] if isinstance(v, dict) else (v or default)

    specials = SpecialTokens(
        name("cls_token", base.cls),
        name("sep_token", base.sep),
        name("mask_token", base.mask),
        name("pad_token", base.pad),
        name("unk_token", base.unk),
    )
    return Tokenizer(hf, family, specials)
