"""Writes the example files of docs/finetuning.md (generated, learnable data):

- reviews_{train,eval}.csv: columns review, product, label (negative / neutral / positive,
  decided by the review's wording); the product is the second text of the pair.
- people_{train,eval}.jsonl: {"tokens": [...], "tags": [...]} with BIO tags PER and LOC.

    python examples/own_data/generate.py
"""

import csv
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
PRODUCTS = ["kettle", "toaster", "blender", "lamp", "backpack", "headphones", "umbrella", "desk"]
WORDS = {
    "positive": ["great", "excellent", "lovely", "superb", "reliable", "wonderful"],
    "negative": ["awful", "broken", "terrible", "useless", "flimsy", "disappointing"],
    "neutral": ["ordinary", "average", "standard", "typical", "plain", "usual"],
}
TEMPLATES = [
    "the {p} is {w} and arrived on time",
    "we found this {p} {w} after a week",
    "honestly a {w} {p} for the price",
    "my {p} turned out {w} , as the box said",
]
FIRST = ["anna", "ben", "carla", "david", "elena", "farid", "grace", "hugo", "ines", "jonas"]
LAST = ["smith", "okafor", "novak", "garcia", "tanaka", "muller", "rossi", "larsen"]
CITIES = [["paris"], ["lima"], ["oslo"], ["new", "york"], ["cape", "town"], ["kyoto"]]
SENTENCES = [
    ["{per}", "moved", "to", "{loc}", "last", "year", "."],
    ["yesterday", "{per}", "visited", "{loc}", "with", "friends", "."],
    ["the", "letter", "from", "{loc}", "reached", "{per}", "today", "."],
    ["{per}", "works", "in", "{loc}", "."],
]


def reviews(rng, n):
    rows = []
    for _ in range(n):
        label = rng.choice(sorted(WORDS))
        p = rng.choice(PRODUCTS)
        text = rng.choice(TEMPLATES).format(p=p, w=rng.choice(WORDS[label]))
        rows.append({"review": text, "product": p, "label": label})
    return rows


def people(rng, n):
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for t in rng.choice(SENTENCES):
            if t == "{per}":
                name = [rng.choice(FIRST)] + ([rng.choice(LAST)] if rng.random() < 0.6 else [])
                tokens += name
                tags += ["B-PER"] + ["I-PER"] * (len(name) - 1)
            elif t == "{loc}":
                city = rng.choice(CITIES)
                tokens += city
                tags += ["B-LOC"] + ["I-LOC"] * (len(city) - 1)
            else:
                tokens.append(t)
                tags.append("O")
        rows.append({"tokens": tokens, "tags": tags})
    return rows


def main():
    rng = random.Random(0)
    for split, n in (("train", 240), ("eval", 60)):
        with open(os.path.join(HERE, f"reviews_{split}.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, ["review", "product", "label"])
            w.writeheader()
            w.writerows(reviews(rng, n))
        with open(os.path.join(HERE, f"people_{split}.jsonl"), "w") as f:
            for row in people(rng, n):
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
