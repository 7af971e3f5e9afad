"""Name -> class registries for every pluggable part.

Built-in parts register themselves when `cvae_bridge` is imported. Third-party packages extend the
registries in two ways: the decorators below, for code in the same process, or an entry point in
the group `cvae_bridge.plugins` (a module, imported lazily on the first lookup, whose import
registers its parts).

Each registry checks what it is given when the class is defined: the module that defines a kind's
base class (`Encoder`, `Decoder`, ...) declares its contract with `Registry.define_contract`, and
`register` then refuses a class that does not subclass the base, has no `Config` dataclass
deriving from the kind's config base, or leaves one of the required methods unimplemented.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from .errors import DependencyError, RegistrationError, UnknownNameError

T = TypeVar("T")

PLUGIN_GROUP = "cvae_bridge.plugins"
_plugins_loaded = False


def load_plugins() -> None:
    """Import every module advertised under the `cvae_bridge.plugins` entry-point group, once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    # Set first: a plugin that looks up a registry while it is being imported must not recurse.
    _plugins_loaded = True
    for entry_point in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            entry_point.load()
        except Exception as error:
            raise DependencyError(
                f"cvae_bridge plugin {entry_point.name!r} ({entry_point.value}) failed to load: {error}"
            ) from error


class Contract(NamedTuple):
    """What a registered class of one kind must be."""

    base: type
    config: type  # the base every `Config` dataclass derives from
    methods: tuple[str, ...]  # methods of `base` a subclass must override

    def problems(self, cls: type) -> list[str]:
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            return [f"subclass {_name(self.base)}"]
        found = []
        config = getattr(cls, "Config", None)
        if not (
            isinstance(config, type) and dataclasses.is_dataclass(config) and issubclass(config, self.config)
        ):
            found.append(f"set `Config` to a dataclass deriving from {_name(self.config)} (got {config!r})")
        missing = [m for m in self.methods if getattr(cls, m, None) is getattr(self.base, m)]
        if missing:
            found.append(f"implement {', '.join(missing)}")
        return found


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Registry:
    """A named collection of classes of one kind (encoders, decoders, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type] = {}
        self.contract: Contract | None = None

    def define_contract(self, base: type, config: type, methods: tuple[str, ...]) -> None:
        """Called once by the module defining the kind's base class, before anything registers."""
        self.contract = Contract(base, config, methods)

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: `@ENCODERS.register("image")`. A name can be registered once."""

        def decorator(cls: type[T]) -> type[T]:
            problems = self.contract.problems(cls) if self.contract else []
            if problems:
                raise RegistrationError(
                    f"{self.kind} {name!r}: {getattr(cls, '__qualname__', cls)!s} must "
                    + "; and ".join(problems)
                )
            if name in self._items:
                raise RegistrationError(
                    f"{self.kind} {name!r} is already registered by {self._items[name].__module__}."
                    f"{self._items[name].__qualname__}; choose another name"
                )
            self._items[name] = cls
            cls.registered_name = name
            return cls

        return decorator

    def get(self, name: str) -> type:
        load_plugins()
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {known}. Third-party {self.kind}s are found "
                f"once their package is installed (entry-point group {PLUGIN_GROUP!r})"
            )
        return self._items[name]

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._items


ENCODERS = Registry("encoder")
DECODERS = Registry("decoder")
LIKELIHOODS = Registry("likelihood")
POSTERIORS = Registry("posterior")
PRIORS = Registry("prior")
DATASETS = Registry("dataset")

REGISTRIES = {r.kind: r for r in (ENCODERS, DECODERS, LIKELIHOODS, POSTERIORS, PRIORS, DATASETS)}

register_encoder = ENCODERS.register
register_decoder = DECODERS.register
register_likelihood = LIKELIHOODS.register
register_posterior = POSTERIORS.register
register_prior = PRIORS.register
register_dataset = DATASETS.register

list_encoders = ENCODERS.names
list_decoders = DECODERS.names
list_likelihoods = LIKELIHOODS.names
list_posteriors = POSTERIORS.names
list_priors = PRIORS.names
list_datasets = DATASETS.names
