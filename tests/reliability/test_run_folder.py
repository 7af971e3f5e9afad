"""A run folder belongs to one run at a time, and resuming it says plainly what stands in the way:
a config that changed since the run started, or a damaged trainer_state.json."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from reliability_helpers import MODEL, cli_env, run_config

from cvae_bridge.errors import CheckpointError, ConfigError
from cvae_bridge.training import train
from cvae_bridge.training.checkpoints import STATE_NAME, list_checkpoints
from cvae_bridge.utils.files import LOCK_NAME, folder_lock

# -- one run per output folder -------------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    with folder_lock(out):  # a run in progress: this process holds the lock
        with pytest.raises(ConfigError) as caught:
            train(run_config(out, steps=5))
    message = str(caught.value)
    assert message.startswith(f"{out} is in use by a training run (pid {os.getpid()}, holding {LOCK_NAME})")
    assert "train.output_dir" in message
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing else was written
    assert train(run_config(out, steps=5)).status == "completed"  # released: the folder is free
    assert (out / LOCK_NAME).read_text() == ""  # the finished run released it too


def test_a_lock_held_by_another_process_is_refused_and_a_killed_holders_is_not(tmp_path):
    """The lock of a live process refuses the run with its pid; once that process is killed
    (SIGKILL: no clean-up), the lock file it leaves, naming a dead pid, blocks nothing."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from cvae_bridge.utils.files import folder_lock
                with folder_lock(sys.argv[1]):
                    print("locked", flush=True)
                    time.sleep(600)
                """
            ),
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"in use by a training run \(pid {holder.pid},"):
            train(run_config(out, steps=5))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)  # left behind, stale
    assert train(run_config(out, steps=5)).status == "completed"


# -- resuming ------------------------------------------------------------------------------------


def test_resume_with_a_changed_model_config_names_the_changed_fields(tmp_path):
    train(run_config(tmp_path, steps=5))
    model = copy.deepcopy(MODEL)
    model["latent_dim"] = 8
    with pytest.raises(CheckpointError) as caught:
        train(run_config(tmp_path, model=model, steps=10), resume=True)
    message = str(caught.value)
    checkpoint = tmp_path / "checkpoints" / "step_00000005"
    assert message.startswith(f"{checkpoint} is intact but does not fit the current config")
    assert "model.latent_dim: 4 -> 8; train.steps: 5 -> 10." in message
    assert f"Resume with the run's config ({tmp_path / 'config.yaml'})" in message
    assert "set train.output_dir to a new folder" in message
    assert "unreadable" not in message and "delete" not in message
    assert len(message) < 1000


def test_resume_with_changed_optimiser_groups_names_the_changed_fields(tmp_path):
    train(run_config(tmp_path, steps=5))
    changed = {  # eight fields, one of them splitting the optimiser's parameter groups
        "lr_multipliers": {"*decoder*": 0.5},
        **{"adam_betas": [0.8, 0.9], "log_every": 1, "lr": 0.01, "max_grad_norm": 2.0},
        **{"steps": 10, "warmup_steps": 3, "weight_decay": 0.5},
    }
    with pytest.raises(CheckpointError) as caught:
        train(run_config(tmp_path, **changed), resume=True)
    message = str(caught.value)
    assert "is intact but does not fit the current config" in message
    assert "train.adam_betas: [0.9, 0.999] -> [0.8, 0.9]; train.log_every: 5 -> 1;" in message
    assert "train.lr_multipliers.*decoder*: (unset) -> 0.5;" in message
    assert "and 2 more." in message and "parameter groups" in message  # at most six listed
    assert len(message) < 1000


CORRUPT_STATES = {
    "not JSON": ('{"step": 5, "rng": [', "is unreadable (JSONDecodeError: "),
    "not an object": ("[5]", "holds a JSON list;"),
    "no rng": ('{"step": 5}', ': "rng" is missing;'),
    "wrong types": ('{"step": "5", "rng": [1, 2]}', ': "step" is "5", "rng" is [1, 2];'),
}


@pytest.mark.parametrize("case", CORRUPT_STATES)
def test_a_corrupt_trainer_state_names_the_file_and_what_was_expected(tmp_path, case):
    train(run_config(tmp_path, steps=5))
    text, expected = CORRUPT_STATES[case]
    state_file = list_checkpoints(tmp_path)[-1] / STATE_NAME
    assert json.loads(state_file.read_text())["step"] == 5
    state_file.write_text(text)
    with pytest.raises(CheckpointError) as caught:
        train(run_config(tmp_path, steps=10), resume=True)
    message = str(caught.value)
    assert message.startswith(str(state_file)) and expected in message
    assert 'expected a JSON object with "step" (a whole number >= 0) and "rng"' in message
    assert len(message) < 600
