"""Damaged model files: a corrupt, empty or missing config.json, a truncated or corrupt
model.safetensors / sharded index / pytorch_model.bin, and a Marian directory's weights are
each ONE line naming the file: `ModelFileError` from the Python API, exit status 2 from the
`jaxformer` CLI. Also: a --model path relative to the current directory, or one that does
not exist."""

import json
import os
import shutil

import pytest

from test_pipelines_helpers import make_hf_dir

from jaxformer import cli
from jaxformer.convert import ModelFileError, from_pretrained
from jaxformer.inference import pipelines


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_hf_dir(tmp_path_factory.mktemp("good") / "mlm", "mlm")


@pytest.fixture
def model(good, tmp_path):
    """A fresh copy of the good directory to damage."""
    return shutil.copytree(good, tmp_path / "model")


def cli_error(capsys, path):
    code = cli.main(["fill-mask", "--model", str(path), "the [MASK] of it."])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    return err


def truncate(file, keep=0.5):
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


def check(capsys, path, pattern):
    with pytest.raises(ModelFileError, match=pattern) as e:
        pipelines.FillMask(str(path))
    assert "\n" not in str(e.value)
    err = cli_error(capsys, path)
    assert str(e.value) in err and str(path) in err


def test_corrupt_empty_or_missing_config_json(model, capsys):
    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": 32,')
    check(
        capsys,
        model,
        r"^config\.json in .*model is not valid JSON \(.* line 1 column \d+\); re-download",
    )
    (model / "config.json").write_text("")
    check(capsys, model, r"^config\.json in .*model is empty")
    (model / "config.json").write_text("[1, 2]")
    check(capsys, model, r"^config\.json in .*model holds a JSON list, not an object")
    os.remove(model / "config.json")
    check(capsys, model, r"^config\.json is missing in .*model \(it holds model\.safetensors\)")


def test_truncated_or_corrupt_safetensors(model, capsys):
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    truncate(weights)
    check(
        capsys, model, r"^model\.safetensors in .*model is truncated or corrupt \(.+\); re-download"
    )
    weights.write_bytes(b"\xff" * 8 + data[8:])  # a header length that cannot be
    check(capsys, model, r"^model\.safetensors in .*model is truncated or corrupt")
    with pytest.raises(ModelFileError, match="model.safetensors in"):
        from_pretrained(str(model))  # the convert API says the same


def test_sharded_index_and_its_shards(model, capsys):
    from safetensors.numpy import load_file, save_file

    sd = load_file(str(model / "model.safetensors"))
    os.remove(model / "model.safetensors")
    keys = sorted(sd)
    shards = {"model-1.safetensors": keys[::2], "model-2.safetensors": keys[1::2]}
    for name, ks in shards.items():
        save_file({k: sd[k] for k in ks}, str(model / name), metadata={"format": "pt"})
    index = {"weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    assert pipelines.FillMask(str(model))("the [MASK] of it.", top_k=1)  # the sharded form loads
    truncate(model / "model-2.safetensors")
    check(capsys, model, r"^model-2\.safetensors in .*model is truncated or corrupt")
    os.remove(model / "model-2.safetensors")
    check(
        capsys,
        model,
        r"^model-2\.safetensors \(a shard named in model\.safetensors\.index\.json\) is missing",
    )
    (model / "model.safetensors.index.json").write_text('{"weight_map": ')
    check(capsys, model, r"^model\.safetensors\.index\.json in .*model is not valid JSON")
    (model / "model.safetensors.index.json").write_text('{"metadata": {}}')
    check(capsys, model, r"^model\.safetensors\.index\.json in .*model has no 'weight_map'")


def test_truncated_pytorch_model_bin(model, capsys):
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(model / "model.safetensors")), str(model / "pytorch_model.bin"))
    os.remove(model / "model.safetensors")
    assert pipelines.FillMask(str(model))("the [MASK] of it.", top_k=1)  # the .bin form loads
    truncate(model / "pytorch_model.bin")
    check(
        capsys, model, r"^pytorch_model\.bin in .*model is truncated or corrupt \(.+\); re-download"
    )


def test_corrupt_tokenizer_files(model, capsys):
    (model / "tokenizer_config.json").write_text("{")
    check(capsys, model, r"^tokenizer_config\.json in .*model is not valid JSON")
    os.remove(model / "tokenizer_config.json")
    (model / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    check(capsys, model, r"^tokenizer\.json in .*model is corrupt \(.+\); re-download")


def test_weights_of_another_model(model, good, capsys, tmp_path):
    other = make_hf_dir(tmp_path / "cls", "sequence_classification", labels=["a", "b"])
    shutil.copy(os.path.join(other, "model.safetensors"), model / "model.safetensors")
    capsys.readouterr()  # the progress bar of writing it
    check(capsys, model, r"^the weights in .*model do not match its config\.json \(HF weight")


def test_marian_reader_names_the_damaged_file(tmp_path):
    import jax

    from jaxformer.convert import save_pretrained
    from jaxformer.models.transformer import Transformer, TransformerConfig

    cfg = TransformerConfig(
        vocab_size=40, hidden_size=16, num_heads=2, intermediate_size=32,
        num_encoder_layers=1, num_decoder_layers=1, max_position_embeddings=16, pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0, position_layout="halves", layer_norm_eps=1e-5,
        final_logits_bias=True,
    )  # fmt: skip
    model = Transformer(cfg)
    params = jax.jit(lambda k: model.init(k, **model.dummy_inputs())["params"])(jax.random.key(0))
    save_pretrained(model, jax.device_get(params), str(tmp_path / "marian"))
    loaded, _ = from_pretrained(str(tmp_path / "marian"))
    assert loaded.cfg.hidden_size == 16
    truncate(tmp_path / "marian" / "model.safetensors")
    with pytest.raises(ModelFileError, match=r"^model\.safetensors in .*marian is truncated"):
        from_pretrained(str(tmp_path / "marian"))
    (tmp_path / "marian" / "config.json").write_text("{")
    with pytest.raises(ModelFileError, match=r"^config\.json in .*marian is not valid JSON"):
        from_pretrained(str(tmp_path / "marian"))


def test_relative_and_missing_model_paths(good, capsys, monkeypatch):
    parent, name = os.path.split(good)
    monkeypatch.chdir(parent)
    assert cli.main(["fill-mask", "--model", name, "--json", "the [MASK] of it."]) == 0
    assert len(json.loads(capsys.readouterr().out)[0]) == 5
    err = cli_error(capsys, "runs/nowhere")
    assert "model directory 'runs/nowhere' does not exist" in err
    with pytest.raises(FileNotFoundError, match="'runs/nowhere' does not exist"):
        pipelines.FillMask("runs/nowhere")


def test_fine_tuning_from_a_damaged_directory_is_one_line(model, capsys, tmp_path):
    from jaxformer import launch as train_cli

    truncate(model / "model.safetensors")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = train_cli.main(
        [
            "--config",
            os.path.join(root, "configs", "finetune_tiny.py"),
            "--workdir",
            str(tmp_path / "ft"),
            f"--config.init_from=hf:{model}",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert f"model.safetensors in {model} is truncated or corrupt" in err
