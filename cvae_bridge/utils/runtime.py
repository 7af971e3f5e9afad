"""Process-wide settings that training and evaluation on a CPU need to run at full speed."""

from __future__ import annotations

import ctypes
import sys

import torch

from ..errors import ConfigError

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> None:
    """Let glibc keep freed tensor memory for the next step instead of returning it to the OS.

    By default glibc serves blocks above a (dynamic) threshold with mmap and unmaps them on free,
    so every training step faults the pages of its activations in again: the default
    text-to-image command on two cores spent 272 s in the kernel beside 1,329 s of user time
    (135 million page faults); `cvae-bridge train` alone now spends 2.5 s there. Every block
    now comes from the heap (no mmap: the threshold cannot be raised past 32 MiB, and a 480x640
    image model's activations at batch 8 are 80-240 MB each, faulted in again every step: see
    README "Performance"), the heap is never trimmed (an ACT step at batch 8 frees more than
    1 GiB at its top: trimmed, the next step faults it in again), and all threads share one
    arena (a worker thread's own arena is shrunk and faulted in likewise).
    The process keeps its peak memory, as a training step reaches it again each time. A no-op on
    other C libraries and systems.
    """
    if not sys.platform.startswith("linux"):
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # the C library the process runs on
    if mallopt is not None:
        mallopt(_M_MMAP_MAX, 0)
        mallopt(_M_TRIM_THRESHOLD, -1)  # -1: never (mallopt(3))
        mallopt(_M_ARENA_MAX, 1)


def building_skeleton() -> bool:
    """True while a model is built on the meta device (hub.py checks a folder's tensor shapes that
    way before allocating anything): loaders of pretrained parts then build the architecture only."""
    return torch.get_default_device().type == "meta"


def capturing_cuda_graph() -> bool:
    """True while the current CUDA stream is captured into a graph: no value may be read on the
    host then (a read would wait for work that does not run until the graph is replayed)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def checked_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device, or a ConfigError saying that it is not a device name or that
    this machine does not have it (torch would fail later, in an assertion deep in its CUDA code).
    "auto" is the GPU where there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ConfigError(
            f"device: expected a device name such as 'auto', 'cpu', 'cuda' or 'cuda:1', got {str(device)[:80]!r}"
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            built = "built without CUDA" if torch.version.cuda is None else "finds no GPU"
            raise ConfigError(f"device {str(device)!r}: this torch ({torch.__version__}) {built}; use 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {str(device)!r}: MPS is not available on this machine; use 'cpu'")
    return resolved
