"""Labelled examples from your own files, for fine-tuning: CSV, TSV or JSONL.

A source is "FORMAT:PATH" with FORMAT csv (header row, comma-separated), tsv (header row,
tab-separated) or jsonl (one JSON object per line); PATH may be relative to the current
directory. `Fields` says which columns / keys hold the text, the optional second text of a
pair, the label, and for token classification the token and tag lists (JSONL only).

Labels become class ids through label names: given (in that order), or read from the
training file (its distinct labels, sorted; numerically when all are integers); with given
names an integer label may also be a class id. Regression labels are numbers. Every bad row
is a `DataFileError` (a ValueError) naming the file and line: a missing or empty field, an
unknown label, a number that does not parse, tokens and tags of different lengths; so is an
empty file.

Records come out in the fine-tuning record format of `jaxformer.tasks.finetune`:
`{"text", "pair", "label"}` (label an int class id, or a float for regression) or
`{"words", "tags"}` (tags as class ids); SQuAD-style JSONL records pass through as read.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Sequence

__all__ = [
    "FILE_FORMATS",
    "DataFileError",
    "Fields",
    "parse_file_source",
    "read_rows",
    "label_names_from",
    "classification_records",
    "token_records",
]

FILE_FORMATS = ("csv", "tsv", "jsonl")


class DataFileError(ValueError):
    """A data file that cannot be read as labelled examples; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class Fields:
    """Which column (CSV/TSV) or key (JSONL) holds what. pair="" means single texts."""

    text: str = "text"
    pair: str = ""
    label: str = "label"
    tokens: str = "tokens"
    tags: str = "tags"


def parse_file_source(source: str) -> tuple[str, str] | None:
    """("csv", PATH) for "csv:PATH" (likewise tsv, jsonl); None for any other source."""
    fmt, sep, path = str(source).partition(":")
    if not sep or fmt not in FILE_FORMATS:
        return None
    if not path:
        raise DataFileError(f"data source {source!r} names no file; write {fmt}:PATH.")
    return fmt, path


def read_rows(path: str, fmt: str) -> list[tuple[int, dict]]:
    """(line number, row dict) for every row of a CSV / TSV / JSONL file.

    CSV and TSV rows are dicts of strings keyed by the header; JSONL rows are the objects.
    A missing, empty or non-UTF-8 file, a CSV row with more cells than the header, or a
    JSONL line that is not a JSON object raises DataFileError naming the file (and line).
    """
    if fmt not in FILE_FORMATS:
        raise DataFileError(f"unknown data file format {fmt!r}; use one of {list(FILE_FORMATS)}.")
    full = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(full):
        raise DataFileError(f"data file {path!r} does not exist (looked for {full}).")
    try:
        with open(full, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}).") from None
    if not text.strip():
        raise DataFileError(f"{path}: the file is empty.")
    rows: list[tuple[int, dict]] = []
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFileError(f"{path}:{n}: not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict):
                raise DataFileError(
                    f"{path}:{n}: a JSONL line must be an object, got {type(row).__name__}."
                )
            rows.append((n, row))
        return rows
    reader = csv.DictReader(io.StringIO(text), delimiter="," if fmt == "csv" else "\t")
    header = reader.fieldnames or []
    if len(set(header)) != len(header):
        raise DataFileError(f"{path}:1: the header {header} repeats a column name.")
    for row in reader:
        # DictReader files surplus cells under the key None and fills missing ones with None.
        cells = sum(v is not None for k, v in row.items() if k is not None)
        cells += len(row.get(None) or ())
        if cells != len(header) and any(row.values()):
            raise DataFileError(
                f"{path}:{reader.line_num}: {cells} cells, but the header has {len(header)} "
                f"({', '.join(header)}); quote cells that hold "
                f"{'commas' if fmt == 'csv' else 'tabs'}."
            )
        if any(v for v in row.values()):
            rows.append((reader.line_num, row))
    if not rows:
        raise DataFileError(f"{path}: a header ({', '.join(header)}) but no rows.")
    return rows


def _field(path: str, n: int, row: dict, key: str, what: str):
    if key not in row or row[key] is None:
        have = ", ".join(repr(k) for k in row if k is not None)
        raise DataFileError(
            f"{path}:{n}: no {what} field {key!r} (the row has {have}); "
            f"name the right one with --config.data.{what}_field."
        )
    return row[key]


def _text(path: str, n: int, row: dict, key: str, what: str) -> str:
    value = _field(path, n, row, key, what)
    if not isinstance(value, str):
        raise DataFileError(
            f"{path}:{n}: field {key!r} is {type(value).__name__}, expected a string."
        )
    if not value.strip():
        raise DataFileError(f"{path}:{n}: field {key!r} is empty.")
    return value


def _label_key(value) -> str:
    """A label as the string it is named by (JSON 1 and CSV "1" are the same class)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(type(value).__name__)
    return str(value).strip()


def _as_int(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        return None


def label_names_from(values: Sequence[str]) -> tuple[str, ...]:
    """The distinct labels, sorted (numerically when every label is an integer)."""
    distinct = set(values)
    if all(_as_int(v) is not None for v in distinct):
        return tuple(sorted(distinct, key=int))
    return tuple(sorted(distinct))


class _Labels:
    """Maps a row's label to a class id, collecting names from the data when none are given."""

    def __init__(self, path: str, names: Sequence[str] | None, origin: str, ids=True):
        self.path, self.origin, self.ids = path, origin, ids
        self.names = tuple(names) if names else None
        self.index = {n: i for i, n in enumerate(self.names)} if self.names else None

    def key(self, n: int, value, what: str = "label") -> str:
        try:
            k = _label_key(value)
        except TypeError as e:
            raise DataFileError(
                f"{self.path}:{n}: the {what} is {e}, expected a string or an integer."
            ) from None
        if not k:
            raise DataFileError(f"{self.path}:{n}: the {what} is empty.")
        return k

    def id(self, n: int, key: str, what: str = "label") -> int:
        if key in self.index:
            return self.index[key]
        i = _as_int(key)  # a class id, e.g. CoNLL tags exported as integers
        if not self.ids or i is None or not 0 <= i < len(self.names):
            shown = ", ".join(self.names[:20]) + (" ..." if len(self.names) > 20 else "")
            raise DataFileError(
                f"{self.path}:{n}: unknown {what} {key!r}; the labels ({self.origin}) are: {shown}."
            )
        return i


def classification_records(
    rows: Sequence[tuple[int, dict]],
    path: str,
    fields: Fields = Fields(),
    *,
    label_names: Sequence[str] | None = None,
    regression: bool = False,
    origin: str = "finetune.label_names",
    class_ids: bool = True,
) -> tuple[list[dict], tuple[str, ...] | None]:
    """(records {"text", "pair", "label"}, label names) from rows of `read_rows`.

    Classification: with `label_names` each label must be one of them; without, the names
    are the file's distinct labels (sorted). class_ids: an integer label that is not a name
    is a class id into the given names. Regression: labels are numbers, names None.
    `origin` says where given names come from, for the error message.
    """
    labels = _Labels(path, label_names, origin, class_ids)
    out, keys = [], []
    for n, row in rows:
        rec = {"text": _text(path, n, row, fields.text, "text"), "pair": None}
        if fields.pair:
            rec["pair"] = _text(path, n, row, fields.pair, "pair")
        value = _field(path, n, row, fields.label, "label")
        if regression:
            try:
                if isinstance(value, bool):
                    raise ValueError
                rec["label"] = float(value)
            except (TypeError, ValueError):
                raise DataFileError(
                    f"{path}:{n}: regression label {value!r} is not a number."
                ) from None
        else:
            keys.append((n, labels.key(n, value)))
        out.append(rec)
    if regression:
        return out, None
    if labels.names is None:
        labels = _Labels(path, label_names_from([k for _, k in keys]), origin, ids=False)
    for rec, (n, k) in zip(out, keys):
        rec["label"] = labels.id(n, k)
    return out, labels.names


def token_records(
    rows: Sequence[tuple[int, dict]],
    path: str,
    fields: Fields = Fields(),
    *,
    label_names: Sequence[str] | None = None,
    origin: str = "finetune.label_names",
    class_ids: bool = True,
) -> tuple[list[dict], tuple[str, ...]]:
    """(records {"words", "tags"}, tag names) from JSONL rows with a token list and a tag
    list of the same length; tag names given, or the file's distinct tags (sorted).
    class_ids and origin as in `classification_records`."""
    labels = _Labels(path, label_names, origin, class_ids)
    out, keys = [], []
    for n, row in rows:
        words = _field(path, n, row, fields.tokens, "tokens")
        tags = _field(path, n, row, fields.tags, "tags")
        if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
            raise DataFileError(
                f"{path}:{n}: field {fields.tokens!r} must be a list of non-empty strings."
            )
        if not isinstance(tags, list):
            raise DataFileError(f"{path}:{n}: field {fields.tags!r} must be a list.")
        if not words:
            raise DataFileError(f"{path}:{n}: field {fields.tokens!r} is empty.")
        if len(words) != len(tags):
            raise DataFileError(f"{path}:{n}: {len(words)} tokens but {len(tags)} tags.")
        out.append({"words": list(words)})
        keys.append((n, [labels.key(n, t, "tag") for t in tags]))
    if labels.names is None:
        labels = _Labels(
            path, label_names_from([t for _, ts in keys for t in ts]), origin, ids=False
        )
    for rec, (n, ts) in zip(out, keys):
        rec["tags"] = [labels.id(n, t, "tag") for t in ts]
    return out, labels.names
