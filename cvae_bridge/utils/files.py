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

from ..errors import InputError


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
        # Flush file contents before the rename makes them visible under the real name.
        for child in temporary.rglob("*"):
            if child.is_file():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
        if path.exists():
            # Move the old folder aside first: os.replace cannot replace a non-empty directory.
            retired = path.with_name(f".{path.name}.old-{tag}")
            os.replace(path, retired)
            os.replace(temporary, path)
            shutil.rmtree(retired)
        else:
            os.replace(temporary, path)
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
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


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
    if Path(relative).is_absolute():
        raise InputError(
            f"{what}: absolute path {relative!r} is not allowed; paths must be relative to {root}"
        )
    resolved = (root / relative).resolve()
    if not resolved.is_relative_to(root):
        raise InputError(f"{what}: path {relative!r} points outside the dataset folder {root}")
    return resolved
