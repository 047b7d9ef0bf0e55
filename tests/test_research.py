"""The public API a researcher imports: the README's research snippet on 2 and 8 fake CPU
devices (subprocesses; this suite keeps one device), the sharding rules restricted to a
mesh, parameter placement, weight surgery under any name, the encoder's public call and the
package exports."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh

import jaxformer as jf
from jaxformer import convert, inference, objectives, sharding, training
from suite_env import HERE, run_python


def _snippet(tmp_path_factory, n):
    out_json = tmp_path_factory.mktemp(f"research{n}") / "report.json"
    run_python([os.path.join(HERE, "research_snippet.py"), str(n), str(out_json)])
    return json.loads(out_json.read_text())


@pytest.fixture(
    scope="module", params=[2, pytest.param(8, marks=pytest.mark.slow)], ids=["2dev", "8dev"]
)
def snippet(request, tmp_path_factory):
    return request.param, _snippet(tmp_path_factory, request.param)


def test_snippet_loss_falls_on_one_device(snippet):
    _, r = snippet
    losses = r["single"]["losses"]
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("run", ["dp_explicit", "fsdp"])
def test_snippet_sharded_runs_match_one_device(snippet, run):
    _, r = snippet
    np.testing.assert_allclose(r[run]["losses"], r["single"]["losses"], rtol=1e-5)
    worst, diff = r[run]["param_diff"]
    assert diff < 1e-5, (worst, diff)


def test_snippet_meshes_are_what_they_claim(snippet):
    n, r = snippet
    # The plain jax.make_mesh mesh has Explicit axes and the batch really is split.
    assert r["dp_explicit"]["axis_types"] == ["AxisType.Explicit"]
    assert r["dp_explicit"]["batch_spec"] == "P('data',)"
    # FSDP: the word embeddings [vocab, embed] are split over fsdp along embed, n ways.
    assert r["fsdp"]["embedding_spec"] == "P(None, 'fsdp')"
    assert r["fsdp"]["embedding_shards"] == n


@pytest.mark.slow
@pytest.mark.parametrize("n", [2])  # 8 devices: the snippet tests above
def test_every_family_runs_under_a_plain_jax_make_mesh(tmp_path, n):
    """Forward and backward of BERT, ALBERT, ELECTRA, RoBERTa, ModernBERT and the
    Transformer on a jax.make_mesh mesh (Explicit axes), bare and in sharding.use_mesh,
    equal one device (before take_rows the embedding lookup raised ShardingTypeError)."""
    out_json = tmp_path / "families.json"
    run_python(
        [os.path.join(HERE, "explicit_mesh_families.py"), str(n), str(out_json)], timeout=1800
    )
    report = json.loads(out_json.read_text())
    assert set(report) == {"bert", "albert", "electra", "roberta", "modernbert", "transformer"}
    for family, diffs in report.items():
        assert set(diffs) == {"bare", "use_mesh"}
        assert max(diffs.values()) < 1e-5, (family, diffs)


def test_mesh_rules_drop_explicit_and_missing_axes():
    dev = jax.devices()[:1]
    explicit = jax.make_mesh((1,), ("data",), devices=dev)
    assert explicit.axis_types == (AxisType.Explicit,)
    assert all(entry is None for _, entry in sharding.mesh_rules(explicit))
    auto_data = Mesh(np.asarray(dev), ("data",), axis_types=(AxisType.Auto,))
    rules = dict(sharding.mesh_rules(auto_data))
    assert rules["batch"] == ("data",) and rules["embed"] is None and rules["heads"] is None
    # The project's own mesh keeps the table exactly.
    assert sharding.mesh_rules(sharding.make_mesh(devices=dev)) == sharding.RULES


def test_make_mesh_sizes_and_error():
    mesh = sharding.make_mesh(data=-1, fsdp=1, tensor=1)
    assert dict(mesh.shape) == {"data": len(jax.devices()), "fsdp": 1, "tensor": 1}
    assert set(mesh.axis_types) == {AxisType.Auto}
    with pytest.raises(sharding.ShardingError, match="at most one mesh axis may be -1"):
        sharding.make_mesh(data=-1, fsdp=-1)


@pytest.fixture(scope="module")
def tiny():
    cfg = jf.bert_config(
        "tiny", vocab_size=32, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
        max_position_embeddings=8,
    )  # fmt: skip
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 32, (2, 6)), jnp.int32)
    return cfg, ids


def test_shard_params_places_by_logical_names_and_rejects_unboxed(tiny):
    cfg, ids = tiny
    boxed = jf.EncoderModel(cfg).init(jax.random.key(0), ids)
    mesh = sharding.make_mesh()
    placed = sharding.shard_params(boxed, mesh)
    emb = placed["params"]["encoder"]["embeddings"]["word"]["embedding"]
    assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    np.testing.assert_array_equal(
        emb, nn.unbox(boxed)["params"]["encoder"]["embeddings"]["word"]["embedding"]
    )
    with pytest.raises(sharding.ShardingError, match="carry no logical axis names"):
        sharding.shard_params(nn.unbox(boxed), mesh)


def test_encoder_public_call_equals_encoder_model(tiny):
    cfg, ids = tiny
    params = nn.unbox(jf.EncoderModel(cfg).init(jax.random.key(0), ids))["params"]
    full = jf.EncoderModel(cfg).apply({"params": params}, ids)
    out = jf.Encoder(cfg).apply({"params": params["encoder"]}, ids)
    assert isinstance(out, jf.EncoderOutput)
    np.testing.assert_array_equal(out.last_hidden_state, full.last_hidden_state)
    np.testing.assert_array_equal(out.pooled, full.pooled)


def test_merge_encoder_under_a_user_name(tiny):
    cfg, ids = tiny

    class Mine(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(jf.Encoder(cfg, name="backbone")(x).pooled)

    pre = nn.unbox(jf.EncoderModel(cfg).init(jax.random.key(1), ids))["params"]
    fresh = Mine().init(jax.random.key(2), ids)["params"]
    merged = convert.merge_encoder(fresh, pre, name="backbone")
    for a, b in zip(jax.tree.leaves(merged["backbone"]), jax.tree.leaves(pre["encoder"])):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(merged["Dense_0"]), jax.tree.leaves(fresh["Dense_0"])):
        np.testing.assert_array_equal(a, b)
    # The bare encoder tree works too, and a wrong name says which names exist.
    same = convert.merge_encoder(fresh, pre["encoder"], name="backbone", source=None)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), same, merged))
    with pytest.raises(ValueError, match="no submodule 'encoder'.*pass name="):
        convert.merge_encoder(fresh, pre)


def test_decay_mask_skips_biases_and_norms(tiny):
    cfg, ids = tiny
    params = nn.unbox(jf.EncoderModel(cfg).init(jax.random.key(0), ids))["params"]
    flat = dict(
        (jax.tree_util.keystr(k), v)
        for k, v in jax.tree_util.tree_flatten_with_path(training.decay_mask(params))[0]
    )
    assert flat["['encoder']['embeddings']['word']['embedding']"] is True
    assert all(not v for k, v in flat.items() if k.endswith("['bias']") or "norm" in k)


@pytest.mark.parametrize("module", [jf, sharding, objectives, training, inference, convert])
def test_exports_resolve(module):
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_layer_plan_is_not_top_level():
    assert not hasattr(jf, "layer_plan") and "layer_plan" not in jf.__all__
