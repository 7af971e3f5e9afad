"""LeRobot datasets both ways: the stats schema LeRobot 0.4 writes (quantiles, integer types,
column order), joint and axis names passed through, sizes and cameras taken from the dataset when
the config leaves them unset (an SO-101-style LeRobot dataset, an ACT / real-ALOHA-style HDF5 folder
with camera `cam_high`), and datasets named by repo id under HF_LEROBOT_HOME.
tools/check_lerobot_datasets.py checks the same against the real lerobot package."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import CONFIGS

from cvae_bridge import ConditionalVAE
from cvae_bridge.config import load_run_config
from cvae_bridge.data.act_hdf5 import ActHdf5Config, ActHdf5Source, write_act_hdf5
from cvae_bridge.data.lerobot import LeRobotConfig, LeRobotSource, write_lerobot_dataset
from cvae_bridge.data.resolve import resolve_run_config
from cvae_bridge.errors import ConfigError, InputError
from cvae_bridge.pipelines import ActionChunkPolicy
from cvae_bridge.training import train

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STATS = ["min", "max", "mean", "std", "count", *QUANTILES]


pytestmark = pytest.mark.usefixtures("one_thread")


def arm_episodes(lengths=(9, 6), joints=6, camera="observation.images.front", size=(12, 16)):
    rng = np.random.default_rng(0)
    return [
        {
            "observation.state": rng.normal(size=(n, joints)).astype(np.float32),
            "action": rng.normal(size=(n, joints)).astype(np.float32),
            camera: rng.integers(0, 256, size=(n, *size, 3), dtype=np.uint8),
            "task": "pick up the cube",
        }
        for n in lengths
    ]


def so101(root, **options):
    """An SO-101-style LeRobot dataset: 6 named joints, the camera `front`."""
    names = {"observation.state": [f"{j}.pos" for j in JOINTS], "action": [f"{j}.pos" for j in JOINTS]}
    return write_lerobot_dataset(
        root, arm_episodes(**options), fps=30, robot_type="so101_follower", names=names
    )


# ---------------------------------------------------------------------------------------------
# The stats schema and the names.


def test_stats_have_lerobots_quantiles_integer_types_and_column_order(tmp_path):
    episodes = arm_episodes()
    root = so101(tmp_path / "so101")
    table = pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    columns = table.schema.names
    features = ["observation.state", "action", "observation.images.front"]
    features += ["timestamp", "frame_index", "episode_index", "index", "task_index"]
    stats_columns = [f"stats/{feature}/{key}" for feature in features for key in STATS]
    # LeRobot's order: the episode's place, its stats feature by feature, the metadata file last
    assert columns == [
        "episode_index",
        "tasks",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
        "dataset_to_index",
        *stats_columns,
        "meta/episodes/chunk_index",
        "meta/episodes/file_index",
    ]
    types = {name: str(table.schema.field(name).type) for name in columns}
    for feature in ("frame_index", "index", "episode_index", "task_index"):  # integers stay integers
        assert types[f"stats/{feature}/min"] == types[f"stats/{feature}/max"] == "list<element: int64>"
        assert types[f"stats/{feature}/q50"] == types[f"stats/{feature}/mean"] == "list<element: double>"
    assert types["stats/action/min"] == "list<element: double>"
    assert types["stats/action/count"] == "list<element: int64>"
    assert (
        types["stats/observation.images.front/q99"] == "list<element: list<element: list<element: double>>>"
    )

    rows = table.to_pylist()
    for row, episode in zip(rows, episodes):
        actions = episode["action"].astype(np.float64)
        for key, q in QUANTILES.items():
            np.testing.assert_allclose(row[f"stats/action/{key}"], np.quantile(actions, q, axis=0), rtol=1e-9)
        pixels = episode["observation.images.front"].reshape(-1, 3) / 255.0
        for key in ("min", "max", "mean", "std", "q10", "q90"):
            expected = (
                np.quantile(pixels, QUANTILES[key], axis=0) if key in QUANTILES else getattr(pixels, key)(0)
            )
            np.testing.assert_allclose(
                np.ravel(row[f"stats/observation.images.front/{key}"]), expected, rtol=1e-9
            )
        assert row["stats/frame_index/max"] == [len(actions) - 1] and row[
            "stats/observation.state/count"
        ] == [len(actions)]

    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert all(list(stats[feature]) == STATS for feature in features)
    assert stats["frame_index"]["min"] == [0] and stats["frame_index"]["max"] == [8]
    assert all(
        isinstance(v, int) for v in stats["index"]["min"] + stats["index"]["max"] + stats["index"]["count"]
    )
    # the dataset's quantiles: the count-weighted mean of the episodes', as LeRobot aggregates them
    weights = np.array([len(e["action"]) for e in episodes]) / sum(len(e["action"]) for e in episodes)
    expected = sum(w * np.array(r["stats/action/q90"]) for w, r in zip(weights, rows))
    np.testing.assert_allclose(stats["action"]["q90"], expected, rtol=1e-9)
    assert np.array(stats["observation.images.front"]["q01"]).shape == (3, 1, 1)


def test_names_are_passed_through_and_checked(tmp_path):
    info = json.loads((so101(tmp_path / "so101") / "meta" / "info.json").read_text())
    features = info["features"]
    assert (
        features["observation.state"]["names"] == [f"{j}.pos" for j in JOINTS] == features["action"]["names"]
    )
    assert features["observation.images.front"]["names"] == ["height", "width", "channels"]
    assert info["robot_type"] == "so101_follower"
    unnamed = write_lerobot_dataset(tmp_path / "unnamed", arm_episodes(), fps=30)
    assert (
        json.loads((unnamed / "meta" / "info.json").read_text())["features"]["action"]["names"][0]
        == "action.0"
    )
    with pytest.raises(InputError, match=r"names\['action'\]: expected 6 non-empty strings.*got 2"):
        write_lerobot_dataset(tmp_path / "bad", arm_episodes(), fps=30, names={"action": ["x", "y"]})
    with pytest.raises(InputError, match=r"names given for \['observation.velocity'\]"):
        write_lerobot_dataset(tmp_path / "bad", arm_episodes(), fps=30, names={"observation.velocity": ["x"]})
    assert not (tmp_path / "bad").exists()


def test_demos_name_the_simulators_joints_and_axes(tmp_path):
    from cvae_bridge.envs import feature_names
    from cvae_bridge.envs.demos import DemosConfig, generate_demos

    generate_demos(DemosConfig("aloha", str(tmp_path / "aloha"), ["transfer_cube"], 1, progress_bar=False))
    features = json.loads((tmp_path / "aloha" / "meta" / "info.json").read_text())["features"]
    names = feature_names("aloha", "transfer_cube")
    assert features["observation.state"]["names"] == names["observation.state"]
    assert names["observation.state"][:2] == ["left_arm_waist", "left_arm_shoulder"]  # gym-aloha's joints
    assert features["observation.environment_state"]["names"][:4] == [
        "red_box_x",
        "red_box_y",
        "red_box_z",
        "red_box_qw",
    ]
    assert len(feature_names("aloha", "insertion")["observation.environment_state"]) == 14  # peg and socket
    metaworld = feature_names("metaworld", "reach-v3")
    assert len(metaworld["observation.state"]) == 39 and metaworld["action"][-1] == "gripper_effort"


# ---------------------------------------------------------------------------------------------
# Sizes and cameras from the data.


def test_act_config_takes_an_so101_datasets_sizes_and_camera(tmp_path):
    root = so101(tmp_path / "so101")
    config = load_run_config(CONFIGS / "act_aloha.yaml", [f"data.path={root}"])
    with pytest.raises(ConfigError, match=r"model.conditions.qpos.shape, .*action.decoder.dim: unset"):
        ConditionalVAE(config.model)  # no data, no sizes
    resolved, notes = resolve_run_config(config)
    info = root / "meta" / "info.json"
    assert notes == [
        f"data.features.top=observation.images.front (the camera in {info})",
        f"model.conditions.qpos.shape=[6] (observation.state in {info})",
        f"model.targets.action.encoder.dim=6 (action in {info})",
        f"model.targets.action.decoder.dim=6 (action in {info})",
    ]
    assert resolved.data.features == {
        "qpos": "observation.state",
        "action": "action",
        "top": "observation.images.front",
    }
    assert config.model.conditions["qpos"].shape is None  # the config given is left as it was
    # a size that is set must be the data's: both are named
    explicit = load_run_config(
        CONFIGS / "act_aloha.yaml", [f"data.path={root}", "model.conditions.qpos.shape=[14]"]
    )
    with pytest.raises(
        ConfigError,
        match=rf"model.conditions.qpos.shape is \[14\], but observation.state in {info} has shape \[6\]",
    ):
        resolve_run_config(explicit)
    # a camera named in the config stays named: the source lists the cameras there are
    named = load_run_config(
        CONFIGS / "act_aloha.yaml", [f"data.path={root}", "data.features.top=observation.images.top"]
    )
    assert resolve_run_config(named)[0].data.features["top"] == "observation.images.top"


def real_aloha(root, cameras=("cam_high",)):
    """ACT's real-ALOHA HDF5 layout: 14 joints, qvel, the cameras under observations/images/."""
    rng = np.random.default_rng(1)
    episodes = []
    for n in (8, 6):
        episode = {
            "observation.state": rng.normal(size=(n, 14)).astype(np.float32),
            "observation.velocity": rng.normal(size=(n, 14)).astype(np.float32),
            "action": rng.normal(size=(n, 14)).astype(np.float32),
        }
        for camera in cameras:
            episode[f"observation.images.{camera}"] = rng.integers(0, 256, (n, 12, 16, 3), dtype=np.uint8)
        episodes.append(episode)
    return write_act_hdf5(root, episodes, sim=False)


def test_act_config_takes_a_real_aloha_hdf5_camera(tmp_path):
    root = real_aloha(tmp_path / "real")
    where, features = ActHdf5Source.dataset_features(ActHdf5Config(path=str(root)))
    assert where == str(root / "episode_0.hdf5")
    assert features["observation.images.cam_high"] == {"dtype": "image", "shape": [12, 16, 3]}
    assert features["observation.velocity"] == {"dtype": "float32", "shape": [14]}
    overrides = ["data.type=act_hdf5", f"data.path={root}"]
    resolved, notes = resolve_run_config(load_run_config(CONFIGS / "act_aloha.yaml", overrides))
    assert resolved.data.features["top"] == "observation.images.cam_high" and notes[0].startswith(
        "data.features.top="
    )
    assert resolved.model.targets["action"].encoder.dim == 14
    # several cameras: the choice is the user's, and the error shows how
    several = real_aloha(tmp_path / "four", ("cam_high", "cam_low", "cam_left_wrist"))
    config = load_run_config(CONFIGS / "act_aloha.yaml", ["data.type=act_hdf5", f"data.path={several}"])
    with pytest.raises(
        ConfigError, match=r"\['top'\] map to no feature.*cameras \['observation.images.cam_high', "
    ):
        resolve_run_config(config)
    picked = load_run_config(
        CONFIGS / "act_aloha.yaml",
        ["data.type=act_hdf5", f"data.path={several}", "data.features.top=observation.images.cam_low"],
    )
    assert resolve_run_config(picked)[0].data.features["top"] == "observation.images.cam_low"
    # the state config without object poses: every size from the file
    state, _ = resolve_run_config(
        load_run_config(CONFIGS / "act_aloha_state.yaml", [*overrides, "model.conditions.env_state=null"])
    )
    assert state.model.conditions["qpos"].shape == [14]


TINY = {
    "model": {
        "d_model": 32,
        "latent_dim": 4,
        "conditions": {"qpos": {"type": "vector"}, "top": {"type": "image", "widths": [8, 8], "blocks": 0}},
        "targets": {
            "action": {
                "encoder": {"type": "action", "chunk_size": 4},
                "decoder": {
                    "type": "action",
                    "chunk_size": 4,
                    "encoder_layers": 1,
                    "decoder_layers": 1,
                    "heads": 2,
                    "ff_dim": 32,
                    "dropout": 0.0,
                },  # fmt: skip
                "likelihood": {"type": "laplace", "scale": "fixed"},
                "reduction": "mean",
            }
        },
        "posterior": {"type": "transformer", "conditions": ["qpos"], "layers": 1, "heads": 2, "ff_dim": 32},
        "normalize": ["qpos", "action"],
    },
    "data": {
        "features": {"qpos": "observation.state", "action": "action"},
        "chunk_size": 4,
        "val_fraction": 0.0,
    },
    "train": {
        "steps": 2,
        "batch_size": 4,
        "eval_every": 0,
        "progress_bar": False,
        "trackers": [],
        "warmup_steps": 0,
    },
}


@pytest.mark.parametrize("layout", ["so101", "real_aloha"])
def test_training_fills_the_sizes_and_the_policy_reads_the_datasets_camera(tmp_path, layout, capsys):
    if layout == "so101":
        data, joints, camera = so101(tmp_path / "data"), 6, "observation.images.front"
        kind = "lerobot"
    else:
        data, joints, camera = real_aloha(tmp_path / "data"), 14, "observation.images.cam_high"
        kind = "act_hdf5"
    raw = json.loads(json.dumps(TINY))
    raw["data"].update(type=kind, path=str(data))
    raw["train"]["output_dir"] = str(tmp_path / "run")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    result = train(load_run_config(tmp_path / "tiny.yaml"))
    printed = capsys.readouterr().out
    assert f"from the data: data.features.top={camera}" in printed
    assert f"from the data: model.conditions.qpos.shape=[{joints}]" in printed
    saved = json.loads((result.model_dir / "run_config.json").read_text())
    assert (
        saved["model"]["targets"]["action"]["decoder"]["dim"] == joints
        and saved["data"]["features"]["top"] == camera
    )
    policy = ActionChunkPolicy.from_pretrained(result.model_dir)
    frame = np.zeros((12, 16, 3), dtype=np.uint8)
    assert policy.select_action({"observation.state": np.zeros(joints), camera: frame}).shape == (joints,)


# ---------------------------------------------------------------------------------------------
# Repo ids.


def test_a_repo_id_names_a_dataset_under_lerobots_home(tmp_path, monkeypatch):
    for variable in ("HF_LEROBOT_HOME", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    features = {"qpos": "observation.state", "action": "action"}

    def episodes(repo_id):
        return len(LeRobotSource(LeRobotConfig(path=repo_id, features=features)).episodes)

    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "home"))
    so101(tmp_path / "home" / "someone" / "so101_pick")
    assert episodes("someone/so101_pick") == 2
    monkeypatch.delenv("HF_LEROBOT_HOME")  # then $HF_HOME/lerobot, then $XDG_CACHE_HOME/huggingface/lerobot
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    so101(tmp_path / "hf" / "lerobot" / "someone" / "so101_pick", lengths=(5,))
    assert episodes("someone/so101_pick") == 1
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(
        InputError,
        match=rf"neither a folder nor a dataset under LeRobot's home {tmp_path / 'cache' / 'huggingface' / 'lerobot'}",
    ):
        episodes("someone/so101_pick")
    so101(tmp_path / "someone" / "so101_pick", lengths=(4, 4, 4))  # a folder of that name comes first
    assert episodes("someone/so101_pick") == 3
    with pytest.raises(InputError, match="LeRobot dataset folder does not exist"):
        episodes("no/such/folder")
    # the run config resolves against it too
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "home"))
    config = load_run_config(CONFIGS / "act_aloha.yaml", ["data.path=someone/other"])
    write_lerobot_dataset(tmp_path / "home" / "someone" / "other", arm_episodes(joints=5), fps=30)
    assert resolve_run_config(config)[0].model.conditions["qpos"].shape == [5]
