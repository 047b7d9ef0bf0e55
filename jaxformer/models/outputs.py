"""What model calls return."""

from __future__ import annotations

from typing import Optional

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
    pooled: Optional[jnp.ndarray] = None
    mlm_logits: Optional[jnp.ndarray] = None
    pair_logits: Optional[jnp.ndarray] = None
    rtd_logits: Optional[jnp.ndarray] = None
    logits: Optional[jnp.ndarray] = None
    start_logits: Optional[jnp.ndarray] = None
    end_logits: Optional[jnp.ndarray] = None


@flax.struct.dataclass
class Seq2SeqOutput:
    """Outputs of an encoder-decoder call."""

    logits: jnp.ndarray  # [batch, target_length, vocab]
    encoder_hidden_state: Optional[jnp.ndarray] = None
    decoder_hidden_state: Optional[jnp.ndarray] = None
