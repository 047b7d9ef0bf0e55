"""Moved to `jaxformer.tasks.finetune`; this name stays for old configs and imports."""

from jaxformer.tasks.finetune import *  # noqa: F403
