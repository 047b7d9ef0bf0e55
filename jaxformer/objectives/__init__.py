"""jaxformer.objectives."""
