"""Check that LeRobot datasets go both ways between cvae_bridge and the real LeRobot library.

    lr-venv/bin/python tools/check_lerobot_datasets.py                  # from the repository root
    lr-venv/bin/python tools/check_lerobot_datasets.py --out /tmp/lerobot_check --project-python .venv/bin/python

1. `cvae-bridge demos` (run with the project's Python, which has the simulators) writes a small
   dataset: Meta-World reach-v3, 2 episodes, the camera at 24x32.
2. LeRobot's LeRobotDataset opens it, appends an episode through its recording API (add_frame,
   save_episode, finalize) and opens it again; cvae_bridge reads the appended episode back.
3. LeRobot records a dataset with the demos' features (its own API, the same joint and axis
   names), and its `aggregate_datasets` merges the two; both libraries open the result.
4. LeRobot records an SO-101-style dataset (6 named joints, camera observation.images.front);
   cvae_bridge reads it, takes configs/act_aloha.yaml's sizes and camera from it, and
   `cvae-bridge train configs/act_aloha_state.yaml` (without its object poses) trains 2 steps on it.

Each check prints a line with PASS or FAIL; the exit status is the number of failures.

lerobot 0.4.4 pins torch < 2.11, so it runs in a venv of its own, never the project's, with
cvae_bridge installed there without its dependencies:

    python3 -m venv lr-venv && lr-venv/bin/pip install torch==2.13.0 torchvision==0.28.0 lerobot-dataset==0.4.4
    lr-venv/bin/pip install --no-deps lerobot==0.4.4 accelerate safetensors
    lr-venv/bin/pip install --no-deps -e .
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

os.environ["HF_HUB_OFFLINE"] = "1"  # every dataset here is local: LeRobot must not reach for the Hub
# LeRobot imports torchvision, whose PyPI build's C++ ops do not load beside this CPU torch; its
# pure-Python parts import once the two op schemas it registers unconditionally are declared.
_torchvision = torch.library.Library("torchvision", "DEF")
for _op in ("nms", "qnms"):
    _torchvision.define(f"{_op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

from lerobot.datasets.aggregate import aggregate_datasets  # noqa: E402
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: E402

from cvae_bridge.config import load_run_config  # noqa: E402
from cvae_bridge.data.lerobot import LeRobotConfig, LeRobotSource, read_info  # noqa: E402
from cvae_bridge.data.lerobot.meta import DEFAULT_FEATURES  # noqa: E402
from cvae_bridge.data.resolve import resolve_run_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SO101_JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]


class Checks:
    """Runs each check, printing one PASS / FAIL line; a check is a function returning a detail."""

    def __init__(self) -> None:
        self.failures = 0

    def run(self, name: str, check: Callable[[], str]) -> bool:
        try:
            detail = check()
        except Exception as error:  # a failed check is reported, and the others still run
            self.failures += 1
            traceback.print_exc()
            print(f"FAIL  {name}: {type(error).__name__}: {str(error)[:300]}", flush=True)
            return False
        print(f"PASS  {name}: {detail}", flush=True)
        return True


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def user_features(root: Path) -> dict:
    """info.json's features without LeRobot's bookkeeping columns, shapes as tuples: what a
    LeRobot recorder declares (LeRobot compares shapes as tuples)."""
    return {
        name: {**feature, "shape": tuple(feature["shape"])}
        for name, feature in read_info(root)["features"].items()
        if name not in DEFAULT_FEATURES
    }


def frame_of(features: dict, rng: np.random.Generator) -> dict:
    """A random frame for LeRobot's add_frame: a value of each feature's dtype and shape."""
    frame = {}
    for name, feature in features.items():
        if feature["dtype"] == "image":
            frame[name] = rng.integers(0, 256, size=feature["shape"], dtype=np.uint8)
        else:
            frame[name] = rng.normal(size=feature["shape"]).astype(feature["dtype"])
    return frame


def record(
    dataset: LeRobotDataset, features: dict, lengths: list[int], task: str, seed: int
) -> list[np.ndarray]:
    """Episodes of random frames through LeRobot's recording API; the actions of each."""
    rng, actions = np.random.default_rng(seed), []
    for length in lengths:
        frames = [frame_of(features, rng) for _ in range(length)]
        for frame in frames:
            dataset.add_frame({**frame, "task": task})
        dataset.save_episode()
        actions.append(np.stack([f["action"] for f in frames]))
    dataset.finalize()
    return actions


def read_back(root: Path, features: dict[str, str]) -> LeRobotSource:
    return LeRobotSource(LeRobotConfig(path=str(root), features=features, val_fraction=0.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", help="folder for the datasets (default: a temporary folder, removed after)")
    parser.add_argument(
        "--project-python",
        default=str(ROOT / ".venv" / "bin" / "python"),
        help="the project venv's Python, which runs `cvae-bridge demos` and `train` (default: .venv/bin/python)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="lerobot_check_"))
    out.mkdir(parents=True, exist_ok=True)
    checks = Checks()

    def project(*command: str) -> str:
        """Run the project's Python (`-m cvae_bridge.cli ...`, `-c ...`); its standard output."""
        done = subprocess.run([args.project_python, *command], capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)[:80]} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout

    demos, appended, recorded, merged, so101 = (
        out / n for n in ("demos", "appended", "recorded", "merged", "so101")
    )
    for folder in (appended, recorded, merged, so101):
        shutil.rmtree(folder, ignore_errors=True)  # LeRobot creates these and refuses existing ones

    def write_demos() -> str:
        project(
            "-m", "cvae_bridge.cli", "demos", "--suite", "metaworld", "--tasks", "reach-v3", "--episodes", "2",
            "--image-size", "24", "32", "--out", str(demos),
        )  # fmt: skip
        info = read_info(demos)
        names = info["features"]["observation.state"]["names"]
        expect(names[0] == "hand_x", f"observation.state names {names[:3]}...: expected Meta-World's")
        return f"{info['total_episodes']} episodes, {info['total_frames']} frames, names {names[:2]}..."

    if not checks.run("1  cvae-bridge demos writes a dataset", write_demos):
        return checks.failures  # every later check needs the demos
    info = read_info(demos)
    episodes, frames = info["total_episodes"], info["total_frames"]
    features = user_features(demos)

    def lerobot_opens() -> str:
        dataset = LeRobotDataset("local/demos", root=demos)
        item = dataset[frames - 1]
        expect(len(dataset) == frames, f"{len(dataset)} frames, info.json says {frames}")
        expect(item["observation.images.top"].shape == (3, 24, 32), "the camera frame's shape")
        return f"{dataset.num_episodes} episodes, {len(dataset)} frames, the last frame's keys {sorted(item)[:4]}..."

    checks.run("2a LeRobotDataset opens the demos", lerobot_opens)
    shutil.copytree(demos, appended)
    added: list[np.ndarray] = []

    def lerobot_appends() -> str:
        added.extend(record(LeRobotDataset("local/appended", root=appended), features, [9], "appended", 1))
        dataset = LeRobotDataset("local/appended", root=appended)
        expect(dataset.num_episodes == episodes + 1, f"{dataset.num_episodes} episodes after appending one")
        expect(len(dataset) == frames + 9, f"{len(dataset)} frames after appending 9")
        last = dataset[len(dataset) - 1]
        expect(int(last["episode_index"]) == episodes, "the last frame's episode_index")
        np.testing.assert_allclose(last["action"].numpy(), added[0][-1], rtol=1e-6)
        stats = dataset.meta.stats["action"]
        expect({"q01", "q50", "q99"} <= set(stats), f"stats.json's action stats: {sorted(stats)}")
        return f"reopened with {dataset.num_episodes} episodes, {len(dataset)} frames; stats keys {sorted(stats)}"

    if checks.run("2b LeRobot appends an episode and reopens the dataset", lerobot_appends):

        def cvae_bridge_reads_appended() -> str:
            source = read_back(appended, {"state": "observation.state", "action": "action"})
            episode = source.episodes[-1]
            expect(len(source.episodes) == episodes + 1, f"{len(source.episodes)} episodes")
            np.testing.assert_allclose(episode.data["action"], added[0], rtol=1e-6)
            return f"{len(source.episodes)} episodes; the appended one ({len(episode)} frames) as LeRobot stored it"

        checks.run("2c cvae_bridge reads the appended dataset", cvae_bridge_reads_appended)

    def lerobot_records() -> str:
        # Declared as a LeRobot recorder of the simulator would: its dtypes and shapes, the joint
        # and axis names of its definition, and LeRobot's names of an image's axes.
        names = json.loads(
            project(
                "-c",
                "import json; from cvae_bridge.envs import feature_names; "
                "print(json.dumps(feature_names('metaworld', 'reach-v3')))",
            )
        )
        declared = {
            name: {
                "dtype": feature["dtype"],
                "shape": feature["shape"],
                "names": names.get(name, ["height", "width", "channels"]),
            }
            for name, feature in features.items()
        }
        dataset = LeRobotDataset.create(
            "local/recorded", fps=info["fps"], features=declared, root=recorded,
            robot_type=info["robot_type"], use_videos=False,
        )  # fmt: skip
        record(dataset, declared, [7, 5], "reach the goal", 2)
        return f"2 episodes of {info['robot_type']} at {info['fps']} fps, features {sorted(declared)}"

    def lerobot_aggregates() -> str:
        aggregate_datasets(
            ["local/demos", "local/recorded"], "local/merged", roots=[demos, recorded], aggr_root=merged
        )
        dataset = LeRobotDataset("local/merged", root=merged)
        expect(
            dataset.num_episodes == episodes + 2, f"{dataset.num_episodes} episodes, expected {episodes + 2}"
        )
        source = read_back(
            merged, {"state": "observation.state", "top": "observation.images.top", "action": "action"}
        )
        expect(len(source.episodes) == episodes + 2, f"cvae_bridge reads {len(source.episodes)} episodes")
        return (
            f"{dataset.num_episodes} episodes, {len(dataset)} frames; cvae_bridge reads "
            f"{len(source.episodes)} episodes, tasks {source.tasks[:1]}..."
        )

    if checks.run("3a LeRobot records a dataset with the demos' features", lerobot_records):
        checks.run(
            "3b aggregate_datasets merges demos and recording; both libraries open it", lerobot_aggregates
        )

    so101_features = {
        "observation.state": {"dtype": "float32", "shape": (6,), "names": [f"{j}.pos" for j in SO101_JOINTS]},
        "action": {"dtype": "float32", "shape": (6,), "names": [f"{j}.pos" for j in SO101_JOINTS]},
        "observation.images.front": {
            "dtype": "image",
            "shape": (48, 64, 3),
            "names": ["height", "width", "channels"],
        },
    }

    def cvae_bridge_reads_lerobot() -> str:
        dataset = LeRobotDataset.create(
            "local/so101",
            fps=30,
            features=so101_features,
            root=so101,
            robot_type="so101_follower",
            use_videos=False,
        )
        actions = record(dataset, so101_features, [30, 25], "pick up the cube", 3)
        source = read_back(
            so101, {"qpos": "observation.state", "front": "observation.images.front", "action": "action"}
        )
        np.testing.assert_allclose(source.episodes[1].data["action"], actions[1], rtol=1e-6)
        sample = source.split("train")[0]
        expect(tuple(sample["front"].shape) == (3, 48, 64), f"camera sample {tuple(sample['front'].shape)}")
        config, notes = resolve_run_config(
            load_run_config(ROOT / "configs" / "act_aloha.yaml", [f"data.path={so101}"])
        )
        expect(config.model.conditions["qpos"].shape == [6], "qpos shape from info.json")
        expect(config.model.targets["action"].decoder.dim == 6, "action dim from info.json")
        expect(config.data.features["top"] == "observation.images.front", "the camera from info.json")
        return (
            f"{len(source.episodes)} episodes, actions as recorded; act_aloha.yaml from the data: "
            + "; ".join(n.split(" (")[0] for n in notes)
        )

    if checks.run("4a cvae_bridge reads an SO-101-style dataset LeRobot recorded", cvae_bridge_reads_lerobot):

        def cvae_bridge_trains() -> str:
            run = out / "so101_run"
            shutil.rmtree(run, ignore_errors=True)
            stdout = project(
                "-m", "cvae_bridge.cli", "train", str(ROOT / "configs" / "act_aloha_state.yaml"),
                "--set", "model.conditions.env_state=null", "--set", f"data.path={so101}",
                "--set", f"train.output_dir={run}", "--set", "train.steps=2", "--set", "train.batch_size=4",
                "--set", "train.eval_every=0", "--set", "train.trackers=[]", "--set", "train.progress_bar=false",
            )  # fmt: skip
            inferred = [line for line in stdout.splitlines() if line.startswith("from the data:")]
            saved = json.loads((run / "model" / "config.json").read_text())["model"]
            expect(len(inferred) == 3, f"the trainer's notes: {inferred}")
            expect(saved["conditions"]["qpos"]["shape"] == [6], "the saved model's qpos shape")
            return f"{len(inferred)} sizes from the data, e.g. {inferred[0].split(' (')[0]!r}; the saved model has them"

        checks.run("4b cvae-bridge train takes its sizes from the LeRobot dataset", cvae_bridge_trains)

    if args.out:
        print(f"{checks.failures} failure(s); datasets in {out}")
    else:
        print(f"{checks.failures} failure(s)")
        shutil.rmtree(out, ignore_errors=True)
    return checks.failures


if __name__ == "__main__":
    sys.exit(main())
