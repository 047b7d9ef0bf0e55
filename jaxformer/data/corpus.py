"""The embedded default corpus: docstrings of the Python standard library, no network.

Each stdlib module's source is parsed with `ast` (never imported, so nothing runs) and its
module, class and function docstrings become one document, paragraphs reflowed into lines
(one line per sentence-ish paragraph, so line breaks stay sentence boundaries) and doctest
lines dropped. Modules are read in sorted path order, so on a given Python version the
corpus is identical on every machine. The result is cached as JSONL under
`$JAXFORMER_CACHE` (default `~/.cache/jaxformer`).
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import sysconfig

__all__ = ["default_corpus", "stdlib_docstring_documents"]

# Test suites, IDLE and vendored code hold little prose; skip them.
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "turtledemo",
    "ensurepip",
    "venv",
}


def _clean(doc: str) -> str:
    paragraphs = []
    for para in re.split(r"\n\s*\n", doc):
        lines = [l.strip() for l in para.splitlines()]
        lines = [l for l in lines if l and not l.startswith((">>>", "...", "$ "))]
        if lines:
            paragraphs.append(" ".join(lines))
    return "\n".join(paragraphs)


def _module_document(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return ""
    parts = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                parts.append(_clean(doc))
    return "\n".join(p for p in parts if p)


def stdlib_docstring_documents(min_bytes: int | None = None) -> list[str]:
    """One document per stdlib module (sorted by path); stops once `min_bytes` are collected."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        paths += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    docs, size = [], 0
    for path in sorted(paths, key=lambda p: os.path.relpath(p, root)):
        doc = _module_document(path)
        if doc:
            docs.append(doc)
            size += len(doc.encode("utf-8"))
            if min_bytes is not None and size >= min_bytes:
                break
    return docs


def default_corpus(min_bytes: int = 1_000_000, cache_dir: str | None = None) -> list[str]:
    """At least `min_bytes` of UTF-8 text (whole modules), built once and cached as JSONL.

    Raises RuntimeError if this Python's standard library holds less than `min_bytes`.
    """
    cache_dir = cache_dir or os.environ.get(
        "JAXFORMER_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "jaxformer")
    )
    version = ".".join(str(v) for v in sys.version_info[:3])
    path = os.path.join(cache_dir, f"default_corpus-py{version}-{min_bytes}.jsonl")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    docs = stdlib_docstring_documents(min_bytes)
    size = sum(len(d.encode("utf-8")) for d in docs)
    if size < min_bytes:
        raise RuntimeError(
            f"the standard library at {sysconfig.get_paths()['stdlib']} has only "
            f"{size} bytes of docstrings, fewer than min_bytes={min_bytes}"
        )
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # atomic: concurrent builders never see a half-written cache.
    return docs
