"""Moved to `jaxformer.tasks.electra`; this name stays for old configs and imports."""

from jaxformer.tasks.electra import *  # noqa: F403
