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


class UnknownNameError(CvaeBridgeError, KeyError):
    """A component, split or task name that is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DependencyError(CvaeBridgeError, ImportError):
    """A package a feature needs is not installed, or a plugin failed to import; says what to install."""


class UsageError(CvaeBridgeError, RuntimeError):
    """A method called out of order (a step before reset, a model used before its statistics are set)."""
