"""Training checkpoints: Accelerate's state (optimiser, scheduler, scaler, random states) plus
our own model weights (safetensors, frozen pretrained parts left out), EMA weights and a JSON
trainer state. Each checkpoint is written to a temporary folder and renamed into place, so a
crash mid-write never leaves a broken `step_*` folder; only the last few are kept.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import RunConfig, brief_repr
from ..errors import CheckpointError
from ..hub import WEIGHTS_NAME, load_state_strict, saved_state, write_model_files
from ..utils.files import fsync_directory, fsync_files

STATE_NAME = "trainer_state.json"
MODEL_NAME = WEIGHTS_NAME  # the same name: a checkpoint is also a model folder
LOSSES_NAME = "losses.safetensors"  # the training losses' own weights (a discriminator)
EMA_NAME = "ema.safetensors"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoints_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_NAME).is_file()
    ]
    return [p for _, p in sorted(found)]


def rng_fingerprint() -> str:
    return hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]


def install_model_hooks(
    accelerator: Accelerator,
    model: torch.nn.Module,
    losses: torch.nn.Module,
    run_config: RunConfig | None = None,
) -> None:
    """Make Accelerate's save_state/load_state leave the model and the training losses to us: we
    save them without frozen pretrained parts and load them strictly. Losses without weights of
    their own write no file, so checkpoints of runs without them look as they always did.

    With `run_config`, a checkpoint is also a model folder (config.json, run_config.json and a
    card beside the weights), so an intermediate checkpoint can be evaluated or rolled out as it
    is; a run with adapters (LoRA) passes None, as its weights have the adapters' layout."""
    modules = {MODEL_NAME: model}
    if saved_state(accelerator.unwrap_model(losses)):
        modules[LOSSES_NAME] = losses

    def save_hook(models: list, weights: list, output_dir: str) -> None:
        if accelerator.is_main_process:
            for name, module in modules.items():
                if name == MODEL_NAME and run_config is not None:
                    step = int(Path(output_dir).name.rpartition("_")[2])  # save_checkpoint's .tmp-step_N
                    write_model_files(accelerator.unwrap_model(module), Path(output_dir), run_config, step)
                else:
                    save_file(saved_state(accelerator.unwrap_model(module)), os.path.join(output_dir, name))
        weights.clear()

    def load_hook(models: list, input_dir: str) -> None:
        for name, module in modules.items():
            path = os.path.join(input_dir, name)
            load_state_strict(accelerator.unwrap_model(module), load_file(path), path)
        models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | Path, state: dict[str, Any], ema: Any | None, keep: int
) -> Path:
    """Save a resumable checkpoint for `state["step"]` and delete all but the newest `keep`."""
    root = checkpoints_root(output_dir)
    final = root / f"step_{state['step']:08d}"
    temporary = root / f".tmp-step_{state['step']:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(temporary), safe_serialization=True)
        fingerprints = gather_object([rng_fingerprint()])
        if accelerator.is_main_process:
            if ema is not None:
                save_file(ema.state_dict(), str(temporary / EMA_NAME))
            (temporary / STATE_NAME).write_text(json.dumps({**state, "rng": fingerprints}, indent=2))
            if final.exists():
                # The same step again (a signal right after a scheduled checkpoint): nothing changed
                # since, so the checkpoint in place stays and nothing is ever deleted first.
                shutil.rmtree(temporary)
            else:
                # Every process has written its files (gather_object waited for them): on the disk
                # before the rename publishes them, and the rename itself after.
                fsync_files(temporary)
                os.replace(temporary, final)
                fsync_directory(root)
            for old in list_checkpoints(output_dir)[:-keep]:
                shutil.rmtree(old)
    except BaseException as error:
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)  # the earlier checkpoints stay as they were
        if _disk_full(error):
            raise CheckpointError(
                f"no space left on device while writing checkpoint {final.name} in {root} "
                f"({type(error).__name__}: {_short(error)}); the earlier checkpoints are intact: free "
                f"space (or lower train.keep_checkpoints) and resume with --resume"
            ) from error
        raise
    accelerator.wait_for_everyone()
    return final


def _unreadable(path: Path, error: BaseException) -> CheckpointError:
    # Truncated or missing files: say which checkpoint, so the user can fall back to an older one.
    return CheckpointError(
        f"{path} is unreadable ({type(error).__name__}: {_short(error, 400)}); delete it to resume from "
        f"the previous checkpoint"
    )


def _mismatch(path: Path, error: BaseException, changes: list[str] | None) -> CheckpointError:
    """A readable checkpoint whose weights or optimiser state do not fit the current config."""
    detail = f"({type(error).__name__}: {_short(error, 300)})"
    if changes:
        return CheckpointError(
            f"{path} is intact but does not fit the current config, which changed since the run "
            f"started: {'; '.join(changes)}. Resume with the run's config "
            f"({path.parent.parent / 'config.yaml'}), or set train.output_dir to a new folder to start "
            f"a new run {detail}"
        )
    return CheckpointError(
        f"{path} does not fit the model or optimiser built from the current config {detail}: resume "
        f"with the config the run was started with, or set train.output_dir to a new folder"
    )


def _disk_full(error: BaseException) -> bool:
    """ENOSPC, as an OSError or in the words of torch.save (`[enforce fail at inline_container.cc:672]
    . unexpected pos ...`, `... file write failed`) or safetensors (`StorageFull`)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error)
    return isinstance(error, (RuntimeError, SafetensorError)) and (
        "No space left on device" in text
        or "StorageFull" in text
        or ("inline_container" in text and ("write failed" in text or "unexpected pos" in text))
    )


def _short(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_trainer_state(path: str | Path) -> dict[str, Any]:
    """The trainer_state.json of checkpoint `path`, checked: a JSON object with a whole-number
    "step" and "rng", a list of random-state fingerprints (strings), one per process."""
    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint: {STATE_NAME} is missing")
    expected = (
        'expected a JSON object with "step" (a whole number >= 0) and "rng" (a list of strings, one '
        f"per process); delete {path} to resume from the previous checkpoint"
    )
    try:
        state = json.loads(state_file.read_bytes())
    except (OSError, ValueError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(
            f"{state_file} is unreadable ({type(error).__name__}: {_short(error)}); {expected}"
        ) from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{state_file} holds a JSON {type(state).__name__}; {expected}")
    problems = []
    for key, valid in (
        ("step", lambda v: type(v) is int and v >= 0),
        ("rng", lambda v: type(v) is list and all(isinstance(f, str) for f in v)),
    ):
        if key not in state:
            problems.append(f'"{key}" is missing')
        elif not valid(state[key]):
            problems.append(f'"{key}" is {_short(json.dumps(state[key]), 60)}')
    if problems:
        raise CheckpointError(f"{state_file}: {', '.join(problems)}; {expected}")
    return state


def load_checkpoint(
    accelerator: Accelerator, path: str | Path, ema: Any | None, config_changes: list[str] | None = None
) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote; returns the trainer state (step, ...).

    `config_changes` (dotted paths, old -> new) are how the current config differs from the one
    the run was started with: when the weights or the optimiser do not fit, they explain why."""
    path = Path(path)
    state = read_trainer_state(path)
    try:
        accelerator.load_state(str(path))
    except CheckpointError as error:  # a weights file that does not fit the model (load_state_strict)
        raise _mismatch(path, error, config_changes) from error
    except ValueError as error:
        if "parameter group" not in str(error):
            raise _unreadable(path, error) from error
        raise _mismatch(path, error, config_changes) from error  # the optimiser's groups changed
    except (
        OSError,
        RuntimeError,
        EOFError,
        torch.serialization.pickle.UnpicklingError,
        SafetensorError,
    ) as error:
        raise _unreadable(path, error) from error
    # Accelerate logs, rather than raises, when random states fail to load; exact resume needs them.
    expected = (
        state["rng"][accelerator.process_index] if accelerator.process_index < len(state["rng"]) else None
    )
    if rng_fingerprint() != expected:
        raise CheckpointError(
            f"{path}: the random state of process {accelerator.process_index} was not restored (was the run started with a different number of processes?)"
        )
    if ema is not None:
        ema_file = path / EMA_NAME
        if not ema_file.is_file():
            raise CheckpointError(f"{path}: train.ema_decay is set but the checkpoint has no {EMA_NAME}")
        ema.load_state_dict(load_file(str(ema_file)))
    return state


def config_changes(old: dict, new: dict, limit: int = 6) -> list[str]:
    """The fields that differ between two config mappings, as `dotted.path: old -> new` (values
    shortened), model and data fields first; at most `limit`, then how many more."""

    # An empty mapping and an absent one mean the same: only the entries inside count.
    old, new = ({k: v for k, v in flatten(d).items() if v != {}} for d in (old, new))
    missing = object()
    keys = sorted(old.keys() | new.keys(), key=lambda k: (k.startswith("train."), k))
    changed = [k for k in keys if old.get(k, missing) != new.get(k, missing)]
    lines = [
        f"{k}: {brief_repr(old[k], 40) if k in old else '(unset)'} -> {brief_repr(new[k], 40) if k in new else '(unset)'}"
        for k in changed[:limit]
    ]
    if len(changed) > limit:
        lines.append(f"and {len(changed) - limit} more")
    return lines


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {"dotted.key": value}; an empty mapping stays a value."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
