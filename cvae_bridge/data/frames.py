"""Camera streams of robot episodes, read lazily: a `FrameSequence` decodes one frame when indexed,
so an episode's video never has to fit in memory; `OpenFiles` keeps the files they read open
(per process, reopened when a file changes on disk)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError
from ..utils.lru import LRUCache


class FrameSequence:
    """A camera stream of one episode, read lazily: `len()` frames, `[t]` -> (H, W, 3) uint8.

    Subclasses keep only paths and indices (never open file handles), so they pickle into
    DataLoader worker processes; each process opens its own handles on first use.
    """

    def __init__(self, shape: tuple[int, ...], where: str):
        self.shape = tuple(int(s) for s in shape)  # (T, H, W, 3)
        self.where = where  # "<file>: <key>", for error messages

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, t: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, t: int) -> np.ndarray:
        if not 0 <= t < len(self):
            raise IndexError(f"{self.where}: frame {t} out of range for {len(self)} frames")
        frame = self.read(int(t))
        if frame.shape != self.shape[1:] or frame.dtype != np.uint8:
            raise InputError(
                f"{self.where}: frame {t} is {frame.dtype} {frame.shape}, expected uint8 {self.shape[1:]}"
            )
        return frame


def file_identity(path: str) -> tuple[int, int, int]:
    """(inode, mtime, size): changes when a file is rewritten or replaced."""
    try:
        st = os.stat(path)
    except OSError as error:
        raise InputError(f"{path}: cannot open: {error}") from error
    return st.st_ino, st.st_mtime_ns, st.st_size


class OpenFiles:
    """Per-process LRU of open file handles (HDF5 files, parquet files, videos), reopened when
    the file changes on disk. Handles inherited through a fork are set aside, never used or
    closed in the child."""

    def __init__(self, capacity: int = 64):
        self.capacity = capacity
        self._pid = os.getpid()
        self._items = self._new()
        self._inherited: list = []

    def _new(self) -> LRUCache[str, tuple[Any, tuple]]:
        """path -> (handle, the file's identity when it was opened)"""
        return LRUCache(self.capacity, on_evict=lambda item: self._close(item[0]))

    def get(self, path: str, opener: Callable[[str], Any]) -> Any:
        if self._pid != os.getpid():
            self._inherited.append(self._items)
            self._items, self._pid = self._new(), os.getpid()
        identity = file_identity(path)
        item = self._items.get(path)
        if item is not None and item[1] == identity:
            return item[0]
        handle = opener(path)
        self._items.put(path, (handle, identity))  # closes the stale handle, if any
        return handle

    @staticmethod
    def _close(handle: Any) -> None:
        close = getattr(handle, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - a handle that fails to close is dropped all the same
                pass


class ArrayFrames(FrameSequence):
    """Frames already in memory (a (T, H, W, 3) uint8 array), e.g. episodes built in Python."""

    def __init__(self, array: np.ndarray, where: str = "in-memory frames"):
        super().__init__(array.shape, where)
        self.array = array

    def read(self, t: int) -> np.ndarray:
        return np.asarray(self.array[t])
