"""Registries: decorators, errors, entry-point plugins, and a real third-party package."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cvae_bridge import ConditionalVAE, Decoder, Encoder, ModelConfig, from_dict, registry
from cvae_bridge.config import DecoderConfig, EncoderConfig
from cvae_bridge.errors import ConfigError, RegistrationError
from cvae_bridge.modalities.vector import VectorEncoder
from cvae_bridge.registry import Registry

ROOT = Path(__file__).parents[1]


def test_duplicate_names_raise():
    things = Registry("thing")

    @things.register("a")
    class A:
        pass

    assert things.get("a") is A and things.names() == ["a"] and A.registered_name == "a"
    with pytest.raises(RegistrationError, match="thing .a. is already registered"):
        things.register("a")(type("B", (), {}))


@dataclass
class PlainConfig(EncoderConfig):
    width: int = 4


@pytest.mark.parametrize(
    "body, missing",
    [
        ({"Config": PlainConfig}, "implement forward"),
        (
            {"forward": lambda self, value, mask=None: None},
            "set `Config` to a dataclass deriving from cvae_bridge.config.EncoderConfig",
        ),
        ({"Config": dict, "forward": lambda self, value, mask=None: None}, "got <class 'dict'>"),
    ],
)
def test_an_encoder_breaking_the_contract_fails_when_it_is_defined(body, missing):
    with pytest.raises(RegistrationError, match=f"encoder 'broken': Broken must .*{missing}"):
        registry.register_encoder("broken")(type("Broken", (Encoder,), body))
    assert "broken" not in registry.list_encoders()


def test_a_component_of_the_wrong_base_fails_when_it_is_defined():
    with pytest.raises(
        RegistrationError, match="decoder 'loose': Loose must subclass cvae_bridge.modalities.base.Decoder"
    ):
        registry.register_decoder("loose")(type("Loose", (), {"Config": DecoderConfig}))


def test_a_decoder_must_implement_the_site_layout():
    body = {"Config": DecoderConfig, "forward": lambda self, z, conditions: z}
    with pytest.raises(RegistrationError, match="decoder 'flat': Flat must implement to_sites, from_sites"):
        registry.register_decoder("flat")(type("Flat", (Decoder,), body))


def test_a_decoder_that_sets_no_layout_is_refused_when_the_model_is_built(monkeypatch):
    class Lazy(Decoder):
        Config = DecoderConfig

        def forward(self, z, conditions):
            return z

        to_sites = from_sites = forward

    monkeypatch.setitem(registry.DECODERS._items, "lazy", Lazy)
    config = {
        "latent_dim": 2,
        "targets": {
            "y": {
                "encoder": {"type": "vector", "shape": [2]},
                "decoder": {"type": "lazy"},
                "likelihood": {"type": "gaussian"},
            }
        },
    }
    with pytest.raises(
        ConfigError,
        match="model.targets.y.decoder: .*Lazy.__init__ must set event_shape .*sites .*channels .*out_features",
    ):
        ConditionalVAE(from_dict(ModelConfig, config))


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
            registry.ENCODERS.register("fake_modality")(type("Fake", (VectorEncoder,), {}))

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
    """pip-installs examples/plugin_template into its own folder and, in a fresh interpreter that
    sees it, lists its parts and trains a model on its modality and dataset with the CLI."""
    target, source = tmp_path / "site", tmp_path / "plugin"
    shutil.copytree(ROOT / "examples" / "plugin_template", source)  # the build writes beside the sources
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
