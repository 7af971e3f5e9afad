"""Name -> class registries for every pluggable part.

Built-in parts register themselves when `cvae_bridge` is imported. Third-party packages extend the
registries in two ways: the decorators below, for code in the same process, or an entry point in
the group `cvae_bridge.plugins` (a module, imported lazily on the first lookup, whose import
registers its parts).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import TypeVar

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
            raise ImportError(
                f"cvae_bridge plugin {entry_point.name!r} ({entry_point.value}) failed to load: {error}"
            ) from error


class Registry:
    """A named collection of classes of one kind (encoders, decoders, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: `@ENCODERS.register("image")`. A name can be registered once."""

        def decorator(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(
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
            raise KeyError(
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
