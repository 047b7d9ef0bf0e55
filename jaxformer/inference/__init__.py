"""jaxformer.inference."""
