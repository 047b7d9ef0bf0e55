"""Building blocks with no knowledge of any model family."""

from jaxformer.layers.attention import MultiHeadAttention, attend
from jaxformer.layers.dropout import Dropout, dropout
from jaxformer.layers.embeddings import Embed, SinusoidalPositions, sinusoidal_table
from jaxformer.layers.feedforward import FeedForward, activation, layer_norm
from jaxformer.layers import masks

__all__ = [
    "MultiHeadAttention",
    "attend",
    "Dropout",
    "dropout",
    "Embed",
    "SinusoidalPositions",
    "sinusoidal_table",
    "FeedForward",
    "activation",
    "layer_norm",
    "masks",
]
