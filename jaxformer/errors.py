"""Exceptions more than one part of the package raises."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value that cannot be used: a model config field with an unknown name
    or an impossible value, or a training setting (path, name, count) that training cannot
    use. The message is one line naming the value and the fix."""
