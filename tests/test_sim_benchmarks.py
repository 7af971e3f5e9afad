"""Simulation benchmark tooling: scripted demonstrations as LeRobot datasets (`cvae-bridge demos`),
rollout evaluation of trained policies (`cvae-bridge rollout`), and the shipped benchmark configs.

The policies here train for a few steps only: the tests check the tooling (structure, seeds,
reproducibility, phrasings), not success rates. Simulator tests skip without metaworld / mujoco /
gym_aloha.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ALOHA_SIM_FEATURES, CONFIGS

from cvae_bridge.cli import main
from cvae_bridge.config import DatasetConfig, from_dict, load_run_config, to_dict
from cvae_bridge.data import build_source
from cvae_bridge.data.resolve import resolve_run_config
from cvae_bridge.envs import draw_instruction, instructions, list_tasks
from cvae_bridge.errors import ConfigError

MW_TASKS = ["reach-v3", "push-v3"]
QUIET = [
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.progress_bar=false",
    "train.trackers=[]",
    "data.val_fraction=0.0",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def needs(*modules):
    for module in modules:
        pytest.importorskip(module)


def train_config(config: str, data: Path, out: Path, steps: int = 3) -> Path:
    """Train a shipped config for a few steps on `data` through the CLI; the model folder."""
    settings = [
        f"data.path={data}",
        f"train.output_dir={out}",
        f"train.steps={steps}",
        "train.batch_size=8",
        *QUIET,
    ]
    assert main(["train", str(CONFIGS / config), *[a for s in settings for a in ("--set", s)]]) == 0
    return out / "model"


def lerobot(path: Path, features: dict, instruction_key=None):
    config = {
        "type": "lerobot",
        "path": str(path),
        "features": features,
        "chunk_size": 5,
        "val_fraction": 0.0,
        "instruction_key": instruction_key,
    }
    return build_source(from_dict(DatasetConfig, config))


@pytest.fixture
def short_episodes(monkeypatch):
    """cap(n): rollout episodes end after n steps (an untrained policy runs to the 500-step horizon)."""
    import cvae_bridge.evaluation.rollout as rollout

    make_env = rollout.make_env

    def cap(steps: int) -> None:
        def short(*args, **kwargs):
            env = make_env(*args, **kwargs)
            env.max_steps = steps
            return env

        monkeypatch.setattr(rollout, "make_env", short)

    return cap


def without_timing(report: dict) -> dict:
    """The report less its wall-clock figures, which differ from run to run."""
    timing = {"time_s", "s_per_episode", "policy_s_per_episode"}
    if isinstance(report, dict):
        return {k: without_timing(v) for k, v in report.items() if k not in timing}
    if isinstance(report, list):
        return [without_timing(v) for v in report]
    return report


# ---------------------------------------------------------------------------------------------
# Demonstrations.


@pytest.fixture(scope="module")
def mt10(tmp_path_factory):
    """Two MT10 tasks x 2 expert episodes (seeds 0, 1) through `cvae-bridge demos`, and a policy
    trained on them for 3 steps with the shipped MT10 config."""
    needs("metaworld", "mujoco")
    root = tmp_path_factory.mktemp("mt10")
    assert (
        main(
            [
                "demos",
                "--suite",
                "metaworld",
                "--tasks",
                *MW_TASKS,
                "--episodes",
                "2",
                "--out",
                str(root / "data"),
            ]
        )
        == 0
    )
    model = train_config("metaworld_mt10.yaml", root / "data", root / "run")
    return root, model


def test_demos_write_a_lerobot_dataset_with_instructions(mt10):
    root, _ = mt10
    report = json.loads((root / "data" / "demos.json").read_text())
    assert report["suite"] == "metaworld" and list(report["tasks"]) == MW_TASKS
    assert report["kept"] == "successful episodes only" and report["total_episodes"] == 4
    for task in MW_TASKS:
        assert report["tasks"][task]["success_rate"] == 1.0 and report["tasks"][task]["seeds"] == [0, 1]
    info = json.loads((root / "data" / "meta" / "info.json").read_text())
    assert (
        info["fps"] == 80
        and info["features"]["observation.state"]["shape"] == [39]
        and info["features"]["action"]["shape"] == [4]
    )
    assert info["demos"]["kept"] == "successful episodes only"

    source = lerobot(root / "data", {"state": "observation.state", "action": "action"}, "instruction")
    assert len(source.episodes) == 4
    # Episode i of each task: its seed's training phrasing, in task order.
    expected = [draw_instruction("metaworld", task, seed) for task in MW_TASKS for seed in (0, 1)]
    assert [e.instruction for e in source.episodes] == expected
    assert [row["instruction"] for row in report["episodes"]] == expected
    sample = source.split("train")[0]
    assert (
        sample["state"].shape == (39,)
        and sample["action"].shape == (5, 4)
        and sample["instruction"] == expected[0]
    )
    assert [len(e) for e in source.episodes] == [row["length"] for row in report["episodes"]]


def test_demos_drop_failed_episodes_unless_asked(tmp_path, monkeypatch):
    needs("metaworld", "mujoco")
    import cvae_bridge.envs.demos as demos

    def one_failure(*args, **kwargs):  # the expert "fails" the episode of seed 1
        episodes = scripted_episodes(*args, **kwargs)
        episodes[1].success = False
        return episodes

    scripted_episodes = demos.scripted_episodes
    monkeypatch.setattr(demos, "scripted_episodes", one_failure)
    report = demos.generate_demos(demos.DemosConfig("metaworld", str(tmp_path / "kept"), ["reach-v3"], 3, 5))
    assert report["tasks"]["reach-v3"]["success_rate"] == pytest.approx(2 / 3)
    assert [row["seed"] for row in report["episodes"]] == [5, 7] and report["tasks"]["reach-v3"]["kept"] == 2
    report = demos.generate_demos(
        demos.DemosConfig("metaworld", str(tmp_path / "all"), ["reach-v3"], 3, 5, keep_failures=True)
    )
    assert [(row["seed"], row["success"]) for row in report["episodes"]] == [(5, True), (6, False), (7, True)]
    assert len(lerobot(tmp_path / "all", {"state": "observation.state", "action": "action"}).episodes) == 3


def test_demos_render_stores_the_camera(tmp_path, monkeypatch):
    """--render asks the experts' episodes for camera frames and stores them as
    observation.images.top (the frames are stand-ins: software rendering takes 0.1-0.25 s per
    frame here; tests/envs covers the rendering itself)."""
    needs("metaworld", "mujoco")
    import cvae_bridge.envs.demos as demos
    from cvae_bridge.envs import IMAGE, IMAGE_SIZE

    def with_camera(suite, task, num_episodes, seed, render=False, image_size=IMAGE_SIZE):
        assert render
        episodes = scripted_episodes(suite, task, num_episodes, seed)
        for episode in episodes:
            episode.frames[IMAGE] = np.random.default_rng(seed).integers(
                0, 256, (len(episode), *image_size, 3), dtype=np.uint8
            )
        return episodes

    scripted_episodes = demos.scripted_episodes
    monkeypatch.setattr(demos, "scripted_episodes", with_camera)
    assert (
        main(
            [
                "demos",
                "--suite",
                "metaworld",
                "--tasks",
                "reach-v3",
                "--episodes",
                "1",
                "--render",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    source = lerobot(tmp_path, {"state": "observation.state", "top": IMAGE, "action": "action"})
    frames = source.episodes[0].data[IMAGE]
    assert frames[3].shape == (*IMAGE_SIZE, 3) and frames[3].dtype == np.uint8
    report = json.loads((tmp_path / "demos.json").read_text())
    assert report["render"] is True and report["image_size"] == list(IMAGE_SIZE)

    # --image-size renders at another size (and implies --render)
    args = [
        "demos",
        "--suite",
        "metaworld",
        "--tasks",
        "reach-v3",
        "--episodes",
        "1",
        "--image-size",
        "24",
        "32",
        "--out",
        str(tmp_path / "small"),
    ]
    assert main(args) == 0
    source = lerobot(tmp_path / "small", {"state": "observation.state", "top": IMAGE, "action": "action"})
    assert source.episodes[0].data[IMAGE][0].shape == (24, 32, 3)
    assert json.loads((tmp_path / "small" / "demos.json").read_text())["image_size"] == [24, 32]
    with pytest.raises(
        ConfigError, match=r"image_size: expected \[height, width\], two positive ints, got \[0, 32\]"
    ):
        demos.generate_demos(
            demos.DemosConfig("metaworld", str(tmp_path / "bad"), ["reach-v3"], 1, image_size=[0, 32])
        )
    assert not (tmp_path / "bad").exists()


def test_demos_in_worker_processes_write_the_same_dataset(tmp_path, capsys):
    needs("gym_aloha", "mujoco")
    from cvae_bridge.envs.demos import DemosConfig, generate_demos

    one = generate_demos(
        DemosConfig("aloha", str(tmp_path / "one"), ["transfer_cube"], 3, 7, progress_bar=False)
    )
    assert "demos:" not in capsys.readouterr().err
    two = generate_demos(DemosConfig("aloha", str(tmp_path / "two"), ["transfer_cube"], 3, 7, workers=2))
    assert [row["seed"] for row in two["episodes"]] == [7, 8, 9] and two["workers"] == 2
    # the bar counted the episodes of both workers, and the experts' successes
    progress = capsys.readouterr().err
    assert "demos: 100%" in progress and f"success={two['tasks']['transfer_cube']['successes']}/3" in progress
    assert [(r["seed"], r["success"]) for r in one["episodes"]] == [
        (r["seed"], r["success"]) for r in two["episodes"]
    ]
    features = {"qpos": "observation.state", "action": "action"}
    for a, b in zip(
        lerobot(tmp_path / "one", features).episodes, lerobot(tmp_path / "two", features).episodes
    ):
        assert all(np.array_equal(a.data[key], b.data[key]) for key in ("observation.state", "action"))
    with pytest.raises(ConfigError, match="workers: expected a positive int, got 0"):
        generate_demos(DemosConfig("aloha", str(tmp_path / "three"), ["transfer_cube"], 3, 7, workers=0))


def test_demos_progress_counts_episodes_as_the_experts_finish(monkeypatch):
    """The experts run in chunks, so that the bar moves: rendered episodes one at a time, others
    up to demos.CHUNK at a time, a whole number of chunks per worker (tqdm seen through a stand-in)."""
    from types import SimpleNamespace

    import cvae_bridge.envs.demos as demos

    calls = []

    def experts(suite, task, num_episodes, seed, render=False, image_size=None):
        calls.append((seed, num_episodes))
        return [SimpleNamespace(seed=s, success=s % 3 > 0) for s in range(seed, seed + num_episodes)]

    class Bar:
        def __init__(self):
            self.updates, self.postfix = [], None

        def update(self, n):
            self.updates.append(n)

        def set_postfix(self, **postfix):
            self.postfix = postfix

    monkeypatch.setattr(demos, "scripted_episodes", experts)
    bar = Bar()
    episodes = demos._expert_episodes("metaworld", "reach-v3", 60, 5, False, (8, 8), 1, bar)
    assert [e.seed for e in episodes] == list(range(5, 65)) and calls == [(5, 20), (25, 20), (45, 20)]
    assert bar.updates == [20, 20, 20] and bar.postfix == {"task": "reach-v3", "success": "40/60"}
    calls.clear()
    demos._expert_episodes("metaworld", "reach-v3", 3, 0, True, (8, 8), 1, bar := Bar())
    assert calls == [(0, 1), (1, 1), (2, 1)] and bar.updates == [1, 1, 1] and bar.postfix["success"] == "2/3"


def test_task_names_and_aliases():
    from cvae_bridge.envs.demos import resolve_tasks

    mt10 = resolve_tasks("metaworld", "mt10")
    assert len(mt10) == 10 and "door-close-v3" not in mt10
    assert (
        resolve_tasks("metaworld", None)
        == list_tasks("metaworld")
        == [*mt10, "door-close-v3", "push-wall-v3"]
    )
    assert resolve_tasks("metaworld", ["push-wall-v3", "mt10"])[:2] == ["push-wall-v3", "reach-v3"]
    assert resolve_tasks("aloha", ["insertion", "all"]) == ["insertion", "transfer_cube"]
    with pytest.raises(ConfigError, match="unknown aloha task 'mt10'"):
        resolve_tasks("aloha", "mt10")


# ---------------------------------------------------------------------------------------------
# Rollouts.


def test_rollout_reports_per_task_and_repeats_exactly(mt10, tmp_path, short_episodes):
    from cvae_bridge.evaluation.rollout import RolloutConfig, evaluate_policy

    short_episodes(60)
    _, model = mt10
    config = RolloutConfig(str(model), "metaworld", MW_TASKS, episodes=3, batch_size=2)
    first = evaluate_policy(dataclasses.replace(config, out=str(tmp_path / "a")))
    second = evaluate_policy(dataclasses.replace(config, out=str(tmp_path / "b")))
    assert without_timing(first) == without_timing(second)
    saved = json.loads((tmp_path / "a" / "success.json").read_text())
    assert without_timing(saved) == without_timing(first)
    # the success table in the model card, once: the second rollout with the same settings replaced it
    card = (model / "README.md").read_text()
    assert card.count("### cvae-bridge rollout") == 1 and f"| {MW_TASKS[0]} |" in card
    assert str(model) not in card and first["model_card"].startswith("added the figures")
    assert (
        list(saved["tasks"]) == MW_TASKS
        and saved["seeds"] == [100000, 100002]
        and saved["demo_seeds"] == [0, 1]
    )
    for task, row in saved["tasks"].items():
        assert [r["seed"] for r in row["results"]] == [100000, 100001, 100002]
        assert row["successes"] == sum(r["success"] for r in row["results"]) and row["episodes"] == 3
        assert all(r["instruction"] in instructions("metaworld", task, "train") for r in row["results"])
        assert all(1 <= r["steps"] <= 60 for r in row["results"])
    assert saved["mean_success_rate"] == pytest.approx(
        np.mean([row["success_rate"] for row in saved["tasks"].values()])
    )
    assert (saved["query_period"], saved["temporal_ensemble"], saved["phrasings"]) == (
        20,
        None,
        "train",
    )  # the chunk size
    table = (tmp_path / "a" / "success.md").read_text()
    assert (
        "| reach-v3 |" in table
        and "| push-v3 |" in table
        and "| **mean** |" in table
        and "query period 20" in table
    )


@pytest.mark.parametrize("phrasings", ["train", "heldout"])
def test_rollout_gives_the_policy_the_chosen_phrasings(
    mt10, tmp_path, monkeypatch, short_episodes, phrasings
):
    from cvae_bridge.evaluation.rollout import RolloutConfig, episode_instruction, evaluate_policy
    from cvae_bridge.pipelines.policy import ActionChunkPolicy

    short_episodes(24)
    given = []
    select_action = ActionChunkPolicy.select_action

    def recording(self, observation, instruction=None):
        given.append(list(instruction))
        return select_action(self, observation, instruction)

    monkeypatch.setattr(ActionChunkPolicy, "select_action", recording)
    _, model = mt10
    report = evaluate_policy(
        RolloutConfig(
            str(model),
            "metaworld",
            ["push-v3"],
            episodes=2,
            batch_size=2,
            temporal_ensemble=0.01,
            phrasings=phrasings,
            out=str(tmp_path),
        )
    )
    texts = [episode_instruction("metaworld", "push-v3", phrasings, seed) for seed in (100000, 100001)]
    assert all(g == texts for g in given) and len(given) == 24  # one query per step
    assert set(texts) <= set(instructions("metaworld", "push-v3", phrasings))
    assert [r["instruction"] for r in report["tasks"]["push-v3"]["results"]] == texts
    assert report["phrasings"] == phrasings and report["query_period"] == 1
    # "train" phrasings follow the demonstrations' draw: the same seed, the same text.
    assert episode_instruction("metaworld", "push-v3", "train", 3) == draw_instruction(
        "metaworld", "push-v3", 3
    )


def test_rollout_refuses_the_demonstration_seeds(mt10, tmp_path):
    from cvae_bridge.evaluation.rollout import RolloutConfig, evaluate_policy

    _, model = mt10
    with pytest.raises(ConfigError, match=r"seeds 1 .. 2 overlap the demonstration seeds 0 .. 1"):
        evaluate_policy(
            RolloutConfig(str(model), "metaworld", ["reach-v3"], episodes=2, seed=1, out=str(tmp_path))
        )


@pytest.mark.parametrize("video_format", ["mp4", "gif"])
def test_rollout_command_writes_videos(mt10, tmp_path, short_episodes, video_format):
    from cvae_bridge.envs import RenderError

    short_episodes(8)  # software rendering takes about 0.25 s per frame here
    _, model = mt10
    args = [
        "rollout",
        "--model",
        str(model),
        "--suite",
        "metaworld",
        "--tasks",
        "reach-v3",
        "--episodes",
        "2",
        "--query-period",
        "10",
        "--video-dir",
        str(tmp_path / "videos"),
        "--videos",
        "1",
        "--out",
        str(tmp_path / "out"),
        *(["--video-format", "gif"] if video_format == "gif" else []),  # mp4 by default
    ]
    try:
        assert main(args) == 0
    except RenderError as error:
        pytest.skip(f"no offscreen rendering here: {error}")
    report = json.loads((tmp_path / "out" / "success.json").read_text())
    results = report["tasks"]["reach-v3"]["results"]
    videos = sorted((tmp_path / "videos").iterdir())
    assert [v.name for v in videos] == [Path(results[0]["video"]).name] and "video" not in results[1]
    assert videos[0].name.startswith("reach-v3_000_seed100000_") and videos[0].suffix == f".{video_format}"
    if video_format == "mp4":  # every frame, the reset's included, at Meta-World's 80 fps
        import av

        with av.open(str(videos[0])) as container:
            assert container.streams.video[0].average_rate == 80
            assert sum(1 for _ in container.decode(video=0)) == results[0]["steps"] + 1
        return

    from PIL import Image

    with Image.open(videos[0]) as gif:  # every 4th frame at 80 fps, 50 ms each (PIL merges repeated frames)
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    assert sum(durations) == 50 * len(range(0, results[0]["steps"] + 1, 4)) and len(durations) > 1


def test_aloha_demos_train_and_rollout(tmp_path):
    """The state-based ALOHA config trains on `demos` output and its policy runs through `rollout`."""
    needs("gym_aloha", "mujoco")
    assert (
        main(
            [
                "demos",
                "--suite",
                "aloha",
                "--tasks",
                "transfer_cube",
                "--episodes",
                "1",
                "--out",
                str(tmp_path / "data"),
            ]
        )
        == 0
    )
    source = lerobot(
        tmp_path / "data",
        {"qpos": "observation.state", "env_state": "observation.environment_state", "action": "action"},
    )
    episode = source.episodes[0]
    assert len(episode) == 400 and episode.data["observation.environment_state"].shape == (400, 7)
    assert episode.instruction in instructions("aloha", "transfer_cube", "train")
    model = train_config("aloha_transfer_cube_state.yaml", tmp_path / "data", tmp_path / "run", steps=2)
    assert (
        main(
            [
                "rollout",
                "--model",
                str(model),
                "--suite",
                "aloha",
                "--tasks",
                "transfer_cube",
                "--episodes",
                "1",
                "--query-period",
                "25",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "success.json").read_text())
    assert report["phrasings"] is None and report["query_period"] == 25 and report["chunk_size"] == 50
    assert report["tasks"]["transfer_cube"]["results"][0]["instruction"] is None
    stages = report["tasks"]["transfer_cube"]["stages"]  # gym-aloha's staged reward, counted per episode
    assert list(stages) == ["touched", "lifted", "transfer attempted", "transferred"]
    assert stages["transferred"] == report["tasks"]["transfer_cube"]["successes"] and sorted(
        stages.values(), reverse=True
    ) == list(stages.values())
    assert "episodes that reached each stage: touched" in (tmp_path / "out" / "success.md").read_text()
    with pytest.raises(ConfigError, match="'heldout' needs a language-conditioned policy"):
        main(
            [
                "--debug",
                "rollout",
                "--model",
                str(model),
                "--suite",
                "aloha",
                "--phrasings",
                "heldout",
                "--out",
                str(tmp_path / "x"),
            ]
        )


def test_pixel_policy_rollout_renders_as_the_demonstrations_were_rendered(
    tmp_path, monkeypatch, short_episodes
):
    """A policy trained on frames rendered at 24x32 is evaluated on frames rendered at 24x32 (the
    size demos.json records), which the policy then resizes as training did."""
    needs("gym_aloha", "mujoco")
    import cvae_bridge.evaluation.rollout as rollout
    from cvae_bridge.data.lerobot import write_lerobot_dataset
    from cvae_bridge.envs import IMAGE, STATE
    from cvae_bridge.envs.demos import DEMOS_FILE

    rng = np.random.default_rng(0)
    episodes = [
        {
            STATE: rng.normal(size=(30, 14)).astype(np.float32),
            "action": rng.normal(size=(30, 14)).astype(np.float32),
            IMAGE: rng.integers(0, 256, (30, 24, 32, 3), dtype=np.uint8),
            "task": "",
        }
        for _ in range(2)
    ]
    write_lerobot_dataset(tmp_path / "data", episodes, fps=50)
    (tmp_path / "data" / DEMOS_FILE).write_text(
        json.dumps(
            {
                "suite": "aloha",
                "tasks": {"transfer_cube": {}},
                "seed": 0,
                "episodes_per_task": 2,
                "image_size": [24, 32],
            }
        )
    )
    settings = [
        f"data.path={tmp_path / 'data'}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.steps=2",
        "train.batch_size=4",
        "train.num_workers=0",
        "data.image_size=[16, 24]",
        "model.conditions.top.size=[16, 24]",
        "model.d_model=32",
        *QUIET,
    ]
    assert (
        main(
            [
                "train",
                str(CONFIGS / "aloha_transfer_cube_pixels.yaml"),
                *[a for s in settings for a in ("--set", s)],
            ]
        )
        == 0
    )

    short_episodes(3)
    sizes = []
    make_env = rollout.make_env
    monkeypatch.setattr(
        rollout, "make_env", lambda *a, **k: sizes.append(k["image_size"]) or make_env(*a, **k)
    )
    report = rollout.evaluate_policy(
        rollout.RolloutConfig(
            str(tmp_path / "run" / "model"), "aloha", ["transfer_cube"], 1, out=str(tmp_path / "out")
        )
    )
    assert sizes == [(24, 32)] and report["image_size"] == [24, 32]


# ---------------------------------------------------------------------------------------------
# The shipped configs.


def test_pixel_configs_see_only_the_camera_and_the_joints():
    """What every published ALOHA figure sees (gym-aloha's `pixels` and `agent_pos`): no object poses."""
    pixel_configs = sorted(CONFIGS.glob("*pixels*.yaml")) + [CONFIGS / "act_aloha.yaml"]
    assert len(pixel_configs) >= 3
    for path in pixel_configs:
        # act_aloha.yaml takes its camera from the data: an ALOHA sim dataset's here
        config, _ = resolve_run_config(load_run_config(path), ALOHA_SIM_FEATURES)
        observed = {key for name, key in config.data.features.items() if name not in config.model.targets}
        assert "observation.state" in observed and any(
            key.startswith("observation.images.") for key in observed
        ), path.name
        assert observed <= {"observation.state"} | {
            k for k in observed if k.startswith("observation.images.")
        }, path.name
        assert (
            "env_state" not in config.model.conditions and "observation.environment_state" not in observed
        ), path.name


def test_aloha_pixel_configs_differ_only_in_the_task():
    cube = to_dict(load_run_config(CONFIGS / "aloha_transfer_cube_pixels.yaml"))
    insertion = to_dict(load_run_config(CONFIGS / "aloha_insertion_pixels.yaml"))
    for config, task in ((cube, "transfer_cube"), (insertion, "insertion")):
        assert config["data"].pop("path") == f"data/aloha_{task}_pixels"
        assert config["train"].pop("output_dir") == f"runs/aloha_{task}_pixels"
    assert cube == insertion
    assert cube["data"]["image_size"] == cube["model"]["conditions"]["top"]["size"]


def test_aloha_configs_differ_only_in_the_task():
    cube = to_dict(load_run_config(CONFIGS / "aloha_transfer_cube_state.yaml"))
    insertion = to_dict(load_run_config(CONFIGS / "aloha_insertion_state.yaml"))
    assert cube["model"]["conditions"].pop("env_state")["shape"] == [7]
    assert insertion["model"]["conditions"].pop("env_state")["shape"] == [14]
    for config, task in ((cube, "transfer_cube"), (insertion, "insertion")):
        assert config["data"].pop("path") == f"data/aloha_{task}"
        assert config["train"].pop("output_dir") == f"runs/aloha_{task}_state"
    assert cube == insertion
    assert cube["data"]["chunk_size"] == cube["model"]["targets"]["action"]["decoder"]["chunk_size"] == 50


def test_mt10_config_is_language_conditioned():
    config = load_run_config(CONFIGS / "metaworld_mt10.yaml")
    assert (
        config.data.instruction_key == "instruction" and config.model.conditions["instruction"].type == "text"
    )
    assert config.model.conditions["state"].shape == [39]
    decoder = config.model.targets["action"].decoder
    assert (decoder.dim, decoder.chunk_size) == (4, config.data.chunk_size)
