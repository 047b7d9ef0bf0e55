"""Model FLOP counts, device peak rates, a measured matmul rate, and memory readings.

FLOPs count multiply-adds as 2 and only the matrix products (the standard MFU convention:
element-wise ops, softmax, LayerNorm and embedding lookups are free). Training costs three
forward passes (the backward pass computes gradients for activations and for weights, each
as many FLOPs as the forward), so with N = matmul parameters touched per token:

    train FLOPs / token  = 6 N + 12 L T H     (the "6 N" rule plus the attention term)
    infer FLOPs / token  = 2 N +  4 L T H

For a BERT layer N_layer = 4 H^2 (q, k, v, out) + 2 H I (feed-forward), and the attention
scores and the weighted sum of values cost 2 T H each per token (T = sequence length), so
one layer's forward is 8 H^2 + 4 H I + 4 T H per token. The MLM head (transform H->E, then
the tied decoder E->V) runs only at the predicted positions when the model gets
`mlm_positions` (P slots per row), i.e. P/T of a token's worth per token; "equal work" counts
it at every position, which is what a model that scores every position computes. With
`EncoderConfig.sparse_last_layer` the last layer itself runs only at [CLS] + the P rows
(keys and values still at every token): per token it costs 4 H^2 + (1 + P)/T x the rest.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

# Dense bf16 peak TFLOP/s per chip (vendor figures, no sparsity): the one table, read by the
# benchmarks and by the training loop's MFU. Matched as a substring of `device_kind`, longest
# key first ("H100 PCIe" before "H100", "TPU v5 lite" before "TPU v5").
PEAK_BF16_TFLOPS = {
    "A100": 312.0,
    "H100": 989.0,  # SXM
    "H100 PCIe": 756.0,
    "H200": 989.0,
    "L4": 121.0,
    "A10": 125.0,
    "V100": 125.0,
    "TPU v2": 45.0,
    "TPU v3": 123.0,
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,  # v5e reports itself as "TPU v5 lite"
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v5": 459.0,  # v5p reports "TPU v5"
    "TPU v6 lite": 918.0,
    "TPU v6e": 918.0,
}


def device_peak_tflops(device_kind: str) -> float | None:
    """bf16 peak of a device from its `device_kind` string, None if not in the table."""
    kind = device_kind.lower()
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in kind:
            return PEAK_BF16_TFLOPS[key]
    return None


# -- FLOP counts ---------------------------------------------------------------------------
def encoder_layer_flops(hidden: int, intermediate: int, seq_len: int) -> float:
    """Forward FLOPs per token of one BERT layer: q/k/v/out projections 4 * 2 H^2, the
    feed-forward 2 * 2 H I, attention scores (q k^T) 2 T H and probabilities x values 2 T H."""
    h, i, t = hidden, intermediate, seq_len
    return 2.0 * 4 * h * h + 2.0 * 2 * h * i + 2.0 * t * h + 2.0 * t * h


def mlm_head_flops(hidden: int, emb: int, vocab: int) -> float:
    """Forward FLOPs of the MLM head at one position: transform H->E, tied decoder E->V."""
    return 2.0 * hidden * emb + 2.0 * emb * vocab


def encoder_flops(cfg, seq_len: int, mode: str = "train", predictions: int | None = None) -> dict:
    """FLOPs per token of a BERT-family encoder (`EncoderConfig`) or of ModernBERT.

    mode: "train" (x3) or "infer" (forward). predictions: MLM head slots per row (P); None
    means no head (plain encoder). Returns {"layers", "head", "other", "total"} per token.
    """
    if cfg.family == "modernbert":
        return modernbert_flops(cfg, seq_len, mode, predictions)
    mult = {"train": 3.0, "infer": 1.0}[mode]
    t, h, e = seq_len, cfg.hidden_size, cfg.emb_size
    layer = encoder_layer_flops(h, cfg.intermediate_size, t)
    layers = cfg.num_layers * layer
    if predictions is not None and cfg.runs_sparse_last_layer(predictions, t):
        # The last layer projects keys and values (2 x 2 H^2) at every token but computes
        # the rest only at the r = 1 + P rows the heads read ([CLS] + predicted slots).
        kv = 4.0 * h * h
        layers -= (layer - kv) * (1.0 - (1 + predictions) / t)
    other = 0.0
    if e != h:  # ALBERT/ELECTRA factorised embedding projection E->H
        other += 2.0 * e * h
    if cfg.with_pooler:  # one H x H product per row, on the first token
        other += 2.0 * h * h / t
    head = 0.0
    if predictions is not None:
        head = mlm_head_flops(h, e, cfg.vocab_size) * predictions / t
    out = {"layers": layers, "head": head, "other": other}
    out = {k: mult * v for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def modernbert_flops(
    cfg, seq_len: int, mode: str = "train", predictions: int | None = None
) -> dict:
    """FLOPs per token of ModernBERT (`ModernBertConfig`), as `encoder_flops`.

    A layer: q/k/v/out 4 * 2 H^2, GeGLU 2 H (2 I) + 2 I H, scores and values 2 * 2 T H. The
    XLA kernels compute every score of a sliding layer too (the band is a mask), so local
    layers count T keys like global ones. The MLM head (P = `predictions` rows; None: no
    head): dense 2 H^2 and decoder 2 H V at each predicted position.
    """
    mult = {"train": 3.0, "infer": 1.0}[mode]
    t, h, i = seq_len, cfg.hidden_size, cfg.intermediate_size
    layer = 2.0 * 4 * h * h + 2.0 * h * 2 * i + 2.0 * i * h + 4.0 * t * h
    head = 0.0
    if predictions is not None:
        head = mlm_head_flops(h, h, cfg.vocab_size) * predictions / t
    out = {"layers": mult * cfg.num_layers * layer, "head": mult * head, "other": 0.0}
    out["total"] = sum(out.values())
    return out


def _encoder_decoder_flops(d, a, f_enc, f_dec, ffn_mats, l_enc, l_dec, v, s, t, mode) -> dict:
    """Encoder layer per source token: q/k/v/out 8 d a, scores and mixing 4 S a, feed-forward
    2 ffn_mats d f (2 matrices, or 3 when gated). Decoder layer per target token:
    self-attention 8 d a + 4 T a (the full T x T product is computed under the causal mask),
    cross-attention q/out 4 d a + 4 S a, and its k/v 4 d a per *source* token; feed-forward;
    output projection 2 d V per target token (a = heads x head width, hidden_size for the
    Transformer)."""
    mult = {"train": 3.0, "infer": 1.0}[mode]
    enc = l_enc * s * (8.0 * d * a + 4.0 * s * a + 2.0 * ffn_mats * d * f_enc)
    dec = l_dec * (
        t * (8.0 * d * a + 4.0 * t * a + 4.0 * d * a + 4.0 * s * a + 2.0 * ffn_mats * d * f_dec)
        + s * 4.0 * d * a
    )
    logits = t * 2.0 * d * v
    out = {"encoder": mult * enc, "decoder": mult * dec, "logits": mult * logits}
    out["total"] = sum(out.values())
    return out


def transformer_flops(cfg, src_len: int, tgt_len: int, mode: str = "train") -> dict:
    """FLOPs per row (source + target) of the encoder-decoder `Transformer` (see
    `_encoder_decoder_flops`; the decoder's FFN width may differ from the encoder's)."""
    d = cfg.hidden_size
    return _encoder_decoder_flops(
        d,
        d,
        cfg.ffn_dim(),
        cfg.ffn_dim(decoder=True),
        2,
        cfg.num_encoder_layers,
        cfg.num_decoder_layers,
        cfg.tgt_vocab_size,
        src_len,
        tgt_len,
        mode,
    )


def t5_flops(cfg, src_len: int, tgt_len: int, mode: str = "train") -> dict:
    """FLOPs per row of `T5` (attention width heads x d_kv, which need not be d_model; three
    FFN matrices when gated). The relative position bias is a gather, not counted."""
    return _encoder_decoder_flops(
        cfg.d_model,
        cfg.num_heads * cfg.d_kv,
        cfg.d_ff,
        cfg.d_ff,
        3 if cfg.is_gated else 2,
        cfg.num_layers,
        cfg.num_decoder_layers,
        cfg.vocab_size,
        src_len,
        tgt_len,
        mode,
    )


# -- measured rates and memory -------------------------------------------------------------
def matmul_rate(n: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
    """Median FLOP/s of an n^3 `jnp.dot` on the default device (jit'd, synchronised)."""
    import jax
    import jax.numpy as jnp

    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(k1, (n, n), dtype)
    b = jax.random.normal(k2, (n, n), dtype)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / float(np.median(times))


def torch_matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """The same n^3 float32 product in PyTorch on CPU (FLOP/s, median)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / float(np.median(times))


class RSSSampler:
    """Samples this process's resident set size every `interval` s while active; `peak`
    is the largest reading (bytes). Used on CPU, where there are no device memory stats."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._proc = psutil.Process()
        self.interval, self.peak = interval, self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def device_peak_memory(device=None) -> int | None:
    """Peak bytes in use from the device's memory stats (GPU/TPU); None where unsupported."""
    import jax

    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    return int(stats.get("peak_bytes_in_use", stats.get("bytes_in_use", 0))) or None


def summarize(times) -> dict:
    """Median and spread (IQR, min, max) of step times in seconds."""
    x = np.asarray(times, float)
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return {
        "median_s": float(med),
        "iqr_s": float(q3 - q1),
        "min_s": float(x.min()),
        "max_s": float(x.max()),
        "n": int(x.size),
    }


def fmt_si(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for p, s in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= p:
            return f"{x / p:.3g} {s}{unit}"
    return f"{x:.3g} {unit}"
