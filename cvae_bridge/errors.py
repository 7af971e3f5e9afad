"""Exceptions that name what was wrong and what was expected."""


class ConfigError(ValueError):
    """A config value, key or component type is invalid."""


class InputError(ValueError):
    """A batch, file or observation does not have the expected shape, dtype, range or keys."""


class CheckpointError(RuntimeError):
    """A saved model or training checkpoint is missing, incomplete or does not match its config."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""
