"""Where documents come from: tfds datasets (no TensorFlow at run time) and local files.

tfds datasets are read through `tfds.data_source` (random access over ArrayRecord files), so
grain can shuffle and shard them; TensorFlow is only needed to *prepare* a dataset
(`pip install jaxformer[tf]`). Local corpora are text files (one document per file, or
documents separated by blank lines) or JSONL files (one document per line, in a field).

Bad input never becomes a silent wrong example: with `errors="raise"` (default) an empty
file or non-UTF-8 bytes raise `ValueError` naming the file; with `errors="skip"` the file
(or JSONL line) is skipped and counted in the returned `Documents.skipped`.
"""

from __future__ import annotations

import collections
import glob
import importlib
import json
import logging
import os
import re
from collections.abc import Sequence

__all__ = [
    "Documents",
    "tfds_source",
    "tfds_texts",
    "read_text_files",
    "json_strings",
    "read_jsonl",
    "split_sentences",
]

# Builder packages tfds does not import without TensorFlow; imported when a name is unknown.
_TFDS_PACKAGES = ("text", "translate", "question_answering", "summarization", "structured")


class Documents(list):
    """A list of document strings, with `skipped`: a Counter of what was left out and why."""

    def __init__(self, docs=(), skipped=None):
        super().__init__(docs)
        self.skipped = collections.Counter(skipped or {})


def _import_builder_packages() -> None:
    for package in _TFDS_PACKAGES:
        try:
            importlib.import_module(f"tensorflow_datasets.{package}")
        except Exception:  # a package whose builders need an absent optional dependency
            pass


def tfds_source(
    name: str, split: str = "train", data_dir: str | None = None, *, download: bool = False
):
    """A random-access tfds data source (`len`, `[i]` -> dict of numpy / str).

    `name` is "dataset[/config][:version]". Raises ValueError naming the dataset if tfds does
    not know it, and FileNotFoundError if it is known but not prepared (in the ArrayRecord
    format) in `data_dir`. download=True lets tfds download and prepare it (needs TF).
    """
    import tensorflow_datasets as tfds  # heavy-ish import; only when a tfds source is used.

    not_found = tfds.core.registered.DatasetNotFoundError
    try:
        try:
            return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
        except not_found:
            _import_builder_packages()  # then try once more
            return tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    except not_found as e:
        lines = str(e).splitlines()
        hint = " ".join(l for l in lines if l.startswith("Did you mean"))
        raise ValueError(
            f"tfds does not know the dataset {name!r} (check the spelling and the "
            f"config after '/'): {lines[0]} {hint}".strip()
        ) from e
    except ValueError as e:  # e.g. an unknown config: tfds's message lists close matches
        raise ValueError(f"tfds cannot open the dataset {name!r}: {e}") from e
    except (FileNotFoundError, AssertionError, NotImplementedError) as e:
        raise FileNotFoundError(
            f"tfds dataset {name!r} split {split!r} is not prepared in "
            f"data_dir={data_dir!r}; prepare it once with TensorFlow "
            "installed (`tfds build --file_format=array_record "
            f"{name}`): {e}"
        ) from e


def _text(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


def tfds_texts(source, field: str = "text") -> Documents:
    """The `field` of every example of a tfds source, as documents; empty ones are counted."""
    docs, skipped = [], collections.Counter()
    for i in range(len(source)):
        text = _text(source[i][field]).strip()
        if text:
            docs.append(text)
        else:
            skipped["empty document"] += 1
    return Documents(docs, skipped)


def _expand(paths: str | Sequence[str]) -> list[str]:
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    out = []
    for p in map(str, paths):
        matches = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        if not matches:
            raise FileNotFoundError(f"no files match {p!r}")
        out += matches
    return out


def _read_utf8(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not UTF-8 at byte {e.start} ({raw[e.start : e.start + 4]!r}); "
            "re-encode the file or pass errors='skip'"
        ) from e


def _handle(errors: str, skipped: collections.Counter, reason: str, err: Exception) -> None:
    if errors == "raise":
        raise err
    skipped[reason] += 1
    logging.warning("skipping: %s", err)


def _readable(paths, errors: str, skipped: collections.Counter):
    """(path, text) of each non-empty UTF-8 file; the others raise or are counted in
    `skipped`, as `errors` says."""
    for path in _expand(paths):
        try:
            text = _read_utf8(path)
        except ValueError as e:
            _handle(errors, skipped, "non-UTF-8 file", e)
            continue
        if not text.strip():
            _handle(errors, skipped, "empty file", ValueError(f"{path}: file is empty"))
            continue
        yield path, text


def read_text_files(
    paths: str | Sequence[str], *, per: str = "blank_line", errors: str = "raise"
) -> Documents:
    """Documents from text files (globs allowed), in path order.

    per="blank_line": documents are separated by one or more blank lines (BERT's format);
    per="file": each file is one document. Within a document, line breaks are kept (sentence
    splitting treats them as boundaries). errors: "raise" or "skip" (counted).
    """
    if per not in ("blank_line", "file"):
        raise ValueError(f"per must be 'blank_line' or 'file', got {per!r}")
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    docs, skipped = [], collections.Counter()
    for _, text in _readable(paths, errors, skipped):
        parts = [text] if per == "file" else re.split(r"\n[ \t]*\n", text)
        for part in parts:
            part = part.strip()
            if part:
                docs.append(part)
    return Documents(docs, skipped)


def json_strings(line: str, fields: Sequence[str]) -> tuple[str, ...]:
    """The values of `fields` in one JSON line. Raises json.JSONDecodeError (not JSON),
    KeyError (a field missing) or TypeError (a value that is not a string)."""
    obj = json.loads(line)
    values = tuple(obj[k] for k in fields)
    if not all(isinstance(v, str) for v in values):
        kinds = [type(v).__name__ for v in values]
        raise TypeError(f"fields {list(fields)} hold {kinds}, not strings")
    return values


def read_jsonl(
    paths: str | Sequence[str], *, field: str = "text", errors: str = "raise"
) -> Documents:
    """Documents from JSONL files: one JSON object per line, the document in `field`."""
    docs, skipped = [], collections.Counter()
    for path, text in _readable(paths, errors, skipped):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                (value,) = json_strings(line, (field,))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                _handle(
                    errors,
                    skipped,
                    "bad JSONL line",
                    ValueError(f"{path}:{n}: cannot read field {field!r}: {e!r}"),
                )
                continue
            if value.strip():
                docs.append(value.strip())
            else:
                skipped["empty document"] += 1
    return Documents(docs, skipped)


# A sentence ends at . ! ? (optionally followed by one closing quote/bracket) before
# whitespace and an upper-case letter, digit or opening quote; or at a line break.
_NEXT = r"(?=[\"'(\[]?[A-Z0-9])"
_SENTENCE_END = re.compile(rf"(?<=[.!?])\s+{_NEXT}|(?<=[.!?][\"')\]])\s+{_NEXT}|\s*\n\s*")


def split_sentences(text: str) -> list[str]:
    """Splits a document into sentences (rule-based; line breaks are always boundaries, as in
    BERT's one-sentence-per-line corpus files). The one splitter: pretraining examples, the
    corpus store and the summarize pipeline all use it."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]
