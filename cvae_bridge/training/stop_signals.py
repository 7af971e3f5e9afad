"""Stopping a run cleanly: SIGINT / SIGTERM ask the loop to checkpoint and stop after the current
step, and the DataLoader's workers leave those signals to the main process."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader


@contextlib.contextmanager
def stop_requests(request_stop: Callable[[int], None]) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM call `request_stop(signum)` instead of ending the process."""
    chld = getattr(signal, "SIGCHLD", None)  # absent on Windows
    replaced: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        request_stop(signum)
        # A DataLoader worker that the signal reached anyway (started but not yet ignoring
        # it) must not raise, through PyTorch's SIGCHLD handler, in the middle of the step or
        # of the interrupt checkpoint; a fetch that fails for it stops at the last whole step.
        if chld is not None and chld not in replaced:
            replaced[chld] = signal.signal(chld, signal.SIG_DFL)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in {**previous, **replaced}.items():
            signal.signal(s, old)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM. Ctrl-C, `systemctl stop` and Slurm's `scancel`
    signal the whole process group: a worker killed by it would make the main process fail (in
    its interrupt checkpoint) instead of stopping cleanly. The main process shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_workers(loader: DataLoader) -> None:
    """End the loader's (persistent) workers. They ignore SIGTERM (ignore_stop_signals), so
    multiprocessing's terminate() at exit would not end them and the interpreter would wait for
    them forever: after an error, whose traceback keeps the loader alive, that is a hang."""
    iterator = getattr(loader, "_iterator", None)  # torch keeps persistent workers' iterator there
    if iterator is not None:
        iterator._shutdown_workers()
        loader._iterator = None
