"""Moved to `jaxformer.tasks.continued`; this name stays for old configs and imports."""

from jaxformer.tasks.continued import *  # noqa: F403
