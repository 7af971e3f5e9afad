"""Exceptions that name what was wrong and what was expected.

Every error cvae_bridge raises on purpose derives from `CvaeBridgeError`; each also derives from
the built-in exception it refines, so `except ValueError` keeps working.
"""


class CvaeBridgeError(Exception):
    """Base of every cvae_bridge error."""


class ConfigError(CvaeBridgeError, ValueError):
    """A config value, key or component type is invalid."""


class InputError(CvaeBridgeError, ValueError):
    """A batch, file or observation does not have the expected shape, dtype, range or keys."""


class CheckpointError(CvaeBridgeError, RuntimeError):
    """A saved model or training checkpoint is missing, incomplete or does not match its config."""


class NonFiniteLossError(CvaeBridgeError, FloatingPointError):
    """Training produced a NaN or infinite loss or gradient."""


class RegistrationError(CvaeBridgeError, TypeError):
    """A component class registered under a name does not meet its registry's contract."""
