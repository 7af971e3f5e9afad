"""One least-recently-used cache for every bounded cache in cvae_bridge: text-encoder outputs per
caption, frozen image-backbone features per frame, encoded images of parquet row groups, and open
file handles."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """Keeps the most recently used entries within `capacity`: a number of entries, or a total
    `cost` (bytes, say). The newest entry always stays, even alone over the budget. `on_evict`
    releases what an evicted or replaced value holds (a file handle)."""

    def __init__(
        self,
        capacity: int,
        cost: Callable[[V], int] | None = None,
        on_evict: Callable[[V], None] | None = None,
    ):
        self.capacity = capacity
        self._cost = cost or (lambda value: 1)
        self._on_evict = on_evict
        self._items: OrderedDict[K, V] = OrderedDict()
        self.total = 0  # the summed cost of the entries

    def __contains__(self, key: K) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        """Keys, least recently used first."""
        return iter(self._items)

    def values(self) -> Iterator[V]:
        return iter(self._items.values())

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value (now the most recently used), or `default`."""
        if key not in self._items:
            return default
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: K, value: V) -> None:
        if key in self._items:
            self._release(self._items.pop(key))
        self._items[key] = value
        self.total += self._cost(value)
        while self.total > self.capacity and len(self._items) > 1:
            self._release(self._items.popitem(last=False)[1])

    def clear(self) -> None:
        while self._items:
            self._release(self._items.popitem(last=False)[1])

    def _release(self, value: V) -> None:
        self.total -= self._cost(value)
        if self._on_evict is not None:
            self._on_evict(value)
