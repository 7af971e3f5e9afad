"""ONNX export (`cvae-bridge export --format onnx`) and the ONNX Runtime backend of the policy: the
graph gives PyTorch's outputs at any batch size, through select_action with temporal ensembling
on a recorded episode too, and for a text-to-image model's decoder path."""

import copy
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import TINY_CONFIGS, build

from cvae_bridge import ConditionalVAE, ModelConfig, RunConfig, from_dict
from cvae_bridge.cli import main
from cvae_bridge.data import build_source
from cvae_bridge.data.lerobot import write_lerobot_dataset
from cvae_bridge.errors import CheckpointError, ConfigError, DependencyError, InputError
from cvae_bridge.export import ExportConfig, export_onnx
from cvae_bridge.hub import read_run_config
from cvae_bridge.pipelines import ActionChunkPolicy
from cvae_bridge.pipelines.onnx import OPSET

TOLERANCE = 1e-4
FEATURES = {"qpos": "observation.state", "camera": "observation.images.top", "action": "action"}
INSTRUCTIONS = ["follow the circle", "stay where you are"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


pytestmark = pytest.mark.usefixtures("one_thread")


def recorded_episode(frames=12):
    """A point turning 0.3 rad a step, seen at 10x12 (the policy resizes to 8x8); the action is the
    next position."""
    t = np.arange(frames + 1)
    rng = np.random.default_rng(0)
    return {
        "observation.state": np.stack([np.cos(0.3 * t), np.sin(0.3 * t), 0.1 * t], 1)[:frames].astype(
            np.float32
        ),
        "observation.images.top": rng.integers(0, 256, (frames, 10, 12, 3), dtype=np.uint8),
        "action": np.stack([np.sin(0.3 * t), np.cos(0.3 * t), 0.1 * t], 1)[1:].astype(np.float32),
        "task": INSTRUCTIONS[0],
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny language-conditioned ACT (joints, a camera, a pooled instruction) saved with its run
    config, and its export through the command line."""
    root = tmp_path_factory.mktemp("onnx")
    write_lerobot_dataset(root / "data", [recorded_episode()], fps=10)
    config = copy.deepcopy(TINY_CONFIGS["act"])
    config["conditions"]["instruction"] = {"type": "text", "output": "pooled"}
    torch.manual_seed(0)
    model = ConditionalVAE(from_dict(ModelConfig, config))
    model.set_normalization(
        {
            "qpos": (torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, 0.5, 4.0])),
            "action": (torch.full((3,), 5.0), torch.full((3,), 3.0)),
        }
    )
    data = {
        "type": "lerobot",
        "path": str(root / "data"),
        "features": FEATURES,
        "chunk_size": 5,
        "image_size": [8, 8],
        "instruction_key": "instruction",
        "val_fraction": 0.0,
    }
    model.save_pretrained(root / "model", from_dict(RunConfig, {"model": config, "data": data}))
    command = ["export", "--model", str(root / "model"), "--format", "onnx", "--out", str(root / "onnx")]
    assert main([*command, *[a for text in INSTRUCTIONS for a in ("--instruction", text)]]) == 0
    return root


@pytest.fixture(scope="module")
def policies(exported):
    """(PyTorch, ONNX Runtime) policies of the exported model, temporal ensembling on."""
    return (
        ActionChunkPolicy.from_pretrained(exported / "model", temporal_ensemble=0.01),
        ActionChunkPolicy.from_pretrained(exported / "onnx", backend="onnxruntime", temporal_ensemble=0.01),
    )


def test_the_exported_folder_describes_its_graph(exported):
    graph = json.loads((exported / "onnx" / "onnx.json").read_text())
    assert graph["kind"] == "action_chunk_policy" and graph["opset"] == OPSET == 18
    shapes = {entry["name"]: entry["shape"] for entry in graph["inputs"]}
    assert shapes == {
        "qpos": ["batch", 3],
        "camera": ["batch", 3, 8, 8],
        "instruction.hidden": ["batch", 1, 384],
        "instruction.mask": ["batch", 1],
    }
    assert graph["outputs"] == [{"name": "action", "dtype": "float32", "shape": ["batch", 5, 3]}]
    assert graph["instructions"] == INSTRUCTIONS and graph["latent"] == "prior mean"
    session = ort.InferenceSession(str(exported / "onnx" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == list(shapes)
    assert all(i.shape[0] == "batch" for i in session.get_inputs())  # dynamic, not traced at 2
    assert read_run_config(exported / "onnx").data.features == FEATURES


@pytest.mark.parametrize("size", [1, 3])
def test_the_onnx_policy_gives_pytorch_chunks_at_any_batch_size(policies, size):
    reference, onnx = policies
    assert onnx.model is None and onnx.chunk_size == 5 and onnx.observation_keys == reference.observation_keys
    rng = np.random.default_rng(size)
    observation = {
        "observation.state": rng.normal(size=(size, 3)).astype(np.float32) * 3,
        "observation.images.top": rng.integers(0, 256, (size, 10, 12, 3), dtype=np.uint8),
    }
    texts = [INSTRUCTIONS[i % 2] for i in range(size)]
    expected = reference.predict_action_chunk(observation, texts)
    chunk = onnx.predict_action_chunk(observation, texts)
    assert chunk.shape == expected.shape == (size, 5, 3)
    assert float((chunk - expected).abs().max()) <= TOLERANCE
    assert float(expected.abs().max()) > 1  # un-normalised (action mean 5, std 3): inside the graph


def test_select_action_with_ensembling_replays_a_recorded_episode_as_pytorch_does(exported, policies):
    reference, onnx = policies
    (episode,) = build_source(read_run_config(exported / "model").data).episodes
    reference.reset()
    onnx.reset()
    differences, actions = [], []
    for t in range(len(episode)):
        observation = {key: episode.data[key][t] for key in reference.observation_keys}
        expected = reference.select_action(observation, episode.instruction_at(t))
        action = onnx.select_action(observation, episode.instruction_at(t))
        assert isinstance(action, np.ndarray) and action.shape == (3,)
        differences.append(float(np.abs(action - expected).max()))
        actions.append(action)
    assert len(differences) == 12 and max(differences) <= TOLERANCE
    assert len(onnx.chunks) == 5 and onnx.step == 12  # it queried every step and kept k chunks
    assert np.ptp(np.stack(actions), axis=0).min() > 0  # the actions follow the observations


def test_the_onnx_policy_names_what_it_cannot_take(exported, policies):
    _, onnx = policies
    onnx.reset()
    observation = {"observation.state": np.zeros(3), "observation.images.top": np.zeros((8, 8, 3), np.uint8)}
    with pytest.raises(InputError, match=r"\['open the door'\] not exported with this graph; it knows"):
        onnx.select_action(observation, "open the door")
    with pytest.raises(
        InputError, match=r"batch\['qpos'\]: the graph takes shape \('batch', 3\), got \(1, 4\)"
    ):
        onnx.select_action({**observation, "observation.state": np.zeros(4)}, INSTRUCTIONS[0])
    with pytest.raises(ConfigError, match="backend: expected 'torch' or 'onnxruntime', got 'tensorrt'"):
        ActionChunkPolicy.from_pretrained(exported / "onnx", backend="tensorrt")
    with pytest.raises(CheckpointError, match=r"model.onnx not found: write it with `cvae-bridge export"):
        ActionChunkPolicy.from_pretrained(exported / "model", backend="onnxruntime")


def test_a_missing_onnxruntime_names_the_extra(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(DependencyError, match=r'pip install "cvae-bridge\[onnx\]"'):
        ActionChunkPolicy.from_pretrained(exported / "onnx", backend="onnxruntime")
    with pytest.raises(DependencyError, match=r'needs onnxruntime: pip install "cvae-bridge\[onnx\]"'):
        export_onnx(ExportConfig(model=str(exported / "model"), out=str(exported / "again")))


def test_what_cannot_be_exported_is_named(exported, tmp_path, capsys):
    with pytest.raises(ConfigError, match="conditioned on text \\('instruction'\\); list the instructions"):
        export_onnx(ExportConfig(model=str(exported / "model"), out=str(tmp_path / "out")))
    with pytest.raises(ConfigError, match="out: .* holds the model folder .*, which it would replace"):
        export_onnx(ExportConfig(model=str(exported / "model"), out=str(exported)))
    build("conv_cvae").save_pretrained(tmp_path / "labels")  # label-conditioned images
    command = [
        "export",
        "--model",
        str(tmp_path / "labels"),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "neither an action-chunk policy (one action-chunk target) nor a text-to-image model" in error
    assert "conditions ['label']" in error and not (tmp_path / "out").exists()


def test_the_text_to_image_decoder_path_gives_pytorch_images(tmp_path):
    """The committed tiny text-to-image model (caption word tokens, a learned prior): caption
    features and noise in, the image out, z = prior mean + std * noise."""
    source = ARTIFACTS / "text_to_image" / "model"
    graph = export_onnx(ExportConfig(model=str(source), out=str(tmp_path / "onnx")))
    assert graph["kind"] == "text_to_image_decoder"
    assert [(e["name"], e["shape"]) for e in graph["inputs"]] == [
        ("caption.hidden", ["batch", "tokens", 384]),
        ("caption.mask", ["batch", "tokens"]),
        ("latent.noise", ["batch", 4]),
    ]
    model = ConditionalVAE.from_pretrained(source)
    session = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    encoder = model.condition_encoders["caption"]
    for captions in (["zero"], ["a handwritten seven", "the digit four, written slowly", "nine"]):
        with torch.no_grad():
            hidden, mask = encoder.features(captions)
        noise = torch.randn(len(captions), 4, generator=torch.Generator().manual_seed(0))
        mu, logvar = model.prior_params({"caption": captions})
        expected = {
            "noise": model.decode(mu + torch.exp(0.5 * logvar) * noise, {"caption": captions})["image"],
            "mean": model.sample({"caption": captions}, latent="mean")["image"],
        }
        for name, z_noise in (("noise", noise), ("mean", torch.zeros_like(noise))):
            feeds = {
                "caption.hidden": hidden.numpy(),
                "caption.mask": mask.numpy(),
                "latent.noise": z_noise.numpy(),
            }
            (image,) = session.run(["image"], feeds)
            assert image.shape == (len(captions), 1, 8, 8)
            assert float(np.abs(image - expected[name].numpy()).max()) <= TOLERANCE, (captions, name)
