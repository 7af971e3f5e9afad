"""The scripts in examples/ run as a user would run them, at smoke-test sizes."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvae_bridge import ConditionalVAE
from cvae_bridge.data.lerobot import write_lerobot_dataset

EXAMPLES = Path(__file__).parents[1] / "examples"


def example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("example") / "run"
    model_dir = example("train_from_python").main(["--steps", "3", "--limit", "256", "--out", str(out)])
    assert len(list((out / "example_samples").glob("*.png"))) == 8
    return model_dir


def captioned_images(folder: Path) -> Path:
    """Twelve 28x28 grey squares and bars with captions: an imagefolder of our own."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        pixels = np.zeros((28, 28), np.uint8)
        if i % 2:
            pixels[8:20, 8:20] = 255
        else:
            pixels[:, 12:16] = 255
        pixels = np.clip(pixels + rng.integers(0, 30, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": "a square" if i % 2 else "a bar"}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    "extra", [[], ["--lora"], ["--freeze", "condition_encoders.*"]], ids=["full", "lora", "frozen"]
)
def test_finetune_example_adapts_the_trained_model(trained, tmp_path, extra):
    images = captioned_images(tmp_path / "images")
    out = tmp_path / "finetuned"
    model_dir = example("finetune").main(
        [
            "--base",
            str(trained),
            "--images",
            str(images),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--out",
            str(out),
            *extra,
        ]
    )
    assert (out / "example_sample.png").is_file()
    init = json.loads((out / "init.json").read_text())
    assert init["loaded"] and not init["new"]  # every tensor came from the base
    before = ConditionalVAE.from_pretrained(trained).state_dict()
    after = ConditionalVAE.from_pretrained(model_dir).state_dict()
    assert before.keys() == after.keys()
    assert any(not (before[k] == after[k]).all() for k in before), "fine-tuning changed nothing"


def test_policy_on_recorded_data_example_takes_the_sizes_from_the_recording(tmp_path, monkeypatch):
    """A 6-joint recording without object poses, named by repo id under LeRobot's home."""
    rng = np.random.default_rng(0)
    episodes = [
        {
            "observation.state": rng.normal(size=(n, 6)).astype(np.float32),
            "action": rng.normal(size=(n, 6)).astype(np.float32),
            "task": "pick up the cube",
        }
        for n in (12, 10, 9)
    ]
    write_lerobot_dataset(tmp_path / "home" / "someone" / "arm", episodes, fps=30)
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "home"))
    report = example("policy_on_recorded_data").main(
        [
            "--data",
            "someone/arm",
            "--steps",
            "2",
            "--chunk-size",
            "4",
            "--batch-size",
            "4",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert report["frames"] == 31 and np.isfinite(report["l1"])
    saved = json.loads((tmp_path / "run" / "model" / "run_config.json").read_text())
    assert saved["model"]["conditions"]["qpos"]["shape"] == [6]
    assert "env_state" not in saved["model"]["conditions"]
