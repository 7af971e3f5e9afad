"""Signals from outside a `cvae-bridge train` process.

SIGTERM (a scheduler's stop, `docker stop`) asks the trainer to finish its step, checkpoint and
exit with 128 + 15; SIGKILL gives it no chance at all. Either way `--resume` completes the run
with bitwise the weights of an uninterrupted one. (SIGINT in-process: tests/test_training.py::
test_interrupted_and_resumed_run_matches_uninterrupted.)"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import (
    assert_same_weights,
    final_weights,
    finish,
    run_config,
    start_training,
    wait_for,
    write_config,
)

from cvae_bridge.training import train
from cvae_bridge.training.checkpoints import list_checkpoints

STEPS = 120  # long enough (seconds) that a signal sent after the first checkpoint lands mid-run


def config(out: Path, **train):
    return run_config(out, **{"steps": STEPS, "checkpoint_every": 10, "log_every": 10, **train})


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The final weights of an uninterrupted run (in this process: the same code and thread count)."""
    out = tmp_path_factory.mktemp("reference")
    train(config(out))
    return final_weights(out)


def newest_step(out: Path) -> int:
    found = list_checkpoints(out)
    return int(found[-1].name.removeprefix("step_")) if found else 0


def test_sigterm_checkpoints_exits_143_and_resumes_exactly(tmp_path, reference):
    out, log = tmp_path / "run", tmp_path / "log.txt"
    config_file = write_config(config(out), tmp_path / "run.yaml")
    process = start_training(config_file, log)
    wait_for(lambda: newest_step(out) > 0, process, log)
    process.send_signal(signal.SIGTERM)
    assert finish(process, log) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    stopped = newest_step(out)
    assert 0 < stopped < STEPS
    assert f"interrupted by SIGTERM at step {stopped};" in log.read_text()
    assert f"step {stopped:,} of {STEPS:,}" in (out / "model" / "README.md").read_text()  # exported

    process = start_training(config_file, log, "--resume")
    assert finish(process, log) == 0, log.read_text()[-3000:]
    assert f"resuming from {out / 'checkpoints' / f'step_{stopped:08d}'} (step {stopped})" in log.read_text()
    assert_same_weights(final_weights(out), reference)


@pytest.mark.parametrize("complete", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_group_signals_with_dataloader_workers_checkpoint_and_resume(tmp_path, reference, complete):
    """A terminal's Ctrl-C, `systemctl stop` and Slurm's `scancel` signal the whole process group,
    DataLoader workers included: they ignore it, and the trainer checkpoints and exits 128 + signal,
    every time, and the next run resumes from that checkpoint. (Slow: the run then completes with
    the weights of an uninterrupted one.)"""
    out, log = tmp_path / "run", tmp_path / "log.txt"
    config_file = write_config(config(out, num_workers=2), tmp_path / "run.yaml")
    for i, stop in enumerate([signal.SIGTERM, signal.SIGINT, signal.SIGTERM]):
        since = newest_step(out)
        process = start_training(config_file, log, *(["--resume"] if i else []), start_new_session=True)
        wait_for(lambda since=since: newest_step(out) > since, process, log)
        os.killpg(process.pid, stop)
        assert finish(process, log) == 128 + stop, log.read_text()[-3000:]
        if i:
            assert (
                f"resuming from {out / 'checkpoints' / f'step_{since:08d}'} (step {since})" in log.read_text()
            )
        stopped = newest_step(out)
        assert since < stopped < STEPS, "the run ended before it was stopped: raise STEPS"
        assert f"interrupted by {stop.name} at step {stopped};" in log.read_text()
        assert "Traceback" not in log.read_text()  # nor from the workers' shutdown
        assert f"step {stopped:,} of {STEPS:,}" in (out / "model" / "README.md").read_text()
    if complete:
        process = start_training(config_file, log, "--resume", start_new_session=True)
        assert finish(process, log) == 0, log.read_text()[-3000:]
        assert_same_weights(final_weights(out), reference)


def kill_after_a_new_checkpoint(config_file: Path, out: Path, log: Path, delay: float, resume: bool) -> None:
    """Start (or resume) training, wait for a checkpoint newer than the current one, wait `delay`
    seconds more, and SIGKILL the process."""
    since = newest_step(out)
    process = start_training(config_file, log, *(["--resume"] if resume else []))
    wait_for(lambda: newest_step(out) > since, process, log)
    time.sleep(delay)
    process.kill()
    assert finish(process, log) == -signal.SIGKILL, "the run ended before it was killed: raise STEPS"


def test_sigkill_after_the_first_checkpoint_resumes_exactly(tmp_path, reference):
    out, log = tmp_path / "run", tmp_path / "log.txt"
    config_file = write_config(config(out), tmp_path / "run.yaml")
    kill_after_a_new_checkpoint(config_file, out, log, delay=0.3, resume=False)
    assert 0 < newest_step(out) < STEPS
    assert train(config(out), resume=True).status == "completed"
    assert_same_weights(final_weights(out), reference)


@pytest.mark.slow
def test_repeated_sigkills_at_random_points_resume_exactly(tmp_path, reference):
    """Four kills at random moments, with a checkpoint every step so that some land mid-write;
    each restart resumes from whatever checkpoint is complete."""
    out, log = tmp_path / "run", tmp_path / "log.txt"
    config_file = write_config(config(out, checkpoint_every=1, keep_checkpoints=2), tmp_path / "run.yaml")
    delays = random.Random(os.getpid()).sample([0.0, 0.013, 0.05, 0.11, 0.2, 0.37], 4)
    for i, delay in enumerate(delays):
        kill_after_a_new_checkpoint(config_file, out, log, delay, resume=i > 0)
    assert newest_step(out) < STEPS
    process = start_training(config_file, log, "--resume")
    assert finish(process, log) == 0, log.read_text()[-3000:]
    assert_same_weights(final_weights(out), reference)
