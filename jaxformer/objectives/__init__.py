"""Pure training objectives: cross-entropies, the BERT / ELECTRA pretraining losses, masking
on the device, and the encoder-decoder loss."""

from jaxformer.objectives.losses import (
    cross_entropy_with_logits,
    row_count,
    sigmoid_binary_cross_entropy,
    top1_correct,
    weight_count,
    weighted_cross_entropy,
)
from jaxformer.objectives.masking import device_mask
from jaxformer.objectives.pretraining import (
    corrupt,
    electra_loss,
    encoder_inputs,
    mlm_loss,
    mlm_only_loss,
    mlm_pair_loss,
    pair_loss,
    share_embeddings,
)
from jaxformer.objectives.seq2seq import seq2seq_loss, shift_right, smoothed_cross_entropy

__all__ = [
    "corrupt",
    "cross_entropy_with_logits",
    "device_mask",
    "electra_loss",
    "encoder_inputs",
    "mlm_loss",
    "mlm_only_loss",
    "mlm_pair_loss",
    "pair_loss",
    "row_count",
    "seq2seq_loss",
    "share_embeddings",
    "shift_right",
    "sigmoid_binary_cross_entropy",
    "smoothed_cross_entropy",
    "top1_correct",
    "weight_count",
    "weighted_cross_entropy",
]
