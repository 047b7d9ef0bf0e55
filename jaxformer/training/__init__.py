"""jaxformer.training."""
