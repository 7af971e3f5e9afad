"""Registries: decorators, errors, entry-point plugins, and a real third-party package."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cvae_bridge import registry
from cvae_bridge.registry import Registry

ROOT = Path(__file__).parents[1]


def test_duplicate_names_raise():
    things = Registry("thing")

    @things.register("a")
    class A:
        pass

    assert things.get("a") is A and things.names() == ["a"] and A.registered_name == "a"
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a")(type("B", (), {}))


def test_unknown_names_list_the_known_ones_and_mention_plugins():
    with pytest.raises(
        KeyError,
        match="unknown encoder 'audio'; known: action, image, image_backbone, text, vector.*cvae_bridge.plugins",
    ):
        registry.ENCODERS.get("audio")


def test_every_kind_has_its_builtins():
    assert {"image", "text", "action", "vector"} <= set(registry.list_encoders())
    assert {"image", "action", "vector"} <= set(registry.list_decoders())
    assert set(registry.list_likelihoods()) == {
        "bernoulli",
        "gaussian",
        "laplace",
        "categorical",
        "logistic_mixture",
    }
    assert set(registry.list_posteriors()) == {"mlp", "transformer"}
    assert set(registry.list_priors()) == {"standard", "conditional"}
    assert {"mnist", "fashion_mnist", "digits", "imagefolder", "hf_dataset", "act_hdf5", "lerobot"} <= set(
        registry.list_datasets()
    )


def test_entry_points_load_lazily_on_first_lookup(monkeypatch):
    loaded = []

    class FakeEntryPoint:
        name, value = "fake", "fake_plugin"

        def load(self):
            loaded.append(True)
            registry.ENCODERS.register("fake_modality")(type("Fake", (), {}))

    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(
        registry.importlib.metadata,
        "entry_points",
        lambda group: [FakeEntryPoint()] if group == registry.PLUGIN_GROUP else [],
    )
    monkeypatch.setitem(registry.ENCODERS._items, "placeholder", object)  # restore-on-exit of the dict
    try:
        assert not loaded
        assert registry.ENCODERS.get("fake_modality").__name__ == "Fake"
        assert loaded == [True]
        registry.ENCODERS.names()
        assert loaded == [True]  # once
    finally:
        registry.ENCODERS._items.pop("fake_modality", None)


def test_a_broken_plugin_names_itself(monkeypatch):
    class Broken:
        name, value = "broken", "broken_plugin"

        def load(self):
            raise ModuleNotFoundError("No module named 'torchaudio'")

    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [Broken()])
    with pytest.raises(ImportError, match="plugin 'broken' \\(broken_plugin\\) failed to load.*torchaudio"):
        registry.ENCODERS.get("image")


def test_installed_plugin_package_trains_a_model(tmp_path):
    """pip-installs tools/plugin_template into its own folder and, in a fresh interpreter that
    sees it, lists its parts and trains a model on its modality and dataset with the CLI."""
    target, source = tmp_path / "site", tmp_path / "plugin"
    shutil.copytree(ROOT / "tools" / "plugin_template", source)  # the build writes beside the sources
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    listing = subprocess.run(
        [sys.executable, "-m", "cvae_bridge.cli", "list"], env=env, capture_output=True, text=True, check=True
    )
    assert "waveform             cvae_bridge_waveform.WaveformEncoder" in listing.stdout
    assert "sine_waves" in listing.stdout

    config = {
        "model": {
            "d_model": 32,
            "latent_dim": 4,
            "conditions": {"frequency": {"type": "vector", "shape": [1]}},
            "targets": {
                "wave": {
                    "encoder": {"type": "waveform"},
                    "decoder": {"type": "waveform"},
                    "likelihood": {"type": "gaussian", "scale": "fixed", "init_scale": 0.3},
                }
            },
        },
        "data": {"type": "sine_waves"},
        "train": {
            "output_dir": str(tmp_path / "run"),
            "steps": 100,
            "batch_size": 32,
            "lr": 0.01,
            "warmup_steps": 10,
            "log_every": 10,
            "eval_every": 0,
            "checkpoint_every": 0,
            "progress_bar": False,
            "trackers": [],
        },
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "cvae_bridge.cli", "train", str(tmp_path / "run.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] - 20, (log[0]["loss"], log[-1]["loss"])
