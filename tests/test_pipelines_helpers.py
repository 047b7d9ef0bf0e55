"""Tiny random-init HuggingFace models saved to disk with a hand-written WordPiece vocab, for
the pipeline tests (no network, no downloaded weights)."""

import os

WORDS = (
    "the of and to a in is was on at by it he she they his her what where who when "
    "which how paris france capital city london england berlin germany rome italy river "
    "john smith mary jones works lives born at google microsoft company new york madrid "
    "spain largest country biggest population famous tower museum bridge old small big "
    "many people visit every year morning evening train station went with friend "
    "beautiful park north south east west"
).split()
VOCAB = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list(".,?!'-")
    + WORDS
    + ["##s", "##ing", "##ed", "##er", "##a", "##o", "##n", "##ia", "##ton"]
)
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]

HEAD_CLASS = {
    "mlm": "BertForMaskedLM",
    "sequence_classification": "BertForSequenceClassification",
    "token_classification": "BertForTokenClassification",
    "question_answering": "BertForQuestionAnswering",
    None: "BertModel",
}


def hf_tokenizer():
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})


def make_hf_dir(
    path, head, *, labels=None, seed=0, max_position=128, init_range=0.2, problem_type=None
):
    """Saves a 2-layer H=32 BERT with `head` (our head names) and the tokenizer to `path`."""
    import torch
    import transformers

    kw = {}
    if labels is not None:
        kw = dict(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    if problem_type:
        kw["problem_type"] = problem_type
    cfg = transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_position,
        initializer_range=init_range,
        **kw,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, HEAD_CLASS[head])(cfg).eval()
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    hf_tokenizer().save_pretrained(path)
    return str(path)
