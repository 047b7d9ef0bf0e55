"""The tokenized corpus store: prepare a corpus once, then read it with constant memory.

A store is a directory:

    manifest.json            written last (atomic rename): a store is complete or absent
    tokenizer/               tokenizer.json + tokenizer_config.json (the store's own)
    shards/NNNNN.tokens.npy     [T] uint16 (vocab <= 65536) or int32: every sentence's ids,
                                back to back, no special tokens
    shards/NNNNN.sentences.npy  [S+1] int64: token offset of each sentence (last = T)
    shards/NNNNN.documents.npy  [D+1] int64: sentence offset of each document (last = S)
    shards/NNNNN.json           the shard's record: its input range, counts, skipped lines
                                and each file's size and CRC-32 (written after its files)

One shard per unit of input (a byte range of a file, cut at a document boundary, or a range
of tfds examples), so the shards, hence the store, do not depend on the number of workers.
Word starts are not stored: `Tokenizer.word_starts` derives them from the ids, and sentence
starts (from the offsets) always start a word.

Pair stores (translation) hold `NNNNN.{source,target}.npy` with `NNNNN.{source,target}_offsets.npy`
instead; `PairStore` reads them.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
import time
import zlib
from collections.abc import Iterator, Sequence

import numpy as np

from jaxformer.data.sources import json_strings

__all__ = [
    "FORMAT_VERSION",
    "StoreError",
    "prepare",
    "Store",
    "PairStore",
    "open_store",
    "store_for_source",
    "tokenizer_sha",
]

FORMAT_VERSION = 1
_CHUNK_BYTES = 32 << 20  # input bytes per unit (one shard each)
_TFDS_UNIT = 20_000  # tfds examples per unit
_SAMPLE_BYTES = 16 << 20  # text the tokenizer is trained on, spread over all units
_ENCODE_BATCH = 2048  # sentences per tokenizer call


class StoreError(ValueError):
    """A store that cannot be read as it is: missing, partial, corrupted or incompatible."""


# ---- options and units ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Options:
    format: str  # text | jsonl | tfds
    field: str
    errors: str
    kind: str  # pretraining | pairs
    source_field: str = "source"
    target_field: str = "target"
    tfds_name: str = ""
    split: str = "train"
    data_dir: str | None = None


def _expand(patterns: Sequence[str]) -> list[str]:
    out = []
    for p in patterns:
        matches = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        matches = [m for m in matches if os.path.isfile(m)]
        if not matches:
            raise FileNotFoundError(f"--input {p!r} matches no file")
        out += matches
    return out


def _boundaries(path: str, fmt: str, chunk: int) -> list[int]:
    """Cut points (0, ..., size) at least `chunk` bytes apart, each just after a document:
    after a blank line (text) or a line end (jsonl)."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        while cuts[-1] + chunk < size:
            f.seek(cuts[-1] + chunk)
            f.readline()  # finish the line the seek landed in
            if fmt == "text":
                while True:
                    line = f.readline()
                    if not line or not line.strip():
                        break
            pos = f.tell()
            if pos >= size:
                break
            cuts.append(pos)
    return cuts + [size]


def _units(inputs: Sequence[str], opts: _Options, chunk: int) -> list[dict]:
    if opts.format == "tfds":
        from jaxformer.data.sources import tfds_source

        n = len(tfds_source(opts.tfds_name, split=opts.split, data_dir=opts.data_dir))
        return [
            {"tfds": opts.tfds_name, "split": opts.split, "start": s, "end": min(s + _TFDS_UNIT, n)}
            for s in range(0, n, _TFDS_UNIT)
        ]
    units = []
    for path in _expand(inputs):
        cuts = _boundaries(path, opts.format, chunk)
        units += [{"path": path, "start": a, "end": b} for a, b in zip(cuts, cuts[1:])]
    return units


# ---- reading one unit -----------------------------------------------------------------
def _skip_or_raise(opts, skipped, reason, message):
    if opts.errors == "raise":
        raise ValueError(message)
    skipped[reason] += 1


def _lines(raw: bytes, unit: dict, opts: _Options, skipped) -> Iterator[str]:
    """The unit's lines as str; non-UTF-8 lines raise or are skipped and counted."""
    try:
        yield from raw.decode("utf-8").split("\n")
        return
    except UnicodeDecodeError:
        pass
    offset = unit["start"]
    for line in raw.split(b"\n"):
        try:
            yield line.decode("utf-8")
        except UnicodeDecodeError as e:
            _skip_or_raise(
                opts,
                skipped,
                "non-UTF-8 lines",
                f"{unit['path']}: line at byte {offset} is not UTF-8 "
                f"({line[e.start : e.start + 4]!r}); re-encode it or pass --errors skip",
            )
            yield ""  # keeps the line structure (documents stay apart)
        offset += len(line) + 1


def _unit_texts(unit: dict, opts: _Options, skipped, digest) -> Iterator:
    """Yields the unit's documents (str) or, for pairs, (source, target) tuples."""
    if "tfds" in unit:
        from jaxformer.data.sources import tfds_source

        src = tfds_source(unit["tfds"], split=unit["split"], data_dir=opts.data_dir)
        for i in range(unit["start"], unit["end"]):
            ex = src[i]
            if opts.kind == "pairs":
                pair = tuple(_text(ex[f]) for f in (opts.source_field, opts.target_field))
                digest.update(json.dumps(pair).encode())
                yield pair
            else:
                text = _text(ex[opts.field])
                digest.update(text.encode("utf-8", "surrogatepass"))
                yield text
        return
    with open(unit["path"], "rb") as f:
        f.seek(unit["start"])
        raw = f.read(unit["end"] - unit["start"])
    digest.update(raw)
    lines = _lines(raw, unit, opts, skipped)
    if opts.format == "text":
        doc = []
        for line in itertools.chain(lines, [""]):
            if line.strip():
                doc.append(line)
            elif doc:
                yield "\n".join(doc)
                doc = []
        return
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        fields = (opts.source_field, opts.target_field) if opts.kind == "pairs" else (opts.field,)
        try:
            values = json_strings(line, fields)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            _skip_or_raise(
                opts,
                skipped,
                "bad JSONL lines",
                f"{unit['path']}: line {n + 1} of the range from byte {unit['start']}: "
                f"cannot read {list(fields)}: {e!r}; fix it or pass --errors skip",
            )
            continue
        yield values if opts.kind == "pairs" else values[0]


def _text(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


# ---- writing one shard ----------------------------------------------------------------
def _file_sum(path: str) -> dict:
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return {"bytes": size, "crc32": f"{crc:08x}"}


def _save(path: str, array: np.ndarray) -> dict:
    tmp = path + ".tmp.npy"
    np.save(tmp, array)
    os.replace(tmp, path)
    return _file_sum(path)


def _concat(ids: list, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Flat ids and [n+1] offsets from a list of id lists."""
    lengths = np.fromiter((len(x) for x in ids), np.int64, len(ids))
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype, int(offsets[-1]))
    return flat, offsets


def _token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.int32


class _Writer:
    """Tokenizes documents (or pairs) into growing arrays, a batch of sentences at a time."""

    def __init__(self, tok, kind: str):
        self.tok, self.kind = tok, kind
        self.dtype = _token_dtype(tok.vocab_size)
        self.parts = collections.defaultdict(list)  # name -> list of arrays
        self.pending, self.doc_sizes = [], []
        self.counts = collections.Counter()

    def _encode(self, texts):
        return [e.ids for e in self.tok.hf.encode_batch(texts, add_special_tokens=False)]

    def add_document(self, text: str, skipped) -> None:
        from jaxformer.data.sources import split_sentences

        sentences = split_sentences(text)
        if not sentences:
            skipped["empty documents"] += 1
            return
        self.pending.append(sentences)
        if sum(map(len, self.pending)) >= _ENCODE_BATCH:
            self.flush(skipped)

    def flush(self, skipped) -> None:
        if not self.pending:
            return
        ids = iter(self._encode([s for doc in self.pending for s in doc]))
        kept = []
        for doc in self.pending:
            sents = [x for x in (next(ids) for _ in doc) if x]
            if sents:
                kept += sents
                self.doc_sizes.append(len(sents))
            else:
                skipped["empty documents"] += 1
        self.pending = []
        if kept:
            flat, offsets = _concat(kept, self.dtype)
            self.parts["tokens"].append(flat)
            self.parts["sentence_lengths"].append(np.diff(offsets))

    def add_pairs(self, pairs, skipped) -> None:
        pairs = [(a.strip(), b.strip()) for a, b in pairs]
        good = [(a, b) for a, b in pairs if a and b]
        skipped["pairs with an empty side"] += len(pairs) - len(good)
        if not good:
            return
        for side, texts in zip(("source", "target"), zip(*good)):
            flat, offsets = _concat(self._encode(list(texts)), self.dtype)
            self.parts[side].append(flat)
            self.parts[side + "_lengths"].append(np.diff(offsets))

    def arrays(self) -> dict[str, np.ndarray]:
        def cat(name, dtype):
            parts = self.parts.get(name, [])
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

        def offsets(lengths):
            out = np.zeros(len(lengths) + 1, np.int64)
            np.cumsum(lengths, out=out[1:])
            return out

        if self.kind == "pairs":
            out = {}
            for side in ("source", "target"):
                out[side] = cat(side, self.dtype)
                out[side + "_offsets"] = offsets(cat(side + "_lengths", np.int64))
            return out
        return {
            "tokens": cat("tokens", self.dtype),
            "sentences": offsets(cat("sentence_lengths", np.int64)),
            "documents": offsets(np.asarray(self.doc_sizes, np.int64)),
        }


_SHARD_FILES = {
    "pretraining": ("tokens", "sentences", "documents"),
    "pairs": ("source", "source_offsets", "target", "target_offsets"),
}


def _shard_path(out: str, k: int, name: str) -> str:
    return os.path.join(out, "shards", f"{k:05d}.{name}" + ("" if name == "json" else ".npy"))


def _read_record(out: str, k: int) -> dict | None:
    try:
        with open(_shard_path(out, k, "json")) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def _shard_ok(out: str, k: int, record: dict) -> bool:
    for name, want in record["files"].items():
        path = _shard_path(out, k, name)
        if not os.path.exists(path) or os.path.getsize(path) != want["bytes"]:
            return False
        if _file_sum(path) != want:
            return False
    return True


_WORKER_TOKENIZER = None


def _init_worker(tok_dir: str, one_thread: bool = True) -> None:
    global _WORKER_TOKENIZER
    if one_thread:
        os.environ["RAYON_NUM_THREADS"] = "1"  # one process per core already
    from jaxformer.data.tokenizers import load_tokenizer

    _WORKER_TOKENIZER = load_tokenizer(tok_dir)


def _unit_digest(unit, opts) -> str:
    d = hashlib.blake2b(digest_size=16)
    for _ in _unit_texts(unit, dataclasses.replace(opts, errors="skip"), collections.Counter(), d):
        pass
    return d.hexdigest()


def _do_unit(job) -> dict:
    """Writes shard k from its unit (or keeps a verified one); returns its record."""
    k, unit, opts, out, signature, resume = job
    old = _read_record(out, k) if resume else None
    if (
        old is not None
        and old.get("unit") == unit
        and old.get("signature") == signature
        and _shard_ok(out, k, old)
        and old["input_blake2b"] == _unit_digest(unit, opts)
    ):
        return dict(old, kept=True)
    skipped = collections.Counter()
    digest = hashlib.blake2b(digest_size=16)
    writer = _Writer(_WORKER_TOKENIZER, opts.kind)
    texts = _unit_texts(unit, opts, skipped, digest)
    if opts.kind == "pairs":
        while batch := list(itertools.islice(texts, _ENCODE_BATCH)):
            writer.add_pairs(batch, skipped)
    else:
        for text in texts:
            writer.add_document(text, skipped)
        writer.flush(skipped)
    arrays = writer.arrays()
    files = {name: _save(_shard_path(out, k, name), arrays[name]) for name in arrays}
    if opts.kind == "pairs":
        counts = {"pairs": len(arrays["source_offsets"]) - 1}
    else:
        counts = {
            "documents": len(arrays["documents"]) - 1,
            "sentences": len(arrays["sentences"]) - 1,
            "tokens": len(arrays["tokens"]),
        }
    record = {
        "unit": unit,
        "signature": signature,
        "input_blake2b": digest.hexdigest(),
        "input_bytes": unit["end"] - unit["start"] if "path" in unit else 0,
        "counts": counts,
        "skipped": dict(sorted(skipped.items())),
        "files": files,
    }
    tmp = _shard_path(out, k, "json") + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, _shard_path(out, k, "json"))
    return dict(record, kept=False)


# ---- the tokenizer ----------------------------------------------------------------------
def _sample(units, opts, sample_bytes: int) -> list[str]:
    """A bounded, deterministic sample: the first documents of every unit, an equal share of
    `sample_bytes` each."""
    share = max(1, sample_bytes // max(1, len(units)))
    out = []
    for unit in units:
        size = 0
        for text in _unit_texts(unit, opts, collections.Counter(), hashlib.blake2b()):
            text = "\n".join(text) if isinstance(text, tuple) else text
            out.append(text)
            size += len(text)
            if size >= share:
                break
    return out


def tokenizer_sha(tok_dir: str) -> str:
    """SHA-256 of a tokenizer directory's tokenizer.json (the store's tokenizer fingerprint)."""
    with open(os.path.join(tok_dir, "tokenizer.json"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _store_tokenizer(out, units, opts, tokenizer, family, vocab_size, sample_bytes, resume):
    from jaxformer.data.tokenizers import load_tokenizer, train_tokenizer

    tok_dir = os.path.join(out, "tokenizer")
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
        tmp = tok_dir + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tok.save(tmp)
        if os.path.exists(tok_dir):
            if tokenizer_sha(tmp) == tokenizer_sha(tok_dir):
                shutil.rmtree(tmp)
                return tok_dir
            if resume:
                raise StoreError(
                    f"{out} was started with another tokenizer than {tokenizer}; "
                    "prepare into a new --output"
                )
            shutil.rmtree(tok_dir)
        os.replace(tmp, tok_dir)
        return tok_dir
    if resume and os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        return tok_dir  # trained deterministically from the same sample: keep it
    if family is None or vocab_size is None:
        raise ValueError("give --tokenizer DIR, or --tokenizer-family and --vocab-size")
    texts = _sample(units, opts, sample_bytes)
    if not any(t.strip() for t in texts):
        raise StoreError("the input holds no text: nothing to train a tokenizer on")
    tok = train_tokenizer(texts, family, vocab_size=vocab_size)
    tmp = tok_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save(tmp)
    shutil.rmtree(tok_dir, ignore_errors=True)
    os.replace(tmp, tok_dir)
    return tok_dir


# ---- prepare ----------------------------------------------------------------------------
def _parse_format(fmt: str, data_dir, split) -> dict:
    if fmt in ("text", "jsonl"):
        return {"format": fmt}
    if fmt.startswith("tfds:") and len(fmt) > 5:
        return {"format": "tfds", "tfds_name": fmt[5:], "data_dir": data_dir, "split": split}
    raise ValueError(f"--format must be text, jsonl or tfds:NAME[/CONFIG], got {fmt!r}")


def prepare(
    inputs: Sequence[str] | str,
    output: str,
    *,
    format: str = "text",
    field: str = "text",
    data_dir: str | None = None,
    split: str = "train",
    tokenizer: str | None = None,
    tokenizer_family: str | None = "bert",
    vocab_size: int | None = 8000,
    resume: bool = False,
    workers: int | None = None,
    errors: str = "raise",
    pairs: bool = False,
    source_field: str = "source",
    target_field: str = "target",
    progress: bool = True,
    chunk_bytes: int = _CHUNK_BYTES,
    sample_bytes: int = _SAMPLE_BYTES,
) -> dict:
    """Prepares a store at `output` from text / JSONL files or a tfds dataset; returns the
    manifest. See the module docstring for the layout and `jaxformer prepare -h` for the
    options. Raises FileExistsError if `output` already holds a store (or an unfinished one)
    and `resume` is False; with `resume`, verified shards are kept and the rest redone."""
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    opts = _Options(
        field=field,
        errors=errors,
        kind="pairs" if pairs else "pretraining",
        source_field=source_field,
        target_field=target_field,
        **_parse_format(format, data_dir, split),
    )
    if opts.format != "tfds" and not inputs:
        raise ValueError(f"--format {format} needs at least one --input GLOB")
    manifest_path = os.path.join(output, "manifest.json")
    if os.path.isdir(output) and os.listdir(output) and not resume:
        what = "a prepared store" if os.path.exists(manifest_path) else "an unfinished store"
        raise FileExistsError(
            f"{output} already holds {what}: pass --resume to verify and finish it, "
            "or choose another --output"
        )
    os.makedirs(os.path.join(output, "shards"), exist_ok=True)
    t0 = time.perf_counter()
    units = _units(inputs, opts, chunk_bytes)
    tok_dir = _store_tokenizer(
        output, units, opts, tokenizer, tokenizer_family, vocab_size, sample_bytes, resume
    )
    from jaxformer.data.tokenizers import load_tokenizer

    tok = load_tokenizer(tok_dir)
    signature = {
        "format_version": FORMAT_VERSION,
        "tokenizer_sha256": tokenizer_sha(tok_dir),
        **{k: v for k, v in dataclasses.asdict(opts).items() if k != "data_dir"},
    }
    jobs = [(k, u, opts, output, signature, resume) for k, u in enumerate(units)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    records = _run_jobs(jobs, workers, tok_dir, progress)
    _remove_stale(output, len(units))
    manifest = _manifest(records, opts, tok, signature, inputs)
    if opts.kind == "pretraining" and manifest["counts"]["documents"] == 0:
        raise StoreError(
            f"no documents in the input (skipped: {manifest['skipped'] or 'none'}): "
            "check --input, --format and --field"
        )
    if opts.kind == "pairs" and manifest["counts"]["pairs"] == 0:
        raise StoreError(f"no translation pairs in the input (skipped: {manifest['skipped']})")
    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, manifest_path)
    kept = sum(r["kept"] for r in records)
    logging.info(
        "prepared %s: %s in %.1f s (%d shards kept, %d written)",
        output,
        manifest["counts"],
        time.perf_counter() - t0,
        kept,
        len(records) - kept,
    )
    return manifest


def _run_jobs(jobs, workers, tok_dir, progress) -> list[dict]:
    total = sum(j[1]["end"] - j[1]["start"] for j in jobs)
    unit_name = "B" if "path" in jobs[0][1] else "ex"
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit=unit_name, unit_scale=True, desc="prepare", file=sys.stderr)
    records = []

    def done(record):
        records.append(record)
        if bar is not None:
            bar.update(record["unit"]["end"] - record["unit"]["start"])

    if workers == 1:
        _init_worker(tok_dir, one_thread=False)
        for job in jobs:
            done(_do_unit(job))
    else:
        # spawn: workers start clean (no copy of this process's threads or JAX state).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(tok_dir,)) as pool:
            for record in pool.imap(_do_unit, jobs):
                done(record)
    if bar is not None:
        bar.close()
    return records


def _remove_stale(out: str, n: int) -> None:
    """Shard files of an earlier, larger plan would look like part of this store."""
    for name in os.listdir(os.path.join(out, "shards")):
        m = re.match(r"(\d+)\.", name)
        if not m or int(m.group(1)) >= n or name.endswith(".tmp") or ".tmp." in name:
            os.remove(os.path.join(out, "shards", name))


def _manifest(records, opts, tok, signature, inputs) -> dict:
    counts, skipped = collections.Counter(), collections.Counter()
    per_input = {}
    for r in records:
        counts.update(r["counts"])
        skipped.update(r["skipped"])
        key = r["unit"].get("path") or f"tfds:{r['unit']['tfds']}[{r['unit']['split']}]"
        h = per_input.setdefault(key, {"bytes": 0, "blake2b": hashlib.blake2b(digest_size=16)})
        h["bytes"] += r["input_bytes"]
        h["blake2b"].update(r["input_blake2b"].encode())
    return {
        "format_version": FORMAT_VERSION,
        "kind": opts.kind,
        "options": {k: v for k, v in signature.items() if k != "tokenizer_sha256"},
        "tokenizer": {
            "family": tok.family,
            "vocab_size": tok.vocab_size,
            "sha256": signature["tokenizer_sha256"],
            "token_dtype": np.dtype(_token_dtype(tok.vocab_size)).name,
        },
        "inputs": [
            {"name": k, "bytes": v["bytes"], "blake2b": v["blake2b"].hexdigest()}
            for k, v in per_input.items()
        ],
        "counts": dict(sorted(counts.items())),
        "skipped": dict(sorted(skipped.items())),
        "shards": [
            {"counts": r["counts"], "files": r["files"], "unit": r["unit"]} for r in records
        ],
    }


# ---- reading ----------------------------------------------------------------------------
def _read_manifest(path: str, kind: str) -> dict:
    mpath = os.path.join(path, "manifest.json")
    if not os.path.exists(mpath):
        hint = (
            "it is unfinished: run `jaxformer prepare ... --resume` to finish it"
            if os.path.isdir(os.path.join(path, "shards"))
            else "prepare one with `jaxformer prepare --input GLOB --output DIR ...`"
        )
        raise StoreError(f"{path} is not a store (no manifest.json); {hint}")
    with open(mpath) as f:
        m = json.load(f)
    if m.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path} is a store of format version {m.get('format_version')}, this jaxformer "
            f"reads version {FORMAT_VERSION}: prepare it again with this version"
        )
    if m.get("kind") != kind:
        raise StoreError(f"{path} is a {m.get('kind')} store, not a {kind} store")
    return m


def _map(path: str) -> np.ndarray:
    """A read-only mmap of a .npy file, as a plain ndarray (np.memmap's subclass hooks cost
    more than the reads themselves on small slices)."""
    return np.load(path, mmap_mode="r").view(np.ndarray)


class _ReadFile:
    """A 1-D .npy file read with `pread`: `f[a:b]` -> ndarray, `len(f)`.

    Used for the token arrays, the bulk of a store: a touched page of a mapped file maps its
    whole page-cache folio (1 MB and more on recent kernels) into the process, so scattered
    reads through mmap grow RSS towards the store's size; reads do not."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0
            if major != 1:
                read = np.lib.format.read_array_header_2_0
            shape, _, self.dtype = read(f)
            self.start = f.tell()
        if len(shape) != 1:
            raise ValueError(f"expected a 1-D array, got shape {shape}")
        self.size, self.path = shape[0], path
        self.fd = os.open(path, os.O_RDONLY)

    def __reduce__(self):  # a file descriptor means nothing in another process: reopen
        return _ReadFile, (self.path,)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index) -> np.ndarray:
        if not isinstance(index, slice):
            return self[index : index + 1][0]
        a, b, step = index.indices(self.size)
        if step != 1:
            raise ValueError("only contiguous slices")
        return self.read(a, b)

    def read(self, a: int, b: int) -> np.ndarray:
        """Elements [a, b) (0 <= a, b <= len) with one `pread`."""
        n = max(0, b - a) * self.dtype.itemsize
        data = os.pread(self.fd, n, self.start + a * self.dtype.itemsize)
        return np.frombuffer(data, self.dtype)

    def __del__(self):
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)


def _reopen(cls, path: str):
    return cls(path, verify=False)


class _Shards:
    """The shard files of a store, checked against the manifest and opened with mmap."""

    def __init__(self, path: str, kind: str, verify: bool):
        self.path = path
        self.manifest = _read_manifest(path, kind)
        self.arrays = []
        for k, shard in enumerate(self.manifest["shards"]):
            arrays = {}
            for name, want in shard["files"].items():
                f = _shard_path(path, k, name)
                fix = f"run `jaxformer prepare ... --output {path} --resume` to redo it"
                if not os.path.exists(f):
                    raise StoreError(f"store shard {f} is missing; {fix}")
                if os.path.getsize(f) != want["bytes"]:
                    raise StoreError(
                        f"store shard {f} has {os.path.getsize(f)} bytes, the manifest says "
                        f"{want['bytes']} (truncated?); {fix}"
                    )
                if verify and _file_sum(f) != want:
                    raise StoreError(f"store shard {f} fails its CRC-32 check (corrupted); {fix}")
                try:
                    big = name in ("tokens", "source", "target")
                    arrays[name] = _ReadFile(f) if big else _map(f)
                except ValueError as e:
                    raise StoreError(f"store shard {f} cannot be read ({e}); {fix}") from e
            self.arrays.append(arrays)

    def __reduce__(self):
        # Sent to a loader worker as its path (the mapped arrays would be copied whole).
        return _reopen, (type(self), self.path)

    def tokenizer(self):
        from jaxformer.data.tokenizers import load_tokenizer

        return load_tokenizer(os.path.join(self.path, "tokenizer"))


class Store(_Shards):
    """A pretraining store: documents of sentences of token ids, read through mmap.

    Global document d lives in shard `shard_of_document(d)`; `document(d)` returns its
    sentences. verify=True checks every shard's CRC-32 on open (sizes are always checked).
    """

    def __init__(self, path: str, *, verify: bool = True):
        super().__init__(path, "pretraining", verify)
        self.tokens = [a["tokens"] for a in self.arrays]
        self.sentences = [a["sentences"] for a in self.arrays]
        self.documents = [a["documents"] for a in self.arrays]
        docs = [len(d) - 1 for d in self.documents]
        self.doc_base = np.concatenate([[0], np.cumsum(docs)]).astype(np.int64)
        self.num_documents = int(self.doc_base[-1])
        self.num_tokens = int(self.manifest["counts"]["tokens"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])

    def shard_of_document(self, d: int) -> tuple[int, int]:
        """(shard, document index within the shard) of global document d."""
        k = int(np.searchsorted(self.doc_base, d, "right")) - 1
        return k, d - int(self.doc_base[k])

    def document(self, d: int) -> list[np.ndarray]:
        k, j = self.shard_of_document(d)
        s0, s1 = int(self.documents[k][j]), int(self.documents[k][j + 1])
        off = self.sentences[k]
        return [np.asarray(self.tokens[k][off[s] : off[s + 1]], np.int32) for s in range(s0, s1)]


class PairStore(_Shards):
    """A translation store: `len(store)` pairs, `store[i]` -> (source ids, target ids)."""

    def __init__(self, path: str, *, verify: bool = True):
        super().__init__(path, "pairs", verify)
        n = [len(a["source_offsets"]) - 1 for a in self.arrays]
        self.base = np.concatenate([[0], np.cumsum(n)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.base[-1])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"pair {i} out of range for a store of {len(self)}")
        k = int(np.searchsorted(self.base, i, "right")) - 1
        j, a = i - int(self.base[k]), self.arrays[k]
        out = []
        for side in ("source", "target"):
            off = a[side + "_offsets"]
            out.append(np.asarray(a[side][off[j] : off[j + 1]], np.int32))
        return out[0], out[1]


def open_store(path: str, *, verify: bool = True) -> Store:
    """`Store(path)`: a pretraining store, checked (see `Store`)."""
    return Store(path, verify=verify)


# ---- data.source -> store --------------------------------------------------------------
def _cache_dir(cache_dir: str | None) -> str:
    return cache_dir or os.environ.get(
        "JAXFORMER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxformer")
    )


def store_for_source(
    source: str,
    *,
    tokenizer: str | None = None,
    family: str,
    vocab_size: int,
    cache_dir: str | None = None,
) -> str:
    """The store directory for a `data.source`: "store:DIR" is DIR; "default_corpus" and
    "text:GLOB" are prepared once (with `tokenizer`, else one of `family` / `vocab_size`
    trained on them) into `$JAXFORMER_CACHE/stores/`, keyed by the inputs (paths, sizes,
    modification times) and options, and reused after that."""
    if source.startswith("store:"):
        return source[len("store:") :]
    cache = os.path.join(_cache_dir(cache_dir), "stores")
    if source == "default_corpus":
        from jaxformer.data.corpus import default_corpus

        version = ".".join(str(v) for v in sys.version_info[:3])
        name, inputs = "default_corpus", [os.path.join(cache, f"default_corpus-py{version}.txt")]
        if not os.path.exists(inputs[0]):
            os.makedirs(cache, exist_ok=True)
            tmp = f"{inputs[0]}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("\n\n".join(default_corpus()) + "\n")
            os.replace(tmp, inputs[0])
        key = [version]
    elif source.startswith("text:"):
        name, inputs = "text", _expand([source[len("text:") :]])
        key = [(os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns) for p in inputs]
    else:
        raise ValueError(
            f"unknown data.source {source!r}; use 'store:DIR' (see `jaxformer prepare`), "
            "'default_corpus', 'text:GLOB' or 'synthetic'"
        )
    tok_sha = tokenizer_sha(tokenizer) if tokenizer else None
    digest = hashlib.sha256(
        json.dumps([FORMAT_VERSION, key, family, vocab_size, tok_sha]).encode()
    ).hexdigest()[:16]
    out = os.path.join(cache, f"{name}-{digest}")
    if os.path.exists(os.path.join(out, "manifest.json")):
        return out
    tmp = f"{out}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    logging.info("preparing %s into the store %s (once)", source, out)
    prepare(
        inputs,
        tmp,
        tokenizer=tokenizer,
        tokenizer_family=family,
        vocab_size=vocab_size,
        progress=False,
    )
    try:
        os.rename(tmp, out)  # atomic; another process may have won the race
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---- the `jaxformer prepare` command ----------------------------------------------------
def add_prepare_parser(sub) -> None:
    """Registers `prepare` on the `jaxformer` command's sub-parsers."""
    s = sub.add_parser(
        "prepare",
        help="tokenize a corpus once into a store for pretraining (store:DIR)",
        description="Tokenize a corpus into a sharded store that train.py reads with "
        "--config.data.source=store:DIR. See docs/data.md.",
    )
    s.add_argument("--input", action="append", default=[], help="file or glob (repeatable)")
    s.add_argument("--output", required=True, help="the store directory")
    s.add_argument("--format", default="text", help="text | jsonl | tfds:NAME[/CONFIG]")
    s.add_argument("--field", default="text", help="the text field (jsonl, tfds)")
    s.add_argument("--split", default="train", help="tfds split")
    s.add_argument("--data-dir", default=None, help="tfds data_dir")
    s.add_argument("--tokenizer", default=None, help="a tokenizer directory or tokenizer.json")
    s.add_argument("--tokenizer-family", default=None, choices=["bert", "roberta", "albert"])
    s.add_argument("--vocab-size", type=int, default=None)
    s.add_argument("--resume", action="store_true", help="keep verified shards, redo the rest")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.add_argument("--errors", default="raise", choices=["raise", "skip"])
    s.add_argument("--pairs", action="store_true", help="a translation pair store")
    s.add_argument("--source-field", default="source")
    s.add_argument("--target-field", default="target")
    s.add_argument("--no-progress", action="store_true")


def _prepare_options(args) -> dict:
    """`prepare`'s keywords from the parsed options: each option's dest is the keyword of
    its name, but the sub-command, --input and --output (prepare's positional arguments) and
    --no-progress (the negated `progress`). An option named otherwise fails loudly there."""
    return {
        k: v for k, v in vars(args).items() if k not in ("task", "input", "output", "no_progress")
    }


def prepare_main(args) -> int:
    """Runs `jaxformer prepare`; bad input exits 2 with a one-line error."""
    if args.tokenizer is None and (args.tokenizer_family is None or args.vocab_size is None):
        print(
            "jaxformer prepare: error: give --tokenizer DIR, or --tokenizer-family and "
            "--vocab-size to train one",
            file=sys.stderr,
        )
        return 2
    try:
        m = prepare(
            args.input, args.output, progress=not args.no_progress, **_prepare_options(args)
        )
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"jaxformer prepare: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"output": args.output, **m["counts"], "skipped": m["skipped"]}))
    return 0
