"""What model calls return."""

from __future__ import annotations


import flax.struct
import jax.numpy as jnp


@flax.struct.dataclass
class EncoderOutput:
    """Outputs of an encoder call; a field the configured head does not produce is None.

    last_hidden_state: [batch, length, hidden] ([batch, 1 + n_positions, hidden] when an MLM
    head ran its last layer at [CLS] + mlm_positions only); pooled: [batch, hidden] (tanh pooler);
    mlm_logits: [batch, length or n_positions, vocab]; pair_logits: [batch, 2] (NSP / SOP);
    rtd_logits: [batch, length]; logits: [batch, num_labels] or [batch, length, num_labels];
    start_logits, end_logits: [batch, length].
    """

    last_hidden_state: jnp.ndarray
    pooled: jnp.ndarray | None = None
    mlm_logits: jnp.ndarray | None = None
    pair_logits: jnp.ndarray | None = None
    rtd_logits: jnp.ndarray | None = None
    logits: jnp.ndarray | None = None
    start_logits: jnp.ndarray | None = None
    end_logits: jnp.ndarray | None = None


@flax.struct.dataclass
class Seq2SeqOutput:
    """Outputs of an encoder-decoder call."""

    logits: jnp.ndarray  # [batch, target_length, vocab]
    encoder_hidden_state: jnp.ndarray | None = None
    decoder_hidden_state: jnp.ndarray | None = None
