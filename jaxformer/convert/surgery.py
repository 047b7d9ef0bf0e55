"""Weight surgery: pretrained encoder weights placed into another model's parameter tree."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["merge_encoder"]


def _plain(tree):
    """`tree` itself when no leaf is boxed (the untouched parts stay the same objects)."""
    boxed = lambda x: isinstance(x, nn.meta.AxisMetadata)
    return nn.unbox(tree) if any(map(boxed, jax.tree.leaves(tree, is_leaf=boxed))) else tree


def merge_encoder(fresh, pretrained, name: str = "encoder", source: str | None = "encoder"):
    """`fresh` with its `name` subtree taken from `pretrained[source]` (the whole of
    `pretrained` when `source` is None); every other part of `fresh` (heads) stays as it is.

    Pretrained parts the fresh subtree lacks (e.g. a pooler a QA model does not use) are
    dropped. A missing parameter or a shape mismatch is an error naming the parameter; the
    values take the fresh parameters' dtypes. Boxed trees (what `model.init` returns) are
    unboxed first; the result is a plain tree.
    """
    fresh, pretrained = _plain(fresh), _plain(pretrained)
    if name not in fresh:
        raise ValueError(
            f"the model has no submodule {name!r} (top-level names: {sorted(fresh)}); "
            "pass name= the attribute name of your encoder."
        )
    src = pretrained if source is None else pretrained.get(source)
    if src is None:
        raise ValueError(
            f"the pretrained tree has no {source!r} subtree (top-level names: "
            f"{sorted(pretrained)}); pass source=None if it is the encoder itself."
        )

    def pick(path, f):
        p = src
        for k in path:
            key = getattr(k, "key", k)
            if not isinstance(p, dict) or key not in p:
                raise ValueError(
                    f"the pretrained encoder has no parameter {jax.tree_util.keystr(path)}."
                )
            p = p[key]
        if np.shape(f) != np.shape(p):
            raise ValueError(
                f"pretrained parameter {jax.tree_util.keystr(path)} has shape "
                f"{np.shape(p)}, the model expects {np.shape(f)}."
            )
        return jnp.asarray(p, f.dtype)

    out = dict(fresh)
    out[name] = jax.tree_util.tree_map_with_path(pick, fresh[name])
    return out
