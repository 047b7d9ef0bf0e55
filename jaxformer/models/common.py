"""Helpers every model family shares: its dtypes, the host-side token id check, the attention
built from a config, the encoders' public call (`EncoderBase`) and the encoder-decoders'
common shape (`EncoderDecoder`, `StackPart`, `decoder_masks`)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxformer.layers import masks as masks_lib
from jaxformer.layers.attention import MultiHeadAttention
from jaxformer.models.outputs import EncoderOutput, Seq2SeqOutput


def dtypes(cfg) -> tuple[jnp.dtype, jnp.dtype]:
    """(compute dtype, parameter dtype) of any model config (`cfg.dtype`, `cfg.param_dtype`)."""
    return jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)


def check_ids(ids, vocab: int, what: str = "input_ids") -> None:
    """Raises ValueError if host (numpy or concrete) `ids` leave [0, vocab); traced ids
    (inside jit) are skipped."""
    if isinstance(ids, jax.core.Tracer):
        return
    a = np.asarray(ids)
    if a.size and (a.min() < 0 or a.max() >= vocab):
        bad = int(a.max()) if a.max() >= vocab else int(a.min())
        raise ValueError(
            f"{what} contains token id {bad}, outside the vocabulary [0, {vocab}); the "
            "tokenizer and the model config disagree (check vocab_size or the tokenizer)."
        )


def check_batch_ids(ids, vocab: int, what: str = "input_ids") -> None:
    """Raises ValueError unless `ids` is [batch, length] with (host) ids in [0, vocab)."""
    if ids.ndim != 2:
        raise ValueError(f"{what} must be [batch, length], got shape {ids.shape}.")
    check_ids(ids, vocab, what)


def rows_at(hidden, positions):
    """hidden [b, t, H] at positions [b, n] -> [b, n, H] (e.g. only the rows MLM scores)."""
    return jnp.take_along_axis(hidden, positions[..., None], axis=1)


def attention(cfg, name: str, heads: int | None = None, **options) -> MultiHeadAttention:
    """The attention of a config with the fields of the BERT family, ModernBERT and the
    Transformer (`num_heads`, `hidden_size`, `attention_dropout`, `attention_kernel`,
    `initializer_range`, the dtypes): `heads` (default `cfg.num_heads`) of width
    hidden_size / heads; `options` set or override further `MultiHeadAttention` fields."""
    dt, pdt = dtypes(cfg)
    heads = heads or cfg.num_heads
    fields = dict(
        dropout_rate=cfg.attention_dropout,
        kernel=cfg.attention_kernel,
        init_std=cfg.initializer_range,
        dtype=dt,
        param_dtype=pdt,
    )
    return MultiHeadAttention(heads, cfg.hidden_size // heads, name=name, **(fields | options))


class EncoderInputs(NamedTuple):
    """A batch as the encoders read it, in their call's order (each [b, t]; see
    `EncoderBase.__call__`)."""

    input_ids: jax.Array
    attention_mask: jax.Array | None = None
    token_type_ids: jax.Array | None = None
    position_ids: jax.Array | None = None
    segment_ids: jax.Array | None = None


class EncoderBase(nn.Module):
    """The one public call of every encoder (`Encoder`, `EncoderModel`, `ModernBertModel`),
    which forwards to the family's `_forward`, and `dummy_inputs` from `cfg.max_length`."""

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        segment_ids=None,
        mlm_positions: jax.Array | None = None,
        deterministic: bool = True,
    ) -> EncoderOutput:
        """input_ids [b, t] -> `EncoderOutput`. attention_mask [b, t] (1 = real token);
        token_type_ids [b, t] (default zeros; a family without a token-type table ignores
        them); position_ids [b, t] (default: the family's); segment_ids [b, t] (packed
        rows: 0 = padding, 1..n; attention stays within a segment); mlm_positions [b, n]
        limits the MLM logits to those rows; deterministic=False enables dropout."""
        inputs = EncoderInputs(input_ids, attention_mask, token_type_ids, position_ids, segment_ids)
        return self._forward(inputs, mlm_positions, deterministic)

    def _forward(self, inputs: EncoderInputs, mlm_positions, deterministic: bool) -> EncoderOutput:
        """The family's encoder and head on `inputs` (the call's arguments)."""
        raise NotImplementedError

    def dummy_inputs(self, batch: int = 1, length: int = 8) -> dict:
        """Shapes for `init` / `eval_shape`."""
        return {"input_ids": jnp.zeros((batch, min(length, self.cfg.max_length)), jnp.int32)}


class StackPart(nn.Module):
    """An encoder-decoder's stack or one of its layers: the model's `cfg`, and `decode`: keep
    the decoding cache (the "cache" collection) to take the target one step at a time."""

    cfg: Any
    decode: bool = False


class EitherSide(StackPart):
    """A `StackPart` that serves as the encoder or, with `is_decoder`, as the decoder (which
    also attends to the encoder states). A stack is called as `EncoderDecoder` calls it,
    `(x, mask, encoded=None, cross_mask=None, deterministic=True, use_cached_kv=False)` with
    `mask` the self-attention mask, and so are its layers (T5's take the position bias after
    the mask)."""

    is_decoder: bool = False


def decoder_masks(attention_mask, decoder_attention_mask, t: int, cached: bool):
    """(decoder self-attention mask, cross-attention mask) for `t` target tokens from [b, s]
    / [b, t] padding masks (1 = real, either may be None). With the decoding cache (`cached`)
    the self mask is padding only: the cache applies causality relative to its own index."""
    pad = None if decoder_attention_mask is None else masks_lib.padding_mask(decoder_attention_mask)
    self_mask = pad if cached else masks_lib.combine(masks_lib.causal_mask(t), pad)
    cross_mask = None if attention_mask is None else masks_lib.padding_mask(attention_mask)
    return self_mask, cross_mask


class EncoderDecoder(nn.Module):
    """What every encoder-decoder (`Transformer`, `T5`, `Bart`) shares: the input checks,
    `encode`, `decode` (one step or a teacher-forced pass from encoder states to logits), the
    teacher-forced `__call__` and `dummy_inputs`.

    A subclass has `cfg` (with `vocab_size`, `tgt_vocab_size`, `max_length`: None without a
    position table), `use_cache`, `encoder` and `decoder`, and defines `_embed(ids, target)`
    and `_logits(h)`. The stacks' default calls (`_encoder_states`, `_decoder_states`) take
    padding masks; with `packing = True` the subclass overrides both to take the segment
    ids of packed rows (`segment_ids=`; the decoder also `decoder_segment_ids=`).
    """

    packing: ClassVar[bool] = False
    position_table: ClassVar[str] = "the position table"  # named in the length error

    def _checked(self, ids, target: bool):
        """`ids` [b, t] after its side's shape, length and vocabulary checks. A cached
        decoder is fed one step at a time, so its target length is not checked here."""
        cfg = self.cfg
        what = "decoder_input_ids" if target else "input_ids"
        check_batch_ids(ids, cfg.tgt_vocab_size if target else cfg.vocab_size, what)
        n, limit = ids.shape[1], cfg.max_length
        if limit is not None and n > limit and not (target and self.use_cache):
            raise ValueError(
                f"{'target' if target else 'source'} length {n} exceeds "
                f"max_position_embeddings={limit} ({self.position_table}); truncate the "
                "input or use a config with a longer table."
            )
        return ids

    def encode(self, input_ids, attention_mask=None, deterministic: bool = True, **packed):
        """[b, s] source ids (+ [b, s] mask, 1 = real; `segment_ids` [b, s] of packed rows
        where the model packs) -> [b, s, d] encoder states."""
        x = self._embed(self._checked(input_ids, target=False), target=False)
        return self._encoder_states(x, attention_mask, deterministic, **packed)

    def _encoder_states(self, x, attention_mask, deterministic):
        mask = None if attention_mask is None else masks_lib.padding_mask(attention_mask)
        return self.encoder(x, mask, deterministic=deterministic)

    def _decode_hidden(
        self,
        encoded,
        attention_mask,
        decoder_input_ids,
        decoder_attention_mask,
        deterministic,
        use_cached_kv=False,
        **packed,
    ):
        y = self._embed(self._checked(decoder_input_ids, target=True), target=True)
        return self._decoder_states(
            y,
            encoded,
            attention_mask,
            decoder_attention_mask,
            deterministic,
            use_cached_kv,
            **packed,
        )

    def _decoder_states(
        self, y, encoded, attention_mask, decoder_attention_mask, deterministic, use_cached_kv
    ):
        self_mask, cross_mask = decoder_masks(
            attention_mask, decoder_attention_mask, y.shape[1], self.use_cache
        )
        return self.decoder(y, self_mask, encoded, cross_mask, deterministic, use_cached_kv)

    def dummy_inputs(self, batch: int = 1, length: int = 8) -> dict:
        """Shapes for `init` / `eval_shape`."""
        limit = self.cfg.max_length
        ids = jnp.zeros((batch, length if limit is None else min(length, limit)), jnp.int32)
        return {"input_ids": ids, "attention_mask": jnp.ones_like(ids), "decoder_input_ids": ids}

    def decode(
        self,
        encoded,
        attention_mask,
        decoder_input_ids,
        decoder_attention_mask=None,
        deterministic: bool = True,
        use_cached_kv: bool = False,
    ):
        """Target ids [b, t] attending to `encoded` [b, s, d] -> float32 logits [b, t, vocab].

        With `use_cache=True`, the tokens continue the cached prefix; `use_cached_kv=True` reuses
        the cross-attention keys/values stored by an earlier step (`encoded` may be None).
        """
        return self._logits(
            self._decode_hidden(
                encoded,
                attention_mask,
                decoder_input_ids,
                decoder_attention_mask,
                deterministic,
                use_cached_kv,
            )
        )

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        deterministic: bool = True,
        *,
        segment_ids=None,
        decoder_segment_ids=None,
    ) -> Seq2SeqOutput:
        """Teacher-forced logits. Packed rows (several pairs per row, `jaxformer.data.pairs`)
        pass `segment_ids` [b, s] and `decoder_segment_ids` [b, t] (1..k per pair, 0 =
        padding), where the model supports packing (`Transformer`)."""
        if decoder_input_ids is None:
            raise ValueError(
                "decoder_input_ids is required (teacher forcing: the targets shifted right "
                "behind the start token; see jaxformer.objectives.seq2seq.shift_right)."
            )
        packed = {}
        if segment_ids is not None or decoder_segment_ids is not None:
            if not self.packing:
                raise ValueError(
                    f"{type(self).__name__} does not take packed rows (segment_ids); "
                    "give it one example per row."
                )
            if segment_ids is None or decoder_segment_ids is None:
                raise ValueError(
                    "packed rows need both segment_ids (source) and decoder_segment_ids "
                    "(target); pass both or neither."
                )
            packed = {"segment_ids": segment_ids}
        encoded = self.encode(input_ids, attention_mask, deterministic, **packed)
        if packed:
            packed["decoder_segment_ids"] = decoder_segment_ids
        h = self._decode_hidden(
            encoded,
            attention_mask,
            decoder_input_ids,
            decoder_attention_mask,
            deterministic,
            **packed,
        )
        return Seq2SeqOutput(
            logits=self._logits(h), encoder_hidden_state=encoded, decoder_hidden_state=h
        )
