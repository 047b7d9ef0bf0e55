"""jaxformer.convert."""
