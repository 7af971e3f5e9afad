"""Robot episodes (ACT HDF5, LeRobotDataset v3.0) as action-chunk samples: values, padding,
splits, statistics, task texts, the writers' layouts, and bad input."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from cvae_bridge.config import DatasetConfig, from_dict
from cvae_bridge.data.act_hdf5 import write_act_hdf5
from cvae_bridge.data.lerobot import write_lerobot_dataset
from cvae_bridge.errors import ConfigError, InputError
from cvae_bridge.registry import DATASETS, list_datasets

K = 8
FEATURES = {"qpos": "observation.state", "top": "observation.images.top", "action": "action"}
LENGTHS = [12, 3, 10, 9, 11]  # episode 1 is shorter than K
TASKS = ["pick the cube", "stack the cups"]


def make_episodes(lengths=LENGTHS, seed=0, images=True):
    rng = np.random.default_rng(seed)
    episodes = []
    for i, n in enumerate(lengths):
        episode = {
            "observation.state": rng.normal(size=(n, 4)).astype(np.float32),
            "observation.velocity": rng.normal(size=(n, 4)).astype(np.float32),
            "action": rng.normal(size=(n, 3)).astype(np.float32),
            "task": TASKS[i % 2],
        }
        if images:
            episode["observation.images.top"] = rng.integers(0, 256, size=(n, 6, 5, 3), dtype=np.uint8)
        episodes.append(episode)
    return episodes


def write(kind, path, episodes, **kwargs):
    if kind == "lerobot":
        return write_lerobot_dataset(path, episodes, fps=10, robot_type="aloha", **kwargs)
    return write_act_hdf5(path, episodes, **kwargs)


def build(kind, path, **fields):
    fields = {"features": FEATURES, "chunk_size": K, **fields}
    config = from_dict(DatasetConfig, {"type": kind, "path": str(path), **fields})
    return DATASETS.get(kind)(config)


@pytest.fixture(params=["lerobot", "act_hdf5"])
def kind(request):
    return request.param


@pytest.fixture
def written(kind, tmp_path):
    episodes = make_episodes()
    write(kind, tmp_path / "ds", episodes)
    return kind, tmp_path / "ds", episodes


def instruction_fields(kind):
    # ACT files carry no task text of their own: the writer keeps it in a file attribute, but
    # the config's `instruction` names one for the whole dataset.
    return {"instruction_key": "text"}


def expected_sample(episode, t, k=K):
    n = len(episode["action"])
    steps = episode["action"][t : t + k]
    action = np.zeros((k, 3), np.float32)
    action[: len(steps)] = steps
    mask = np.arange(k) < n - t
    return action, mask


# ---------------------------------------------------------------------------------------------


def test_sources_are_registered():
    assert {"act_hdf5", "lerobot"} <= set(list_datasets())


def test_samples_match_source_arrays(written):
    kind, path, episodes = written
    source = build(kind, path, val_episodes=[2], instruction_key="text")
    train = source.split("train")
    assert len(train) == sum(LENGTHS) - LENGTHS[2]
    checked = 0
    for index in range(len(train)):
        episode_position, t = train.locate(index)
        number = episode_position.index
        episode = episodes[number]
        sample = train[index]
        assert set(sample) == {"qpos", "top", "action", "action_mask", "text"}
        assert sample["qpos"].dtype == torch.float32 and sample["qpos"].shape == (4,)
        np.testing.assert_array_equal(sample["qpos"].numpy(), episode["observation.state"][t])
        assert sample["top"].shape == (3, 6, 5) and sample["top"].dtype == torch.float32
        np.testing.assert_allclose(
            sample["top"].numpy(),
            episode["observation.images.top"][t].transpose(2, 0, 1) / 255.0,
            rtol=0,
            atol=1e-7,
        )
        action, mask = expected_sample(episode, t)
        assert sample["action"].shape == (K, 3) and sample["action"].dtype == torch.float32
        np.testing.assert_array_equal(sample["action"].numpy(), action)
        assert sample["action_mask"].dtype == torch.bool
        np.testing.assert_array_equal(sample["action_mask"].numpy(), mask)
        assert sample["text"] == episode["task"]
        checked += 1
    assert checked == len(train)


def test_padding_past_the_end_and_short_episodes(written):
    kind, path, episodes = written
    source = build(kind, path, val_episodes=[0])
    train = source.split("train")
    # Episode 1 (3 frames) is shorter than K; its first sample is the start of the train split.
    first = train[0]
    assert train.locate(0)[0].index == 1
    np.testing.assert_array_equal(first["action_mask"].numpy(), [True, True, True] + [False] * (K - 3))
    np.testing.assert_array_equal(first["action"][:3].numpy(), episodes[1]["action"])
    assert torch.count_nonzero(first["action"][3:]) == 0
    # The last frame of an episode: one real step, the rest padding.
    last = train[len(train) - 1]
    np.testing.assert_array_equal(last["action_mask"].numpy(), [True] + [False] * (K - 1))
    np.testing.assert_array_equal(last["action"][0].numpy(), episodes[-1]["action"][-1])
    assert torch.count_nonzero(last["action"][1:]) == 0
    # A frame far from the end: no padding.
    middle = train[3]  # episode 2 (10 frames), t = 0
    assert train.locate(3) == (train.episodes[1], 0) and bool(middle["action_mask"].all())


def test_split_is_by_episode_and_deterministic(written):
    kind, path, _ = written
    source = build(kind, path, val_fraction=0.4, seed=3)
    train, val = source.split("train"), source.split("val")
    train_eps = {train.locate(i)[0].index for i in range(len(train))}
    val_eps = {val.locate(i)[0].index for i in range(len(val))}
    assert train_eps.isdisjoint(val_eps)
    assert train_eps | val_eps == set(range(len(LENGTHS)))
    assert len(val_eps) == 2
    assert len(train) + len(val) == sum(LENGTHS)  # every frame is a sample
    assert sorted(val_eps) == build(kind, path, val_fraction=0.4, seed=3).val_episodes
    assert len({tuple(build(kind, path, val_fraction=0.4, seed=s).val_episodes) for s in range(8)}) > 1
    explicit = build(kind, path, val_episodes=[1, 4])
    assert explicit.val_episodes == [1, 4] and explicit.train_episodes == [0, 2, 3]
    with pytest.raises(ValueError, match="'train', 'val'"):
        source.split("test")
    with pytest.raises(InputError, match=r"\[7\] do not exist"):
        build(kind, path, val_episodes=[7])


def test_statistics_match_numpy_over_training_episodes(written):
    kind, path, episodes = written
    source = build(kind, path, val_episodes=[0, 3])
    stats = source.statistics(["qpos", "action"])
    for name, feature in (("qpos", "observation.state"), ("action", "action")):
        values = np.concatenate([episodes[i][feature] for i in (1, 2, 4)]).astype(np.float64)
        mean, std = stats[name]
        assert mean.shape == std.shape == (values.shape[1],)
        np.testing.assert_allclose(mean, values.mean(0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(std, values.std(0), rtol=1e-6, atol=1e-7)
        everything = np.concatenate([e[feature] for e in episodes])
        assert not np.allclose(mean, everything.mean(0))  # the validation episodes are left out
    with pytest.raises(InputError, match="image"):
        source.statistics(["top"])
    with pytest.raises(ConfigError, match="'gripper' is not a modality"):
        source.statistics(["gripper"])


def test_lerobot_tasks_and_fps(tmp_path):
    episodes = make_episodes(images=False)
    write("lerobot", tmp_path / "ds", episodes)
    source = build(
        "lerobot",
        tmp_path / "ds",
        features={"qpos": "observation.state", "action": "action"},
        instruction_key="instruction",
        val_fraction=0.0,
    )
    assert source.fps == 10 and source.tasks == TASKS and source.robot_type == "aloha"
    train = source.split("train")
    for index in range(0, len(train), 3):
        episode, _ = train.locate(index)
        assert train[index]["instruction"] == TASKS[episode.index % 2]
    assert len(source.split("val")) == 0


def test_act_instruction_from_config(tmp_path):
    episodes = make_episodes(images=False)
    for e in episodes:
        del e["task"]
    write("act_hdf5", tmp_path / "ds", episodes)
    features = {"qpos": "observation.state", "qvel": "observation.velocity", "action": "action"}
    with pytest.raises(InputError, match="no task text.*instruction"):
        build("act_hdf5", tmp_path / "ds", features=features, instruction_key="text")
    source = build(
        "act_hdf5",
        tmp_path / "ds",
        features=features,
        instruction_key="text",
        instruction="transfer the cube",
    )
    sample = source.split("train")[0]
    assert sample["text"] == "transfer the cube" and source.sim is True
    assert "text" not in build("act_hdf5", tmp_path / "ds", features=features).split("train")[0]


def test_image_resize_and_pickling(written):
    kind, path, _ = written
    train = build(kind, path, image_size=[4, 3]).split("train")
    sample = train[5]
    assert (
        sample["top"].shape == (3, 4, 3)
        and 0 <= float(sample["top"].min())
        and float(sample["top"].max()) <= 1
    )
    clone = pickle.loads(pickle.dumps(train))  # what a DataLoader worker receives
    again = clone[5]
    for key in ("qpos", "top", "action", "action_mask"):
        assert torch.equal(sample[key], again[key])


# ---------------------------------------------------------------------------------------------
# Reference layouts written by hand, and the writers' layouts read by hand.


def test_act_hdf5_written_by_hand(tmp_path):
    """The layout of ACT's record_sim_episodes.py: datasets created with a shape (float32), filled."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "sim_transfer_cube"
    folder.mkdir()
    source_data = {}
    for i, n in enumerate([7, 5]):
        data = {
            "/observations/qpos": rng.normal(size=(n, 14)),
            "/observations/qvel": rng.normal(size=(n, 14)),
            "/action": rng.normal(size=(n, 14)),
            "/observations/images/top": rng.integers(0, 256, size=(n, 4, 6, 3), dtype=np.uint8),
        }
        with h5py.File(folder / f"episode_{i}.hdf5", "w", rdcc_nbytes=1024**2 * 2) as root:
            root.attrs["sim"] = True
            obs = root.create_group("observations")
            image = obs.create_group("images")
            image.create_dataset("top", (n, 4, 6, 3), dtype="uint8", chunks=(1, 4, 6, 3))
            obs.create_dataset("qpos", (n, 14), dtype="f4")
            obs.create_dataset("qvel", (n, 14), dtype="f4")
            root.create_dataset("action", (n, 14), dtype="f4")
            for name, array in data.items():
                root[name][...] = array
        source_data[i] = data
    (folder / "notes.txt").write_text("not an episode")
    features = {
        "qpos": "observation.state",
        "qvel": "observation.velocity",
        "cam": "observation.images.top",
        "action": "action",
    }
    source = build("act_hdf5", folder, features=features, chunk_size=6, val_fraction=0.0)
    train = source.split("train")
    assert len(train) == 12 and source.sim is True
    sample = train[7 + 2]  # episode 1, t = 2
    data = source_data[1]
    np.testing.assert_allclose(sample["qpos"].numpy(), data["/observations/qpos"][2].astype(np.float32))
    np.testing.assert_allclose(sample["qvel"].numpy(), data["/observations/qvel"][2].astype(np.float32))
    np.testing.assert_allclose(
        sample["cam"].numpy(), data["/observations/images/top"][2].transpose(2, 0, 1) / 255, atol=1e-7
    )
    np.testing.assert_allclose(sample["action"][:3].numpy(), data["/action"][2:5].astype(np.float32))
    np.testing.assert_array_equal(sample["action_mask"].numpy(), [True] * 3 + [False] * 3)


def test_act_writer_layout_read_by_hand(tmp_path):
    episodes = make_episodes(lengths=[4, 6])
    write_act_hdf5(tmp_path / "ds", episodes, sim=False)
    assert sorted(os.listdir(tmp_path / "ds")) == ["episode_0.hdf5", "episode_1.hdf5"]
    with h5py.File(tmp_path / "ds" / "episode_1.hdf5", "r") as root:
        assert bool(root.attrs["sim"]) is False
        np.testing.assert_array_equal(root["/observations/qpos"][()], episodes[1]["observation.state"])
        np.testing.assert_array_equal(root["/observations/qvel"][()], episodes[1]["observation.velocity"])
        np.testing.assert_array_equal(root["/action"][()], episodes[1]["action"])
        np.testing.assert_array_equal(
            root["/observations/images/top"][()], episodes[1]["observation.images.top"]
        )


def png(frame):
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


def write_lerobot_by_hand(
    root: Path,
    episodes,
    fps=30,
    version="v3.0",
    data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
):
    """A LeRobot v3.0 dataset as HF datasets writes it: episodes 0 and 1 in data file 0, the rest in
    file 1; `observation.state` as variable-length lists, `action` as fixed-size lists, PNG images;
    tasks per frame (an episode may change task midway)."""
    (root / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    task_texts = sorted({t for e in episodes for t in e["frame_tasks"]})
    task_index = {t: i for i, t in enumerate(task_texts)}
    pandas_meta = {"index_columns": ["__index_level_0__"], "columns": []}
    tasks = pa.table({"task_index": list(range(len(task_texts))), "__index_level_0__": task_texts})
    pq.write_table(
        tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}),
        root / "meta" / "tasks.parquet",
    )
    rows, index = [], 0
    files: dict[int, list] = {0: [], 1: []}
    for i, e in enumerate(episodes):
        n = len(e["action"])
        file_index = 0 if i < 2 else 1
        files[file_index].append(
            pa.table(
                {
                    "observation.state": pa.array(e["observation.state"].tolist(), pa.list_(pa.float32())),
                    "action": pa.FixedSizeListArray.from_arrays(pa.array(e["action"].reshape(-1)), 3),
                    "observation.images.top": pa.array(
                        [
                            {"bytes": png(f), "path": f"frame_{t}.png"}
                            for t, f in enumerate(e["observation.images.top"])
                        ],
                        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                    ),
                    "timestamp": pa.array(np.arange(n, dtype=np.float32) / fps),
                    "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                    "episode_index": pa.array(np.full(n, i, dtype=np.int64)),
                    "index": pa.array(np.arange(index, index + n, dtype=np.int64)),
                    "task_index": pa.array([task_index[t] for t in e["frame_tasks"]], pa.int64()),
                }
            )
        )
        rows.append(
            {
                "episode_index": i,
                "tasks": sorted(set(e["frame_tasks"])),
                "length": n,
                "data/chunk_index": 0,
                "data/file_index": file_index,
                "dataset_from_index": index,
                "dataset_to_index": index + n,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
                "stats/action/mean": e["action"].mean(0).tolist(),
            }
        )
        index += n
    (root / "data" / "chunk-000").mkdir(parents=True)
    for file_index, tables in files.items():
        pq.write_table(
            pa.concat_tables(tables), root / "data" / "chunk-000" / f"file-{file_index:03d}.parquet"
        )
    pq.write_table(pa.Table.from_pylist(rows), root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    features = {
        "observation.state": {"dtype": "float32", "shape": [4], "names": ["a", "b", "c", "d"]},
        "action": {"dtype": "float32", "shape": [3], "names": ["x", "y", "z"]},
        "observation.images.top": {
            "dtype": "image",
            "shape": [6, 5, 3],
            "names": ["height", "width", "channels"],
        },
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {
        "codebase_version": version,
        "robot_type": "so100",
        "total_episodes": len(episodes),
        "total_frames": index,
        "total_tasks": len(task_texts),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 500,
        "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"},
        "data_path": data_path,
        "video_path": None,
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))


def hand_episodes():
    episodes = make_episodes(lengths=[5, 7, 4])
    for i, e in enumerate(episodes):
        n = len(e["action"])
        e["frame_tasks"] = [TASKS[0]] * n if i != 1 else [TASKS[0]] * 3 + [TASKS[1]] * (n - 3)
    return episodes


def test_lerobot_written_by_hand(tmp_path):
    episodes = hand_episodes()
    write_lerobot_by_hand(tmp_path / "ds", episodes)
    source = build("lerobot", tmp_path / "ds", chunk_size=4, val_fraction=0.0, instruction_key="task")
    assert source.fps == 30 and source.tasks == sorted(TASKS)
    train = source.split("train")
    assert len(train) == 16
    for index in range(len(train)):
        episode, t = train.locate(index)
        e = episodes[episode.index]
        sample = train[index]
        np.testing.assert_array_equal(sample["qpos"].numpy(), e["observation.state"][t])
        np.testing.assert_allclose(
            sample["top"].numpy(), e["observation.images.top"][t].transpose(2, 0, 1) / 255, atol=1e-7
        )
        action, mask = expected_sample(e, t, k=4)
        np.testing.assert_array_equal(sample["action"].numpy(), action)
        np.testing.assert_array_equal(sample["action_mask"].numpy(), mask)
        assert sample["task"] == e["frame_tasks"][t]  # the task changes midway through episode 1


def test_lerobot_writer_layout_read_by_hand(tmp_path):
    episodes = make_episodes()
    root = write_lerobot_dataset(tmp_path / "ds", episodes, fps=15, robot_type="koch", episodes_per_file=2)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 15 and info["robot_type"] == "koch"
    assert info["total_episodes"] == 5 and info["total_frames"] == sum(LENGTHS) and info["total_tasks"] == 2
    assert (
        info["features"]["observation.state"]["shape"] == [4]
        and info["features"]["action"]["dtype"] == "float32"
    )
    assert info["features"]["observation.images.top"] == {
        "dtype": "image",
        "shape": [6, 5, 3],
        "names": ["height", "width", "channels"],
    }
    assert {"timestamp", "frame_index", "episode_index", "index", "task_index"} <= set(info["features"])
    tasks = pq.read_table(root / "meta" / "tasks.parquet").to_pydict()
    assert dict(zip(tasks["__index_level_0__"], tasks["task_index"])) == {TASKS[0]: 0, TASKS[1]: 1}
    meta = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    starts = np.cumsum([0] + LENGTHS)
    for i, row in enumerate(meta):
        assert row["episode_index"] == i and row["length"] == LENGTHS[i] and row["tasks"] == [TASKS[i % 2]]
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (starts[i], starts[i + 1])
        assert (row["data/chunk_index"], row["data/file_index"]) == (0, i // 2)
    data = pq.read_table(root / "data" / "chunk-000" / "file-001.parquet").to_pydict()  # episodes 2 and 3
    assert data["episode_index"] == [2] * LENGTHS[2] + [3] * LENGTHS[3]
    assert data["index"] == list(range(starts[2], starts[4]))
    np.testing.assert_array_equal(np.array(data["action"][: LENGTHS[2]], np.float32), episodes[2]["action"])
    image = np.asarray(Image.open(io.BytesIO(data["observation.images.top"][1]["bytes"])))
    np.testing.assert_array_equal(image, episodes[2]["observation.images.top"][1])
    stats = json.loads((root / "meta" / "stats.json").read_text())
    actions = np.concatenate([e["action"] for e in episodes]).astype(np.float64)
    for key, value in (
        ("mean", actions.mean(0)),
        ("std", actions.std(0)),
        ("min", actions.min(0)),
        ("max", actions.max(0)),
    ):
        np.testing.assert_allclose(stats["action"][key], value, rtol=1e-6, atol=1e-9)
    assert stats["action"]["count"] == [sum(LENGTHS)]
    assert np.array(stats["observation.images.top"]["mean"]).shape == (3, 1, 1)


def test_writers_are_atomic(tmp_path):
    episodes = make_episodes(lengths=[3, 4], images=False)
    write_act_hdf5(tmp_path / "ds", episodes)
    before = sorted(os.listdir(tmp_path / "ds"))
    with pytest.raises(InputError, match="no place"):
        write_act_hdf5(
            tmp_path / "ds", episodes[:1] * 3 + [{**episodes[1], "weird.name.x": np.zeros((4, 2))}]
        )
    assert sorted(os.listdir(tmp_path / "ds")) == before and sorted(os.listdir(tmp_path)) == ["ds"]
    write_lerobot_dataset(tmp_path / "lr", episodes, fps=5)
    with pytest.raises(InputError, match="positive"):
        write_lerobot_dataset(tmp_path / "lr", episodes, fps=0)
    assert build("lerobot", tmp_path / "lr", features={"action": "action"}).split("train")


# ---------------------------------------------------------------------------------------------
# Bad input.


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_hdf5_names_the_file(tmp_path):
    write_act_hdf5(tmp_path / "ds", make_episodes())
    truncate(tmp_path / "ds" / "episode_3.hdf5")
    with pytest.raises(InputError, match=r"episode_3\.hdf5.*(truncated|corrupt)"):
        build("act_hdf5", tmp_path / "ds")


@pytest.mark.parametrize(
    "broken",
    ["data/chunk-000/file-001.parquet", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet"],
)
def test_truncated_parquet_names_the_file(tmp_path, broken):
    write_lerobot_dataset(tmp_path / "ds", make_episodes(), fps=10, episodes_per_file=3)
    truncate(tmp_path / "ds" / broken)
    with pytest.raises(InputError, match=f"{broken}.*(truncated|corrupt)"):
        build("lerobot", tmp_path / "ds")


def test_missing_feature_lists_the_available_ones(written):
    kind, path, _ = written
    with pytest.raises(InputError) as caught:
        build(kind, path, features={"front": "observation.images.front", "action": "action"})
    message = str(caught.value)
    assert "observation.images.front" in message
    for available in ("observation.images.top", "observation.state", "observation.velocity", "action"):
        assert available in message


def test_nan_in_actions_is_refused_naming_the_episode(kind, tmp_path):
    episodes = make_episodes(images=False)
    episodes[3]["action"][5, 1] = np.nan
    write(kind, tmp_path / "ds", episodes)
    with pytest.raises(InputError, match=r"episode 3.*'action'.*NaN or infinite.*5") as caught:
        build(kind, tmp_path / "ds", features={"qpos": "observation.state", "action": "action"})
    assert ("episode_3.hdf5" if kind == "act_hdf5" else "file-000.parquet") in str(caught.value)
    episodes[3]["action"][5, 1] = 0.0
    episodes[2]["observation.state"][0, 0] = np.inf
    write(kind, tmp_path / "ds", episodes)
    with pytest.raises(InputError, match=r"episode 2.*'observation.state'"):
        build(kind, tmp_path / "ds", features={"qpos": "observation.state", "action": "action"})


def test_mismatched_lengths_are_refused(tmp_path):
    folder = tmp_path / "act"
    folder.mkdir()
    with h5py.File(folder / "episode_0.hdf5", "w") as root:
        root.attrs["sim"] = True
        root.create_dataset("/observations/qpos", data=np.zeros((10, 14)))
        root.create_dataset("/action", data=np.zeros((9, 14)))
    with pytest.raises(InputError, match=r"episode_0\.hdf5.*different numbers of frames.*10.*9"):
        build("act_hdf5", folder, features={"qpos": "observation.state", "action": "action"})
    # LeRobot: the episodes metadata promises more rows than the data file holds.
    root = tmp_path / "lr"
    write_lerobot_dataset(root, make_episodes(images=False), fps=10)
    meta_path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    meta = pq.read_table(meta_path).to_pylist()
    meta[2]["length"] += 1
    pq.write_table(pa.Table.from_pylist(meta), meta_path)
    with pytest.raises(InputError, match=r"file-000\.parquet: episode 2: 10 rows, but .* length 11"):
        build("lerobot", root, features={"action": "action"})


def rewrite_info(root: Path, **changes) -> None:
    info = json.loads((root / "meta" / "info.json").read_text())
    info.update(changes)
    (root / "meta" / "info.json").write_text(json.dumps(info))


@pytest.mark.parametrize(
    "template",
    [
        "../elsewhere/file-{file_index:03d}.parquet",
        "data/../../x/{chunk_index}.parquet",
        "/tmp/data/{file_index}.parquet",
    ],
)
def test_templates_outside_the_dataset_are_refused(tmp_path, template):
    root = tmp_path / "ds"
    write_lerobot_dataset(root, make_episodes(images=False), fps=10)
    rewrite_info(root, data_path=template)
    with pytest.raises(
        InputError, match=r"info\.json: data_path.*(outside the dataset folder|absolute path)"
    ):
        build("lerobot", root, features={"action": "action"})


def test_unsupported_version_is_refused(tmp_path):
    root = tmp_path / "ds"
    write_lerobot_dataset(root, make_episodes(images=False), fps=10)
    rewrite_info(root, codebase_version="v2.1")
    with pytest.raises(InputError, match=r"info\.json: codebase_version 'v2\.1' is not supported.*v3\.0"):
        build("lerobot", root, features={"action": "action"})


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        build("act_hdf5", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no episode_<i>.hdf5"):
        build("act_hdf5", tmp_path / "empty")
    with pytest.raises(InputError, match=r"info\.json: missing"):
        build("lerobot", tmp_path / "empty")
    root = tmp_path / "lr"
    write_lerobot_dataset(root, make_episodes(images=False), fps=10, episodes_per_file=2)
    (root / "data" / "chunk-000" / "file-001.parquet").unlink()
    with pytest.raises(InputError, match=r"file-001\.parquet: parquet file is missing"):
        build("lerobot", root, features={"action": "action"})


def test_config_is_checked():
    for bad in (
        {"chunk_size": 0},
        {"val_fraction": 1.0},
        {"image_size": [4]},
        {"path": ""},
        {"instruction_key": "action_mask"},
        {"features": {}},
        {"bogus": 1},
    ):
        with pytest.raises(ConfigError):
            from_dict(DatasetConfig, {"type": "lerobot", "path": "x", **bad})
    config = from_dict(DatasetConfig, {"type": "act_hdf5", "path": "x"})
    assert config.chunk_size == 100 and config.features == {"qpos": "observation.state", "action": "action"}


def test_fifty_episodes_of_both_formats_load(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [
        {
            "observation.state": rng.normal(size=(400, 14)).astype(np.float32),
            "action": rng.normal(size=(400, 14)).astype(np.float32),
            "task": "t",
        }
        for _ in range(50)
    ]
    write_lerobot_dataset(tmp_path / "lr", episodes, fps=50)
    write_act_hdf5(tmp_path / "act", episodes)
    for kind, path in (("lerobot", tmp_path / "lr"), ("act_hdf5", tmp_path / "act")):
        source = build(kind, path, features={"qpos": "observation.state", "action": "action"}, chunk_size=100)
        assert len(source.split("train")) + len(source.split("val")) == 50 * 400


# ---------------------------------------------------------------------------------------------
# Videos (optional extra).


def test_video_features_without_pyav_say_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    root = write_lerobot_dataset(tmp_path / "ds", make_episodes(images=False), fps=10)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["observation.images.cam"] = {
        "dtype": "video",
        "shape": [8, 8, 3],
        "names": ["height", "width", "channels"],
    }
    (root / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(ImportError, match=r'pip install "cvae-bridge\[video\]"'):
        build("lerobot", root, features={"cam": "observation.images.cam", "action": "action"})


def test_lerobot_video_features(tmp_path):
    av = pytest.importorskip("av")
    fps, size = 10, 32
    lengths = [8, 6]
    levels = [[30 + 20 * t + 5 * e for t in range(n)] for e, n in enumerate(lengths)]
    episodes = [
        {
            "observation.state": np.full((n, 2), e, np.float32),
            "action": np.full((n, 2), e, np.float32),
            "task": "go",
        }
        for e, n in enumerate(lengths)
    ]
    root = write_lerobot_dataset(tmp_path / "ds", episodes, fps=fps)
    video = root / "videos" / "observation.images.cam" / "chunk-000" / "file-000.mp4"
    video.parent.mkdir(parents=True)
    with av.open(str(video), "w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for level in (v for episode in levels for v in episode):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), level, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    info = json.loads((root / "meta" / "info.json").read_text())
    info["features"]["observation.images.cam"] = {
        "dtype": "video",
        "shape": [size, size, 3],
        "names": ["height", "width", "channels"],
    }
    info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    (root / "meta" / "info.json").write_text(json.dumps(info))
    meta_path = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    meta = pq.read_table(meta_path).to_pylist()
    start = 0.0
    for row, n in zip(meta, lengths):
        row.update(
            {
                "videos/observation.images.cam/chunk_index": 0,
                "videos/observation.images.cam/file_index": 0,
                "videos/observation.images.cam/from_timestamp": start,
                "videos/observation.images.cam/to_timestamp": start + n / fps,
            }
        )
        start += n / fps
    pq.write_table(pa.Table.from_pylist(meta), meta_path)
    source = build(
        "lerobot", root, features={"cam": "observation.images.cam", "action": "action"}, val_fraction=0.0
    )
    train = source.split("train")
    for index in [0, 3, 7, 8, 13, 2, 10]:
        episode, t = train.locate(index)
        image = train[index]["cam"]
        assert image.shape == (3, size, size)
        assert abs(float(image.mean()) * 255 - levels[episode.index][t]) < 4, (
            index,
            float(image.mean()) * 255,
        )


def test_rewritten_dataset_is_read_afresh(kind, tmp_path):
    """Open files and cached image bytes belong to a file version: rewriting the dataset in the
    same process must not serve the old frames."""
    features = {"top": "observation.images.top", "action": "action"}
    write(kind, tmp_path / "ds", make_episodes(seed=1))
    before = build(kind, tmp_path / "ds", features=features, val_fraction=0.0).split("train")[4]["top"]
    episodes = make_episodes(seed=2)
    write(kind, tmp_path / "ds", episodes)
    after = build(kind, tmp_path / "ds", features=features, val_fraction=0.0).split("train")[4]["top"]
    assert not torch.equal(before, after)
    np.testing.assert_allclose(
        after.numpy(), episodes[0]["observation.images.top"][4].transpose(2, 0, 1) / 255, atol=1e-7
    )
