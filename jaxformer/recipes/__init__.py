"""Recipe tasks beyond plain MLM pretraining: ELECTRA, fine-tuning, continued pretraining.

Each is a `jaxformer.training.tasks.Task` named in a config as `"jaxformer.recipes.X:Class"`.
"""
