"""Dataset files that point outside their dataset folder, declare more than they hold, or carry
values and names that cannot be decoded are refused with an InputError naming the file, the
dataset / column / key and what was expected, bounded in length (a short prefix of any offending
value), before anything is allocated or written:

- ACT HDF5: external raw storage and virtual datasets (refused wherever they point), shapes far
  beyond the file's size, float64 values beyond float32's range;
- Hugging Face `datasets` Image columns: a row's `path` leading out of the dataset folder (and a
  row with bytes never has its path read);
- LeRobot: path templates in info.json that would expand to absurd names, decompression-bomb
  images in the data parquet files, float64 values beyond float32's range;
- imagefolder: a NUL byte in a metadata.jsonl `file_name`.

Paths that plainly lead out (`..`, absolute, symlinks) are covered in tests/data (see
tests/reliability/test_untrusted.py's docstring)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cvae_bridge.config import DatasetConfig, from_dict
from cvae_bridge.data.act_hdf5 import MAX_EXPANSION
from cvae_bridge.data.lerobot import write_lerobot_dataset
from cvae_bridge.data.lerobot.meta import _templated
from cvae_bridge.errors import InputError
from cvae_bridge.registry import DATASETS

VECTORS = {"qpos": "observation.state", "action": "action"}


def build(kind: str, **fields):
    if kind in ("act_hdf5", "lerobot"):
        fields = {"chunk_size": 4, "val_fraction": 0.0, **fields}
    config = from_dict(DatasetConfig, {"type": kind, **fields})
    return DATASETS.get(kind)(config)


def refused(match: str, kind: str, **fields) -> str:
    """The message of the InputError that building the source raises, checked to be short."""
    with pytest.raises(InputError, match=match) as caught:
        build(kind, **fields)
    message = str(caught.value)
    assert len(message) < 500, message
    return message


# ---------------------------------------------------------------------------------------------
# ACT HDF5.


def act_file(folder: Path, action=None, **create) -> Path:
    """episode_0.hdf5 with a (10, 14) qpos and an action dataset: `action` values, or one made
    with the `create_dataset` keywords `create`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "episode_0.hdf5"
    with h5py.File(path, "w") as root:
        root.attrs["sim"] = True
        root.create_dataset("/observations/qpos", data=np.zeros((10, 14), np.float32))
        if action is not None:
            root.create_dataset("/action", data=action)
        else:
            root.create_dataset("/action", **create)
    return path


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_hdf5_external_storage_is_refused(tmp_path, where):
    # Refused wherever the raw file is: the rule is "no external storage", not a confinement.
    raw = tmp_path / "secret.bin" if where == "outside" else tmp_path / "ds" / "raw.bin"
    raw.parent.mkdir(parents=True, exist_ok=True)
    np.arange(140, dtype=np.float32).tofile(raw)
    act_file(tmp_path / "ds", shape=(10, 14), dtype="f4", external=[(str(raw), 0, 560)])
    message = refused(
        r"episode_0\.hdf5: /action: the data lies in an external raw file .*(secret|raw)\.bin",
        "act_hdf5",
        path=str(tmp_path / "ds"),
        features=VECTORS,
    )
    assert "external storage is refused" in message


def test_hdf5_virtual_dataset_is_refused(tmp_path):
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as root:
        root.create_dataset("x", data=np.ones((10, 14), np.float32))
    layout = h5py.VirtualLayout(shape=(10, 14), dtype="f4")
    layout[:] = h5py.VirtualSource(str(other), "x", shape=(10, 14))
    folder = tmp_path / "ds"
    folder.mkdir()
    with h5py.File(folder / "episode_0.hdf5", "w") as root:
        root.attrs["sim"] = True
        root.create_dataset("/observations/qpos", data=np.zeros((10, 14), np.float32))
        root.create_virtual_dataset("/action", layout)
    refused(
        r"episode_0\.hdf5: /action: a virtual dataset mapping file .*other\.hdf5.*refused",
        "act_hdf5",
        path=str(folder),
        features=VECTORS,
    )


def test_hdf5_shape_beyond_the_file_is_refused_before_allocating(tmp_path):
    # Chunked and never written: 5.6 TB declared in a file of a few KB.
    path = act_file(tmp_path / "ds", shape=(10**11, 14), dtype="f4", chunks=(1024, 14))
    assert path.stat().st_size < 100_000
    message = refused(
        r"episode_0\.hdf5: /action: declares shape \(100000000000, 14\) float32 "
        r"\(5,600,000,000,000 bytes\), more than the limit of [\d,]+ bytes",
        "act_hdf5",
        path=str(tmp_path / "ds"),
        features=VECTORS,
    )
    assert f"{MAX_EXPANSION}x the file's" in message
    # A growable dataset of ordinary size is read as before.
    act_file(tmp_path / "ok", shape=(10, 14), maxshape=(None, 14), dtype="f4", chunks=True)
    assert len(build("act_hdf5", path=str(tmp_path / "ok"), features=VECTORS).split("train")) == 10


def test_hdf5_float64_beyond_float32_is_refused(tmp_path):
    action = np.zeros((10, 14))
    action[3, 2] = 1e300
    act_file(tmp_path / "ds", action=action)
    refused(
        r"episode_0\.hdf5: episode 0: feature 'action' has values beyond float32's range .*"
        r"largest 1e\+300.* at 1 frame\(s\): 3",
        "act_hdf5",
        path=str(tmp_path / "ds"),
        features=VECTORS,
    )
    action[3, 2] = 3e38  # large, but a float32
    act_file(tmp_path / "ok", action=action)
    build("act_hdf5", path=str(tmp_path / "ok"), features=VECTORS)


# ---------------------------------------------------------------------------------------------
# LeRobot.


def lerobot(root: Path, state_dtype=np.float32, images=False, state=None) -> Path:
    rng = np.random.default_rng(0)
    episodes = []
    for n in (6, 5):
        episode = {
            "observation.state": rng.normal(size=(n, 4)).astype(state_dtype),
            "action": rng.normal(size=(n, 3)).astype(np.float32),
            "task": "pick",
        }
        if images:
            episode["observation.images.top"] = rng.integers(0, 256, (n, 6, 5, 3), dtype=np.uint8)
        episodes.append(episode)
    if state is not None:
        episodes[1]["observation.state"] = state
    return write_lerobot_dataset(root, episodes, fps=10)


def rewrite_info(root: Path, **changes) -> None:
    info = json.loads((root / "meta" / "info.json").read_text())
    info.update(changes)
    (root / "meta" / "info.json").write_text(json.dumps(info))


ABSURD_TEMPLATES = [
    "data/chunk-{chunk_index:05000d}/file-{file_index:03d}.parquet",  # a width of thousands
    "data/chunk-{chunk_index:5000}/file-{file_index:03d}.parquet",
    "data/chunk-{chunk_index:025d}/file-{file_index:03d}.parquet",  # just past the bound
    "data/{chunk_index:>{file_index}}.parquet",  # a nested width
    "data/{chunk_index.__class__}/{file_index}.parquet",  # attribute access
    "data/{chunk_index!r}/{file_index}.parquet",
    "data/{" + "x" * 5000 + "}.parquet",  # an unknown field with a long name
    "data/" + "{chunk_index}" * 2000 + ".parquet",  # too long a template
]


@pytest.mark.parametrize("template", ABSURD_TEMPLATES, ids=range(len(ABSURD_TEMPLATES)))
def test_lerobot_templates_with_absurd_names_are_refused(tmp_path, template):
    root = lerobot(tmp_path / "ds")
    rewrite_info(root, data_path=template)
    refused(
        r"meta/info\.json: data_path: (template field .* is not allowed|\d+ characters, more than)",
        "lerobot",
        path=str(root),
        features={"action": "action"},
    )


def test_lerobot_video_template_with_absurd_width_is_refused(tmp_path):
    # Video features need PyAV to be read at all; the template is checked by the same function.
    with pytest.raises(InputError, match=r"info\.json: video_path: template field .*05000d") as caught:
        _templated(
            tmp_path,
            "videos/{video_key}/chunk-{chunk_index:05000d}/file-{file_index:03d}.mp4",
            "meta/info.json: video_path",
            video_key="observation.images.top",
            chunk_index=0,
            file_index=0,
        )
    assert len(str(caught.value)) < 500
    ordinary = _templated(
        tmp_path,
        "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:020d}.mp4",
        "meta/info.json: video_path",
        video_key="observation.images.top",
        chunk_index=2,
        file_index=1,
    )
    assert (
        ordinary
        == tmp_path.resolve() / "videos/observation.images.top/chunk-002/file-00000000000000000001.mp4"
    )


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG declaring 400 million pixels in a few dozen bytes: PIL refuses it when opening."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_lerobot_decompression_bomb_image_is_refused(tmp_path):
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(bomb_png()))
    root = lerobot(tmp_path / "ds", images=True)
    path = root / "data" / "chunk-000" / "file-000.parquet"
    table = pq.read_table(path)
    column = "observation.images.top"
    rows = table.column(column).to_pylist()
    rows[8]["bytes"] = bomb_png()  # episode 1 (frames 6..10 of the file), frame 2
    table = table.set_column(
        table.schema.get_field_index(column), column, pa.array(rows, table.schema.field(column).type)
    )
    pq.write_table(table, path)
    source = build("lerobot", path=str(root), features={"top": column, "action": "action"})
    train = source.split("train")
    train[0]  # the other frames decode
    with pytest.raises(
        InputError, match=r"file-000\.parquet: observation\.images\.top: frame 2 \(row 8\): image too large"
    ) as caught:
        train[8]
    assert len(str(caught.value)) < 500


def test_lerobot_float64_beyond_float32_is_refused(tmp_path):
    state = np.zeros((5, 4))
    state[4, 0] = -1e100  # (1e300 would overflow the writer's statistics first)
    root = lerobot(tmp_path / "ds", state_dtype=np.float64, state=state)
    refused(
        r"file-000\.parquet: episode 1: feature 'observation.state' has values beyond float32's range.*: 4",
        "lerobot",
        path=str(root),
        features=VECTORS,
    )


# ---------------------------------------------------------------------------------------------
# Image folders and Hugging Face datasets.


def test_imagefolder_nul_byte_in_file_name_is_refused(tmp_path):
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "a.png")
    lines = [{"file_name": "a.png", "text": "a"}, {"file_name": "a.png\0" + "x" * 5000, "text": "b"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    refused(
        r"metadata\.jsonl, line 2: file_name: path 'a\.png\\x00x+ contains a NUL byte",
        "imagefolder",
        root=str(tmp_path),
        size=[4, 4],
    )


def saved_hf_dataset(folder: Path, rows: list[dict]) -> Path:
    """A dataset saved with `save_to_disk` whose Image column `img` holds `rows` ({bytes, path}
    each) as written: `save_to_disk` would embed the bytes of local paths, so the rows are
    written into its arrow file afterwards, as a crafted dataset would hold them."""
    datasets = pytest.importorskip("datasets")
    placeholder = [Image.new("RGB", (4, 4), (0, 0, 0)) for _ in rows]
    features = datasets.Features({"img": datasets.Image(), "text": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict({"img": placeholder, "text": ["x"] * len(rows)}, features=features)
    dataset.save_to_disk(str(folder))
    (arrow,) = folder.glob("data-*.arrow")
    with pa.ipc.open_stream(pa.BufferReader(arrow.read_bytes())) as reader:
        table = reader.read_all()
    image_type = table.schema.field("img").type
    table = table.set_column(0, "img", pa.array(rows, image_type))
    crafted = arrow.with_suffix(".crafted")
    with pa.ipc.new_stream(str(crafted), table.schema) as writer:
        writer.write_table(table)
    os.replace(crafted, arrow)
    return folder


def png_bytes(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["absolute", "dotdot"])
def test_hf_image_path_outside_the_dataset_is_refused(tmp_path, kind):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(secret)  # exists, so only confinement refuses it
    path = str(secret) if kind == "absolute" else "../secret.png"
    folder = saved_hf_dataset(tmp_path / "ds", [{"bytes": None, "path": path}])
    source = build("hf_dataset", path=str(folder), image_column="img", size=[4, 4])
    with pytest.raises(
        InputError, match=r"row 0: column 'img': image path: (absolute path|path) '.*secret\.png'"
    ) as caught:
        source.split("train")[0]
    assert len(str(caught.value)) < 500


def test_hf_image_path_is_not_read_when_the_row_has_bytes(tmp_path):
    # A row's bytes are what is decoded; its path is never opened, so it cannot leak a file.
    secret = tmp_path / "secret.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(secret)
    (tmp_path / "ds").mkdir()
    Image.new("RGB", (4, 4), (0, 0, 255)).save(tmp_path / "ds" / "inside.png")
    rows = [
        {"bytes": png_bytes((0, 255, 0)), "path": str(secret)},
        {"bytes": png_bytes((0, 255, 0)), "path": "/nonexistent/" + "x" * 5000},
        {"bytes": None, "path": "inside.png"},  # a path alone is read, from inside the folder
    ]
    folder = saved_hf_dataset(tmp_path / "ds", rows)
    split = build("hf_dataset", path=str(folder), image_column="img", size=[4, 4]).split("train")
    for index, color in [(0, [0, 1, 0]), (1, [0, 1, 0]), (2, [0, 0, 1])]:
        np.testing.assert_allclose(split[index]["image"][:, 1, 1].numpy(), color)
    assert os.path.exists(secret)
