"""Demonstration datasets from the scripted experts, in the LeRobot v3 layout.

    generate_demos(DemosConfig(suite="metaworld", tasks=["mt10"], out="data/metaworld_mt10"))
    generate_demos(DemosConfig(suite="aloha", tasks=["transfer_cube"], out="data/aloha", image_size=[240, 320]))

All tasks of a call go into one dataset. Episode i of every task runs from seed `seed + i` (as
`scripted_episodes` does), and its LeRobot task is its instruction: a training phrasing drawn with
that seed. Features: "observation.state", "action", "observation.environment_state" (ALOHA only),
their elements named as the simulator names them (`feature_names`: joints, axes, object poses),
and, with `render`, "observation.images.top" at `image_size` (H, W; 240x320 by default), stored as
PNG frames in the data files; it needs offscreen rendering (MUJOCO_GL=egl). A task's rendered frames
stay in memory until its episodes are written (H x W x 3 bytes a frame: 92 MB per 400-step episode
at 240x320).
The rendering cost per frame on this machine's CPU is in the README. demos.json records the image
size, and rollout evaluation renders at the same size.

By default only successful episodes are kept (an imitation policy should not learn the experts'
failures); `demos.json` in the dataset folder, and the "demos" entry of meta/info.json, say so and
give the experts' success rate per task. Demonstrations start at seed 0 (`cvae-bridge demos`'
default) and rollout evaluation at EVAL_SEED (100000), so that a policy is never scored on the
initial states it was trained on; `cvae_bridge.evaluation.rollout` checks this against demos.json.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..config import PositiveInt, Seed
from ..data.lerobot import INFO_PATH, LeRobotDatasetWriter
from ..errors import ConfigError, InputError
from ..utils.files import atomic_write_text
from . import IMAGE_SIZE, check_image_size, feature_names, get_suite, list_tasks, scripted_episodes

EVAL_SEED = 100_000  # first seed of rollout evaluation, far above the demonstrations'
DEMOS_FILE = "demos.json"
# Unrendered episodes per call of an expert; rendered ones go one at a time. Each call builds an
# env, and the progress bar moves as calls finish: a rendered episode takes far longer than building
# an env (tens of seconds vs under one), an unrendered one about as long (0.1-0.5 s vs 0.16 s for
# Meta-World).
CHUNK = 25


def resolve_tasks(suite: str, tasks: str | Sequence[str] | None) -> list[str]:
    """Task names of a suite from a name, a list of names, an alias ("mt10") or None (all tasks)."""
    known = list_tasks(suite)
    aliases = {"all": tuple(known), **get_suite(suite).aliases}
    names = [tasks] if isinstance(tasks, str) else list(tasks or ["all"])
    resolved: list[str] = []
    for name in names:
        if name in aliases:
            resolved.extend(aliases[name])
        elif name in known:
            resolved.append(name)
        else:
            raise ConfigError(
                f"tasks: unknown {suite} task {name!r}; expected one of {known} or {list(aliases)}"
            )
    return list(dict.fromkeys(resolved))  # each task once, in the order given


@dataclass
class DemosConfig:
    """What `cvae-bridge demos` writes: scripted-expert episodes of a suite as one LeRobot dataset."""

    suite: str  # a suite of envs/suites.py
    out: str  # the dataset folder (replaced if it exists)
    tasks: list[str] | None = None  # names or aliases ("all", "mt10"); None: every task
    episodes: PositiveInt = 50  # per task
    seed: Seed = 0  # episode i of each task runs from seed + i
    keep_failures: bool = False  # keep the experts' failed episodes too
    render: bool = False  # store the top camera as observation.images.top
    image_size: list[PositiveInt] | None = None  # [H, W] of the camera (implies render); None: IMAGE_SIZE
    workers: PositiveInt = 1  # processes per task; rendering takes a core each
    progress_bar: bool = True  # episodes done and the experts' successes so far, on stderr


def generate_demos(config: DemosConfig) -> dict[str, Any]:
    """Run the scripted experts and write their episodes as one LeRobot dataset at `out`.

    `workers` > 1 runs each task's episodes in that many processes (contiguous seed ranges; the
    dataset is the same as with one): offscreen rendering in software takes one core per process.

    Returns the report also written to `out`/demos.json: per task the expert's success rate, the
    episodes kept and their seeds; the mean success rate over tasks; the generation time.
    """
    suite, seed, episodes_per_task, workers = config.suite, config.seed, config.episodes, config.workers
    keep_failures, render = config.keep_failures, config.render or config.image_size is not None
    task_names = resolve_tasks(suite, config.tasks)
    image_size = check_image_size(config.image_size or IMAGE_SIZE)
    for name, value in (("episodes", episodes_per_task), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: expected a positive int, got {value!r}")
    start = time.perf_counter()
    out = Path(config.out)
    rows: list[dict[str, Any]] = []  # one per kept episode, in dataset order
    per_task: dict[str, dict[str, Any]] = {}
    fps = None
    # Each task's episodes go to the dataset as soon as they exist: one task is held at a time.
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(
            tqdm(
                total=episodes_per_task * len(task_names),
                desc="demos",
                unit="episode",
                disable=not config.progress_bar,
            )
        )
        writer = None
        for task in task_names:
            task_start = time.perf_counter()
            episodes = _expert_episodes(
                suite, task, episodes_per_task, seed, render, image_size, workers, bar
            )
            successes = sum(e.success for e in episodes)
            chosen = [e for e in episodes if e.success or keep_failures]
            fps = episodes[0].fps
            if chosen and writer is None:
                # the joint and axis names of the simulator, as LeRobot's recorders write them
                names = feature_names(suite, task)
                writer = stack.enter_context(
                    LeRobotDatasetWriter(out, fps, get_suite(suite).robot_type, names=names)
                )
            for episode in chosen:
                rows.append(
                    {
                        "episode_index": len(rows),
                        "task": task,
                        "seed": episode.seed,
                        "instruction": episode.instruction,
                        "success": episode.success,
                        "length": len(episode),
                    }
                )
                writer.add({**episode.frames, "action": episode.action, "task": episode.instruction})
            per_task[task] = {
                "episodes": len(episodes),
                "successes": successes,
                "success_rate": successes / len(episodes),
                "kept": len(chosen),
                "seeds": [seed, seed + episodes_per_task - 1],
                "mean_length": sum(len(e) for e in chosen) / max(len(chosen), 1),
                "time_s": time.perf_counter() - task_start,
            }
            del episodes, chosen
        if writer is None:
            raise InputError(
                f"{suite} {task_names}: no successful expert episode to keep (pass keep_failures=True to keep failures)"
            )
    report = {
        "suite": suite,
        "tasks": per_task,
        "mean_success_rate": sum(t["success_rate"] for t in per_task.values()) / len(per_task),
        "episodes_per_task": episodes_per_task,
        "seed": seed,
        "kept": "every episode" if keep_failures else "successful episodes only",
        "render": render,
        "image_size": list(image_size) if render else None,
        "workers": workers,
        "fps": fps,
        "total_episodes": len(rows),
        "total_frames": sum(r["length"] for r in rows),
        "time_s": time.perf_counter() - start,
        "episodes": rows,
    }
    atomic_write_text(out / DEMOS_FILE, json.dumps(report, indent=2))
    # Readers of the dataset alone (LeRobot tools) see where it came from and what was kept.
    info = json.loads((out / INFO_PATH).read_text())
    info["demos"] = {
        key: report[key] for key in ("suite", "seed", "episodes_per_task", "kept", "mean_success_rate")
    }
    info["demos"]["details"] = DEMOS_FILE
    atomic_write_text(out / INFO_PATH, json.dumps(info, indent=2))
    return report


def _expert_episodes(
    suite: str,
    task: str,
    count: int,
    seed: int,
    render: bool,
    image_size: tuple[int, int],
    workers: int,
    bar: tqdm,
) -> list:
    """`scripted_episodes` of seeds seed .. seed + count - 1, in contiguous chunks (CHUNK episodes
    or fewer) over `workers` processes; `bar` counts them as they finish, with the successes so far."""
    workers = min(workers, count)
    # a whole number of chunks per worker, so that the workers finish together
    pieces = min(count, workers * -(-count // (workers * (1 if render else CHUNK))))
    bounds = [seed + count * i // pieces for i in range(pieces + 1)]
    chunks = list(zip(bounds[:-1], bounds[1:]))
    done = successes = 0

    def finished(episodes: list) -> list:
        nonlocal done, successes
        done, successes = done + len(episodes), successes + sum(e.success for e in episodes)
        bar.update(len(episodes))
        bar.set_postfix(task=task, success=f"{successes}/{done}")
        return episodes

    if workers == 1:
        return [
            episode
            for first, end in chunks
            for episode in finished(
                scripted_episodes(suite, task, end - first, first, render=render, image_size=image_size)
            )
        ]
    # spawn: a forked child would inherit the parent's simulator and GL state
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [
            pool.submit(
                scripted_episodes, suite, task, end - first, first, render=render, image_size=image_size
            )
            for first, end in chunks
        ]
        for part in as_completed(parts):
            finished(part.result())
        return [episode for part in parts for episode in part.result()]


def format_demos_report(report: dict[str, Any]) -> str:
    """The per-task table printed by `cvae-bridge demos`."""
    lines = [f"{'task':<26} {'expert success':>15} {'kept':>6} {'mean length':>12} {'s/episode':>10}"]
    for task, row in report["tasks"].items():
        lines.append(
            f"{task:<26} {row['successes']:>5}/{row['episodes']:<4} {100 * row['success_rate']:>4.0f}% {row['kept']:>6} "
            f"{row['mean_length']:>12.1f} {row['time_s'] / row['episodes']:>10.3f}"
        )
    lines.append(
        f"{'mean over ' + str(len(report['tasks'])) + ' task(s)':<26} {100 * report['mean_success_rate']:>14.1f}%"
    )
    lines.append(
        f"kept {report['kept']}: {report['total_episodes']} episodes, {report['total_frames']} frames"
    )
    return "\n".join(lines)
