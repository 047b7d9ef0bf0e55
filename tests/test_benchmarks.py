"""The benchmark scripts run end to end on a tiny config; the FLOP count matches a hand count."""

import importlib.util
import json
import math
import os

import pytest

from jaxformer import benchmarking as B
from jaxformer.models import bert_config
from jaxformer.models.seq2seq_configs import transformer_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "benchmarks", f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_layer_flops_match_hand_count():
    # BERT-base layer at T = 128, per token, forward:
    #   q, k, v, out projections: 4 x 2 x 768 x 768    = 4,718,592
    #   feed-forward 768->3072->768: 2 x 2 x 768 x 3072 = 9,437,184
    #   scores q.k over 128 keys: 2 x 128 x 768         =   196,608
    #   probabilities x values:   2 x 128 x 768         =   196,608
    hand = 4_718_592 + 9_437_184 + 196_608 + 196_608
    assert hand == 14_548_992
    assert B.encoder_layer_flops(768, 3072, 128) == hand


def test_encoder_flops_train_is_three_forwards_and_head_scales_with_predictions():
    cfg = bert_config("base", head="mlm", with_pooler=False, sparse_last_layer=False)
    fwd = B.encoder_flops(cfg, 128, "infer", predictions=20)
    train = B.encoder_flops(cfg, 128, "train", predictions=20)
    assert train["total"] == pytest.approx(3 * fwd["total"])
    # 6N + 12 L T H form: N = 12 layers x (4 H^2 + 2 H I) matmul parameters per token.
    n = 12 * (4 * 768**2 + 2 * 768 * 3072)
    assert train["layers"] == pytest.approx(6 * n + 12 * 12 * 128 * 768)
    # MLM head (768x768 transform + 768x30522 decoder) at 20 of 128 positions, x3.
    assert train["head"] == pytest.approx(3 * (2 * 768 * 768 + 2 * 768 * 30522) * 20 / 128)
    equal = B.encoder_flops(cfg, 128, "train", predictions=128)
    assert equal["head"] == pytest.approx(train["head"] * 128 / 20)


def test_transformer_flops_hand_count():
    cfg = transformer_config("nano", vocab_size=100)  # 1 layer each, d=32, f=64
    d, f, s, t, v = 32, 64, 5, 3, 100
    enc = s * (8 * d * d + 4 * d * f + 4 * s * d)
    dec = t * (8 * d * d + 4 * t * d + 4 * d * d + 4 * s * d + 4 * d * f) + s * 4 * d * d
    out = B.transformer_flops(cfg, s, t, "infer")
    assert out["total"] == enc + dec + t * 2 * d * v


def test_t5_flops_hand_count():
    from jaxformer.models.t5 import T5Config

    # d_kv x heads (a = 24) != d_model (d = 32); gated: three FFN matrices
    cfg = T5Config(
        vocab_size=100,
        d_model=32,
        d_kv=6,
        num_heads=4,
        d_ff=48,
        num_layers=2,
        num_decoder_layers=1,
        feed_forward_proj="gated-gelu",
    )
    d, a, f, s, t, v = 32, 24, 48, 5, 3, 100
    enc = 2 * s * (8 * d * a + 4 * s * a + 6 * d * f)
    dec = t * (8 * d * a + 4 * t * a + 4 * d * a + 4 * s * a + 6 * d * f) + s * 4 * d * a
    assert B.t5_flops(cfg, s, t, "train")["total"] == 3 * (enc + dec + t * 2 * d * v)


@pytest.mark.slow  # compiles a T5 train step and two decoders: ~25 s on 2 idle cores
def test_throughput_seq2seq_mode_t5_beside_transformers(tmp_path):
    """One run: the T5 train step beside T5ForConditionalGeneration of the same shape, then
    greedy and beam-4 decoding beside its generate."""
    tp = _load("throughput")
    out = tmp_path / "out.json"
    args = "--model t5-tiny --vocab 40 --seq 4 --batch 2 --mode seq2seq --peers torch"
    args += f" --steps 1 --warmup 0 --matmul-n 64 --json {out}"
    tp.main(args.split())
    report = json.loads(out.read_text())
    ours, peer = report["results"]
    assert peer["name"] == "transformers (torch eager)" and "error" not in peer
    assert ours["n_params"] == peer["n_params"]  # the same shape on both sides
    for r in (ours, peer):
        assert r["tokens_per_s"] > 0 and math.isfinite(r["last_loss"])
    assert (
        ours["flops_per_token"]
        == B.t5_flops(tp.model_config(tp.parse_args(args.split()))[1], 4, 4)["total"] / 8
    )
    assert [r["strategy"] for r in report["decode"]] == ["greedy", "beam4"]
    for r in report["decode"]:
        assert r["jaxformer_tokens_per_s"] > 0 and r["transformers (torch eager)_tokens_per_s"] > 0


def test_peak_table():
    assert B.device_peak_tflops("NVIDIA H200") == 989.0
    assert B.device_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert B.device_peak_tflops("TPU v5 lite") == 197.0
    assert B.device_peak_tflops("TPU v5p") == 459.0
    assert B.device_peak_tflops("cpu") is None


def _tiny_throughput(tmp_path, *args):
    """benchmarks/throughput.py on bert-tiny, 2 steps after 1 warm-up, with `args`: its report."""
    out = tmp_path / "out.json"
    common = ["--model", "bert-tiny", "--steps", "2", "--warmup", "1", "--matmul-n", "256"]
    _load("throughput").main([*common, *args, "--json", str(out)])
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_throughput_runs_on_a_tiny_config(tmp_path, mode):
    extra = ["--equal-work"] if mode == "train" else []
    report = _tiny_throughput(tmp_path, "--seq", "16", "--batch", "2", "--mode", mode, *extra)
    rows = report["results"]
    assert len(rows) == (2 if mode == "train" else 1)
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["step"]["n"] == 2 and r["flops_per_token"] > 0
        assert r["mfu"] is not None
    assert report["hardware"]["versions"]["jax"]


def test_throughput_packed_inference_counts_real_tokens(tmp_path):
    args = ["--seq", "32", "--batch", "4", "--mode", "infer", "--lengths", "uniform:8", "--pack"]
    rows = {r["name"]: r for r in _tiny_throughput(tmp_path, *args)["results"]}
    padded, packed = rows["jaxformer (padded)"], rows["jaxformer (packed)"]
    # Same row count and length, so packing fits more real tokens into each step.
    assert packed["tokens_per_step"] > padded["tokens_per_step"]
    assert packed["padding_fraction"] < padded["padding_fraction"]


def test_sparse_last_layer_flops_hand_count():
    # BERT-base, P = 20 of T = 128: the last layer keeps its k, v projections at all 128
    # tokens (2 x 2 x 768^2 per token) and computes q/out, attention and the feed-forward at
    # 21 rows ([CLS] + 20): per token 2,359,296 + 21/128 x (14,548,992 - 2,359,296).
    dense = B.encoder_flops(
        bert_config("base", head="mlm", sparse_last_layer=False), 128, "infer", predictions=20
    )
    sparse = B.encoder_flops(bert_config("base", head="mlm"), 128, "infer", predictions=20)
    last = 2_359_296 + 21 / 128 * (14_548_992 - 2_359_296)
    assert sparse["layers"] == pytest.approx(dense["layers"] - 14_548_992 + last)
    assert sparse["head"] == dense["head"]
    # Scoring every position: no rows to skip, the dense count.
    assert B.encoder_flops(
        bert_config("base", head="mlm"), 128, "infer", predictions=128
    ) == B.encoder_flops(
        bert_config("base", head="mlm", sparse_last_layer=False), 128, "infer", predictions=128
    )


def test_sparse_last_layer_flops_match_xla_cost_analysis():
    """The FLOPs the sparse last layer saves, by our count, are the FLOPs XLA's compiled
    forward pass no longer has (its own count of the dots)."""
    import jax
    import jax.numpy as jnp

    from jaxformer.models import EncoderModel

    t, p = 64, 6
    kw = dict(
        head="mlm",
        with_pooler=False,
        num_layers=2,
        hidden_size=64,
        num_heads=4,
        intermediate_size=256,
        vocab_size=500,
    )
    ids = jnp.ones((2, t), jnp.int32)
    pos = jnp.tile(jnp.arange(p, dtype=jnp.int32)[None], (2, 1))

    def xla_flops(cfg):
        model = EncoderModel(cfg)
        params = jax.eval_shape(model.init, jax.random.PRNGKey(0), ids)["params"]
        fwd = jax.jit(lambda q: model.apply({"params": q}, ids, mlm_positions=pos).mlm_logits)
        cost = fwd.lower(params).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    cfg_s = bert_config("tiny", **kw)
    cfg_d = bert_config("tiny", sparse_last_layer=False, **kw)
    ours = (
        (
            B.encoder_flops(cfg_d, t, "infer", p)["total"]
            - B.encoder_flops(cfg_s, t, "infer", p)["total"]
        )
        * 2
        * t
    )
    xla = xla_flops(cfg_d) - xla_flops(cfg_s)
    # XLA also counts element-wise work in the skipped rows, so its saving is a little larger.
    assert ours > 0 and ours <= xla <= 1.15 * ours, (ours, xla)
