"""Untrusted files: weights are read as safetensors only, nothing is unpickled, no remote code
runs. A malicious pickle whose `__reduce__` would create a marker file is planted where each
loader looks, and the marker must never appear.

Covered elsewhere, not repeated: dataset metadata pointing outside the dataset folder is refused
(tests/data/test_images.py::test_imagefolder_refuses_paths_outside for imagefolder's
metadata.jsonl, tests/data/test_robot.py::test_templates_outside_the_dataset_are_refused for
LeRobot's data_path / video_path templates)."""

from __future__ import annotations

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import build
from reliability_helpers import run_config, text_encoder, text_model_copy

import cvae_bridge
from cvae_bridge import ConditionalVAE
from cvae_bridge.errors import CheckpointError, ConfigError
from cvae_bridge.training import train
from cvae_bridge.training.checkpoints import list_checkpoints

PACKAGE = Path(cvae_bridge.__file__).parent
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_calls(source: str) -> list[str]:
    """Lines of `source` that could run code from a file: unpickling, torch.load without
    weights_only=True, numpy's allow_pickle, non-safe YAML loads, trust_remote_code not False."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            found += [
                f"{line}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in UNPICKLERS - {"pickle"}
            ]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNPICKLERS:
            found.append(f"{line}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            keywords = {k.arg: k.value for k in node.keywords}
            func = node.func
            owner = (
                func.value.id
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                else None
            )
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            constant = lambda key, keywords=keywords: getattr(keywords.get(key), "value", None)  # noqa: E731
            # Serialising is harmless (metaworld's Task API takes a pickled dict); loading is not.
            if owner in UNPICKLERS and name != "dumps":
                found.append(f"{line}: {owner}.{name}")
            if owner == "torch" and name == "load" and constant("weights_only") is not True:
                found.append(f"{line}: torch.load without weights_only=True")
            if "allow_pickle" in keywords and constant("allow_pickle") is not False:
                found.append(f"{line}: allow_pickle")
            if "trust_remote_code" in keywords and constant("trust_remote_code") is not False:
                found.append(f"{line}: trust_remote_code")
            if owner == "yaml" and name in {"load", "load_all", "unsafe_load", "full_load", "full_load_all"}:
                found.append(f"{line}: yaml.{name}")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "torch.load(path)",
        "torch.load(path, weights_only=False)",
        "import pickle\npickle.load(f)",
        "pickle.loads(b)",
        "from pickle import loads",
        "import dill",
        "np.load(p, allow_pickle=True)",
        "yaml.load(text, Loader=yaml.Loader)",
        "AutoModel.from_pretrained(p, trust_remote_code=True)",
        "AutoModel.from_pretrained(p, trust_remote_code=flag)",
    ],
)
def test_the_scan_finds_unsafe_calls(snippet):
    assert unsafe_calls(snippet), snippet


def test_package_source_never_unpickles_or_runs_remote_code():
    assert (
        unsafe_calls(
            "torch.load(p, map_location='cpu', weights_only=True)\npickle.dumps(x)\nyaml.safe_load(t)"
        )
        == []
    )
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = [
        f"{path.relative_to(PACKAGE)}:{hit}" for path in files for hit in unsafe_calls(path.read_text())
    ]
    assert problems == []


class Payload:
    """Unpickling this creates the file `path`: proof that a pickle was executed."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(run_config(out, steps=5))
    return out


def copy_run(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out, list_checkpoints(out)[-1]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize(
    "name, how",
    [
        ("optimizer.bin", "torch.save"),
        ("optimizer.bin", "pickle"),
        ("scheduler.bin", "torch.save"),
        ("random_states_0.pkl", "torch.save"),
    ],
)
def test_resume_does_not_unpickle_a_planted_payload(checkpointed_run, tmp_path, name, how):
    out, checkpoint = copy_run(checkpointed_run, tmp_path)
    marker = tmp_path / "executed"
    if how == "pickle":
        (checkpoint / name).write_bytes(pickle.dumps(Payload(marker)))
    else:
        torch.save({"state": Payload(marker)}, checkpoint / name)
    with pytest.raises(
        (pickle.UnpicklingError, CheckpointError),
        match="Weights only load failed|random state of process 0 was not restored",
    ):
        train(run_config(out, steps=10), resume=True)
    assert not marker.exists(), f"{name} was unpickled"


def test_accelerate_loads_every_checkpoint_file_weights_only(checkpointed_run, tmp_path, monkeypatch):
    out, _ = copy_run(checkpointed_run, tmp_path)
    real, calls = torch.load, []

    def spy(*args, **kwargs):
        calls.append((Path(args[0]).name, kwargs.get("weights_only")))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert train(run_config(out, steps=6), resume=True).status == "completed"
    assert sorted(calls) == [("optimizer.bin", True), ("random_states_0.pkl", True), ("scheduler.bin", True)]


def test_model_folder_with_pickled_weights_is_refused(tmp_path):
    build("mlp_vae").save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save({"state": Payload(tmp_path / "executed")}, tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="model.safetensors not found"):
        ConditionalVAE.from_pretrained(tmp_path / "m")
    assert not (tmp_path / "executed").exists()


# -- text encoders ---------------------------------------------------------------------------------


def plant_remote_code(folder: Path, marker: Path, model_type: str | None = None) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    config["model_type"] = model_type or config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w')\n"
        "from transformers import BertConfig, BertModel\n"
        "class EvilConfig(BertConfig): pass\n"
        "class EvilModel(BertModel): config_class = EvilConfig\n"
    )


def test_text_model_with_custom_code_of_an_unknown_type_is_refused(tmp_path):
    folder, marker = text_model_copy(tmp_path), tmp_path / "executed"
    plant_remote_code(folder, marker, model_type="evil")
    with pytest.raises(ConfigError, match="cannot load .*custom code"):
        text_encoder(folder)
    assert not marker.exists()


def test_text_model_with_custom_code_loads_the_library_class_instead(tmp_path):
    folder, marker = text_model_copy(tmp_path), tmp_path / "executed"
    plant_remote_code(folder, marker)
    encoder = text_encoder(folder)
    assert type(encoder.backbone).__name__ == "BertModel"
    assert not marker.exists()


def test_text_model_with_pickled_weights_only_is_refused(tmp_path):
    folder, marker = text_model_copy(tmp_path, weights=False), tmp_path / "executed"
    torch.save({"state": Payload(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(ConfigError, match="no file named model.safetensors"):
        text_encoder(folder)
    assert not marker.exists()
