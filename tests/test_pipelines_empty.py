"""Small inputs to every pipeline and CLI command: an empty list is an empty result (the
Python API), no input at all is a one-line error with exit status 2 (the CLI), and an empty
text, question, context, query or document is a one-line PipelineError."""

import io
import sys

import numpy as np
import pytest

from test_pipelines_helpers import NER_LABELS, VOCAB, make_hf_dir

from jaxformer import cli
from jaxformer.inference import pipelines


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    import jax

    from jaxformer.convert import save_pretrained
    from jaxformer.data.tokenizers import load_tokenizer
    from jaxformer.models.transformer import Transformer, TransformerConfig

    root = tmp_path_factory.mktemp("empty")
    out = {
        "mlm": make_hf_dir(root / "mlm", "mlm"),
        "cls": make_hf_dir(root / "cls", "sequence_classification", labels=["neg", "pos"]),
        "ner": make_hf_dir(root / "ner", "token_classification", labels=NER_LABELS),
        "qa": make_hf_dir(root / "qa", "question_answering"),
    }
    tok = load_tokenizer(out["mlm"])
    cfg = TransformerConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_heads=2, intermediate_size=32,
        num_encoder_layers=1, num_decoder_layers=1, max_position_embeddings=32,
        pad_token_id=tok.pad_id, eos_token_id=tok.sep_id,
        decoder_start_token_id=tok.cls_id, position_layout="halves", layer_norm_eps=1e-5,
        final_logits_bias=True,
    )  # fmt: skip
    model = Transformer(cfg)
    params = jax.jit(lambda k: model.init(k, **model.dummy_inputs())["params"])(jax.random.key(0))
    save_pretrained(model, jax.device_get(params), str(root / "mt"))
    tok.save(str(root / "mt"))
    out["mt"] = str(root / "mt")
    return out


@pytest.fixture(scope="module")
def pipes(dirs):
    return {
        "fill": pipelines.FillMask(dirs["mlm"]),
        "cls": pipelines.Classify(dirs["cls"]),
        "tag": pipelines.Tag(dirs["ner"]),
        "qa": pipelines.Answer(dirs["qa"]),
        "embed": pipelines.SentenceEmbed(dirs["cls"]),
        "mt": pipelines.Translate(dirs["mt"]),
    }


def test_an_empty_list_is_an_empty_result(pipes):
    assert pipes["fill"]([]) == []
    assert pipes["cls"]([]) == []
    assert pipes["tag"]([]) == []
    assert pipes["qa"]([], []) == []
    vecs = pipes["embed"]([])
    assert isinstance(vecs, np.ndarray) and vecs.shape == (0, 32)
    assert pipes["embed"].similar("paris", []) == []
    assert pipes["mt"]([]) == []
    # ... and the same pipelines still answer real input afterwards.
    assert len(pipes["fill"](["paris is the [MASK] ."])) == 1
    assert pipes["embed"].similar("paris", ["paris", "rome"])[0]["text"] == "paris"


@pytest.mark.parametrize(
    "case, message",
    [
        (lambda p: p["fill"](["paris [MASK]", " "]), "fill-mask: text is empty"),
        (lambda p: p["cls"](("paris", "")), "classify: text_pair is empty"),
        (lambda p: p["tag"]("\n"), "tag: text is empty"),
        (lambda p: p["qa"]("where?", "  "), "answer: context is empty"),
        (lambda p: p["qa"]("", "paris is big."), "answer: question is empty"),
        (lambda p: p["embed"].similar("", ["paris"]), "embed: query is empty"),
        (lambda p: p["embed"].summarize(" \n "), "summarize: the text is empty"),
        (lambda p: p["mt"](["paris", ""]), "translate: empty text"),
    ],
)
def test_an_empty_text_is_a_one_line_error(pipes, case, message):
    with pytest.raises(pipelines.PipelineError, match=message) as e:
        case(pipes)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "argv, stdin, message",
    [
        (["fill-mask", "--model", "mlm"], "", "fill-mask: no input texts"),
        (["fill-mask", "--model", "mlm"], "\n  \n", "fill-mask: no input texts"),
        (["classify", "--model", "cls"], "", "classify: no input texts"),
        (["tag", "--model", "ner"], "", "tag: no input texts"),
        (["embed", "--model", "cls"], "", "embed: no input texts"),
        (["similar", "--model", "cls", "--query", "paris"], "", "similar: no input texts"),
        (["similar", "--model", "cls", "--query", " ", "rome"], "", "query is empty"),
        (["summarize", "--model", "cls"], "", "summarize: the text is empty"),
        (["translate", "--model", "mt"], "", "translate: no input texts"),
        (["answer", "--model", "qa", "--question", "where?"], "", "answer: context is empty"),
        (["answer", "--model", "qa", "--context", "paris is big."], "", "give --question"),
    ],
)
def test_cli_without_input_exits_2_with_one_line(dirs, argv, stdin, message, capsys, monkeypatch):
    argv = [dirs[a] if argv[i - 1] == "--model" else a for i, a in enumerate(argv)]
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and err.count("\n") == 0, err
