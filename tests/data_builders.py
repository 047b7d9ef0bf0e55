"""Data the data tests build alike: the same statically masked instances one per row and
packed, and a pair store prepared from German-English JSONL rows."""

import json
import os

import numpy as np

from jaxformer.data.pretraining import PretrainingConfig, create_instances, pretraining_dataset


def plain_and_packed(docs, tok, seq_len):
    """24 statically masked instances of the first 15 documents (no sentence objective) as
    stacked arrays: one instance per row, and packed several per row."""
    cfg = PretrainingConfig(max_seq_len=seq_len, objective="none", short_seq_prob=0.6)
    insts = create_instances(docs[:15], tok, cfg, seed=0)[0][:24]
    stack = lambda ds: {k: np.stack([ds[i][k] for i in range(len(ds))]) for k in ds[0]}
    plain = pretraining_dataset(insts, tok, cfg, masking="static", seed=0)
    packed = pretraining_dataset(insts, tok, cfg, masking="static", seed=0, pack=True)
    return stack(plain), stack(packed)


def prepare_pairs(folder, rows, **tokenizer):
    """`rows` ({"de": source, "en": target}) written to folder/p.jsonl and prepared into the
    pair store folder/pairs with the `tokenizer` options; returns prepare's manifest."""
    from jaxformer.data.store import prepare

    path = os.path.join(folder, "p.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return prepare(
        path,
        os.path.join(folder, "pairs"),
        format="jsonl",
        pairs=True,
        source_field="de",
        target_field="en",
        progress=False,
        **tokenizer,
    )
