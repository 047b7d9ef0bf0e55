"""Helpers every model family shares: its dtypes and the host-side token id check."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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
