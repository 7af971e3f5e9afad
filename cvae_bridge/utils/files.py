"""File helpers that keep good data safe: atomic folder and file writes, paths confined to a root.

Training checkpoints are the one writer that does not use these: every process of a distributed
run writes into the same temporary folder, which the main process renames (training/checkpoints.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import ConfigError, InputError

LOCK_NAME = ".lock"


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` in one rename.

    If the body raises (or the process dies), `path` keeps its previous contents and the
    temporary folder is removed (or left with a `.tmp-` name that nothing reads).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    restore_retired(path)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a writer that was killed
        shutil.rmtree(stale, ignore_errors=True)
    tag = uuid.uuid4().hex[:8]
    temporary = path.with_name(f".{path.name}.tmp-{tag}")
    temporary.mkdir()
    try:
        yield temporary
        # Flush file contents before the rename makes them visible under the real name, and the
        # parent folder after it, so that the rename itself survives a power loss.
        fsync_files(temporary)
        if path.exists():
            # Move the old folder aside first: os.replace cannot replace a non-empty directory.
            retired = path.with_name(f".{path.name}.old-{tag}")
            os.replace(path, retired)
            os.replace(temporary, path)
            fsync_directory(path.parent)
            shutil.rmtree(retired)
        else:
            os.replace(temporary, path)
            fsync_directory(path.parent)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file beside it: readers see the old file or the
    new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def fsync_files(folder: str | Path) -> None:
    """fsync every file under `folder`, then its subfolders and itself: their contents are on
    the disk before a rename publishes them."""
    folder = Path(folder)
    children = sorted(folder.rglob("*"))
    for child in children:
        if child.is_file() and not child.is_symlink():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
    for child in [*children, folder]:
        if child.is_dir() and not child.is_symlink():
            fsync_directory(child)


def fsync_directory(folder: str | Path) -> None:
    """fsync a folder itself, so that the renames into it survive a power loss (not on Windows,
    where folders cannot be opened)."""
    if os.name == "nt":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str = "a training run") -> Iterator[Path]:
    """Hold an exclusive `flock` on `folder/.lock` (which names the holder's pid) for the body.

    A second holder is refused with a ConfigError naming the folder and the pid. The kernel
    releases the lock when its process dies, so a lock file left by a killed run blocks nothing.
    (Without fcntl, on Windows, nothing is locked.)"""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:
        yield path
        return
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
            holder = f"pid {holder}" if holder.isdigit() else "a process that has not written its pid yet"
            raise ConfigError(
                f"{folder} is in use by {what} ({holder}, holding {LOCK_NAME}): wait for it to end or "
                f"stop it, or set train.output_dir to another folder"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def restore_retired(path: str | Path) -> None:
    """Put back a folder that `atomic_directory` had moved aside when a crash struck between
    its two renames (the old folder is complete; the new one never arrived)."""
    path = Path(path)
    if path.exists():
        return
    retired = sorted(path.parent.glob(f".{path.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if retired:
        os.replace(retired[-1], path)


def confined_path(root: str | Path, relative: str, what: str) -> Path:
    """Resolve `relative` inside `root`, refusing absolute paths and anything that escapes it
    (`..`, symlinks out): dataset metadata must not point at files outside the dataset."""
    root = Path(root).resolve()
    # Quoted as a short prefix only: a message must not grow with what a file holds.
    if "\0" in relative:
        raise InputError(f"{what}: path {relative!r:.80} contains a NUL byte")
    if Path(relative).is_absolute():
        raise InputError(
            f"{what}: absolute path {relative!r:.80} is not allowed; paths must be relative to {root}"
        )
    try:
        resolved = (root / relative).resolve()
    except OSError as error:  # a name too long for the file system, a symlink loop
        raise InputError(f"{what}: path {relative!r:.80} cannot be resolved: {error.strerror}") from None
    if not resolved.is_relative_to(root):
        raise InputError(f"{what}: path {relative!r:.80} points outside the dataset folder {root}")
    return resolved
