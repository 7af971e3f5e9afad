"""What a run asks of Accelerate: the mixed precision (the launcher's or the config's) and the
experiment trackers, checked before the run starts; and what its processes agree on while it runs."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from ..config import TrainConfig
from ..errors import ConfigError, DependencyError


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """The run's Accelerator; a precision the machine lacks or a missing tracker is named."""
    # Accelerate keeps one global state per process; forget the previous run's precision
    # settings (the process group stays) so that train() can be called again, e.g. in a notebook.
    AcceleratorState._reset_state(reset_partial_state=False)
    # "auto" leaves the choice to Accelerate, which reads the launcher's setting; a config that
    # names a precision wins, and says so when the launcher asked for another.
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if cfg.mixed_precision != "auto" and launcher not in (None, cfg.mixed_precision):
        print(
            f"note: train.mixed_precision={cfg.mixed_precision!r} overrides the launcher's "
            f"--mixed_precision {launcher}; set train.mixed_precision=auto to follow the launcher"
        )
    try:
        return Accelerator(
            mixed_precision=None if cfg.mixed_precision == "auto" else cfg.mixed_precision,
            # Without a GPU, Accelerate must be told so to form a CPU process group (gloo)
            # under `accelerate launch --multi_gpu --num_processes N`.
            cpu=cfg.cpu or not (torch.cuda.is_available() or torch.backends.mps.is_available()),
            log_with=checked_trackers(cfg.trackers) or None,
            project_dir=cfg.output_dir,
            step_scheduler_with_optimizer=False,  # we step the schedule once per optimiser step
        )
    except ValueError as error:
        raise ConfigError(
            f"train.mixed_precision={cfg.mixed_precision!r} on this machine: {error}"
        ) from error


def checked_trackers(names: list[str]) -> list[str]:
    """`train.trackers` as given, or a DependencyError before the run starts: Accelerate itself
    skips a tracker whose package is missing with a log line only, so a run would keep no logs."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(getattr(t, "value", t)) for t in get_available_trackers()}
    for index, name in enumerate(names):
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(
                f"train.trackers[{index}]: unknown tracker {name[:40]!r}; Accelerate has {sorted(LOGGER_TYPE_TO_CLASS)}"
            )
        if name not in available:
            raise DependencyError(
                f"train.trackers[{index}]: {name!r} is not installed (pip install {name}); installed: "
                f"{sorted(available) or 'none'}; or set train.trackers=[] for the log.jsonl file only"
            )
    return list(names)


def any_process(accelerator: Accelerator, flag: torch.Tensor) -> torch.Tensor:
    """`flag` (a bool tensor) or-ed over the processes, on the device: nothing waits for it."""
    if accelerator.num_processes == 1:
        return flag
    return accelerator.reduce(flag.float(), "sum") > 0


def agreed(accelerator: Accelerator, flag: bool) -> bool:
    """True when any process raises `flag` (all processes must take the same branch)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(any_process(accelerator, torch.tensor(flag, device=accelerator.device)))


def mean_over_processes(accelerator: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Each process's loss figures averaged over all of them: what is logged describes the whole
    batch, not the main process's shard of it."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    return dict(zip(keys, accelerator.reduce(values, "mean").tolist()))
