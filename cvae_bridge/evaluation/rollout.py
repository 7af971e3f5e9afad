"""Rollout evaluation: a trained action-chunk policy run in the simulators, success rate per task.

    evaluate_policy(RolloutConfig(model="runs/metaworld_mt10/model", suite="metaworld", tasks=["mt10"]))
    cvae-bridge rollout --model runs/metaworld_mt10/model --suite metaworld --episodes 50 [--phrasings heldout]
    cvae-bridge rollout --model ... --suite aloha --set batch_size=25 (any RolloutConfig field)

Episode i of every task starts from seed `seed + i`, EVAL_SEED (100000) by default: disjoint from
the demonstrations' seeds (0 .. N-1 by default), so that a policy is never scored on an initial
state it was trained on. When the model's training dataset is found with its demos.json, an overlap
raises. The same seeds, model and options give the same results.

`batch_size` episodes of a task run side by side, one policy call for all of them per step (the
environments are independent); an episode that has ended keeps its last observation in the batch
and its actions are dropped. A language-conditioned policy gets, per episode, a phrasing of the
task drawn with the episode's seed from the "train" phrasings (those of the demonstrations) or the
"heldout" ones (never seen in training).

Writes `success.json` (per task: success rate, per-episode seed / success / steps / instruction,
seconds per episode and the policy's share of them; the mean over tasks) and `success.md` (a
table), and with `video_dir` a video of the first `videos` episodes of each task, MP4 (or GIF with
`video_format="gif"`), each frame captioned with the task, the step, running / success / failure
and the instruction (video.py). Rendering
runs at every step of a recorded episode: in software (no GPU) that is 0.1 s (ALOHA) to 0.25 s
(Meta-World) per frame, so keep the recorded episodes few.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from ..config import NonNegativeFloat, NonNegativeInt, PositiveInt, Seed
from ..envs import IMAGE, IMAGE_SIZE, instructions, make_env
from ..envs.demos import DEMOS_FILE, EVAL_SEED, resolve_tasks
from ..errors import ConfigError
from ..hub import read_run_config, record_evaluation
from ..pipelines.policy import ActionChunkPolicy
from ..utils.files import atomic_write_text
from .video import caption_episode, check_video_format, write_video


@dataclass
class RolloutConfig:
    """What `cvae-bridge rollout` runs: the policy of a model folder in a simulator suite."""

    model: str  # a model folder written by training
    suite: str  # a suite of envs/suites.py
    tasks: list[str] | None = None  # names or aliases ("all", "mt10"); None: every task
    episodes: PositiveInt = 50  # per task
    seed: Seed | None = None  # of episode 0, EVAL_SEED when None; episode i runs from seed + i
    temporal_ensemble: NonNegativeFloat | None = None  # ACT's m, e.g. 0.01; None: no ensembling
    query_period: PositiveInt | None = None  # re-plan every n steps (default: the chunk, 1 with ensembling)
    phrasings: Literal["train", "heldout"] = "train"  # instructions of a language-conditioned policy
    video_dir: str | None = None  # videos <task>_<episode>_seed<seed>_<success|failure>.<format> here
    videos: NonNegativeInt = 2  # episodes per task saved as videos with video_dir
    video_format: Literal["mp4", "gif"] = "mp4"  # MP4: H.264, every frame; GIF: about 20 frames/s
    batch_size: PositiveInt = 10  # episodes run side by side, one policy call per step
    out: str | None = None  # success.json and success.md (default: rollout/ beside the model folder)
    device: str = "auto"  # the GPU where there is one
    # the policy network's precision: bfloat16 pays where the device has bf16 arithmetic (a GPU)
    dtype: Literal["float32", "bfloat16"] = "float32"
    progress_bar: bool = True  # episodes done and successes so far, on stderr
    model_card: bool = True  # add the success table to the model folder's README.md


def evaluate_policy(config: RolloutConfig) -> dict[str, Any]:
    """Run the policy for `episodes` episodes per task; see the module docstring. Returns the report."""
    model_dir, suite, tasks, episodes, seed = (
        config.model,
        config.suite,
        config.tasks,
        config.episodes,
        config.seed,
    )
    phrasings, batch_size, video_dir = config.phrasings, config.batch_size, config.video_dir
    if phrasings not in ("train", "heldout"):
        raise ConfigError(f"phrasings: expected 'train' or 'heldout', got {phrasings!r}")
    check_video_format(config.video_format, encode=bool(video_dir and config.videos))
    for name, value in (("episodes", episodes), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: expected a positive int, got {value!r}")
    seed = EVAL_SEED if seed is None else seed
    task_names = resolve_tasks(suite, tasks)
    policy = ActionChunkPolicy.from_pretrained(
        model_dir, config.device, config.query_period, config.temporal_ensemble, dtype=config.dtype
    )
    if phrasings == "heldout" and policy.instruction_key is None:
        raise ConfigError(
            f"phrasings: 'heldout' needs a language-conditioned policy; {model_dir} takes no instruction"
        )
    demos = _training_demos(model_dir)
    demo_seeds = _check_disjoint_from_demos(demos, suite, task_names, seed, episodes)
    # The camera renders as the demonstrations were rendered; the policy then resizes as training did.
    image_size = tuple((demos or {}).get("image_size") or policy.image_size or IMAGE_SIZE)

    start = time.perf_counter()
    report_tasks = {}
    bar = tqdm(
        total=episodes * len(task_names), desc="rollout", unit="episode", disable=not config.progress_bar
    )
    for task in task_names:
        task_start, results, policy_s = time.perf_counter(), [], 0.0
        for first in range(0, episodes, batch_size):
            seeds = list(range(seed + first, seed + min(first + batch_size, episodes)))
            # video paths (without the outcome) of the first `videos` episodes
            videos = [
                Path(video_dir) / f"{task}_{first + i:03d}_seed{s}.{config.video_format}"
                if video_dir and first + i < config.videos
                else None
                for i, s in enumerate(seeds)
            ]
            batch, seconds, stages = _run_batch(policy, suite, task, seeds, phrasings, videos, image_size)
            results += batch
            policy_s += seconds
            bar.update(len(batch))
            bar.set_postfix(task=task, success=f"{sum(r['success'] for r in results)}/{len(results)}")
        elapsed = time.perf_counter() - task_start
        successes = sum(r["success"] for r in results)
        # episodes that reached each sub-stage, where the task has them: where the failures stop
        reached = {name: sum(r["stages_reached"] > k for r in results) for k, name in enumerate(stages)}
        report_tasks[task] = {
            **({"stages": reached} if reached else {}),
            "success_rate": successes / episodes,
            "successes": successes,
            "episodes": episodes,
            "mean_steps": float(np.mean([r["steps"] for r in results])),
            "s_per_episode": elapsed / episodes,
            "policy_s_per_episode": policy_s / episodes,
            "results": results,
        }
    bar.close()
    elapsed = time.perf_counter() - start
    report = {
        "model": str(model_dir),
        "suite": suite,
        "mean_success_rate": float(np.mean([t["success_rate"] for t in report_tasks.values()])),
        "tasks": report_tasks,
        "episodes_per_task": episodes,
        "seeds": [seed, seed + episodes - 1],
        "demo_seeds": demo_seeds,
        "phrasings": phrasings if policy.instruction_key else None,
        "chunk_size": policy.chunk_size,
        "query_period": policy.query_period,
        "temporal_ensemble": policy.temporal_ensemble,
        "batch_size": batch_size,
        "image_size": list(image_size) if IMAGE in policy.observation_keys else None,
        "time_s": elapsed,
        "s_per_episode": elapsed / (episodes * len(task_names)),
    }
    out = Path(config.out) if config.out is not None else Path(model_dir).parent / "rollout"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "success.md", markdown_table(report))
    if config.model_card:
        settings, _, table = markdown_table(report, model=False).partition("\n")
        named = " ".join(tasks) if tasks else "all tasks"
        report["model_card"] = record_evaluation(model_dir, f"cvae-bridge rollout {named}, {settings}", table)
    atomic_write_text(out / "success.json", json.dumps(report, indent=2))
    return report


def episode_instruction(suite: str, task: str, phrasings: str, seed: int) -> str:
    """The phrasing an episode gets: drawn with its seed, as `envs.draw_instruction` draws the
    demonstrations' (so "train" gives a demonstration of the same seed the same text)."""
    options = instructions(suite, task, phrasings)
    return options[int(np.random.default_rng(seed).integers(len(options)))]


def _run_batch(
    policy: ActionChunkPolicy,
    suite: str,
    task: str,
    seeds: list[int],
    phrasings: str,
    videos: list[Path | None],
    image_size: tuple[int, int],
) -> tuple[list[dict[str, Any]], float, tuple[str, ...]]:
    """Episodes from `seeds` side by side, the camera rendered at `image_size`; those with a video
    path are saved there, captioned, the outcome added to the name. Returns the per-episode
    results, the seconds spent in the policy and the task's sub-stages (`RobotEnv.stages`)."""
    needs_images = IMAGE in policy.observation_keys
    envs = [
        make_env(suite, task, s, render=needs_images or video is not None, image_size=image_size)
        for s, video in zip(seeds, videos)
    ]
    try:
        observations = [env.reset() for env in envs]
        texts = (
            [episode_instruction(suite, task, phrasings, s) for s in seeds]
            if policy.instruction_key
            else None
        )
        frames = [[obs[IMAGE]] if video else None for obs, video in zip(observations, videos)]
        done, success = [False] * len(envs), [False] * len(envs)
        policy.reset()
        policy_s = 0.0
        while not all(done):
            batch = {key: np.stack([obs[key] for obs in observations]) for key in policy.observation_keys}
            tick = time.perf_counter()
            actions = policy.select_action(batch, texts)
            policy_s += time.perf_counter() - tick
            for i, env in enumerate(envs):
                if not done[i]:
                    observations[i], success[i], done[i] = env.step(actions[i])
                    if frames[i] is not None:
                        frames[i].append(observations[i][IMAGE])
        results = []
        for i, env in enumerate(envs):
            result = {
                "seed": seeds[i],
                "success": success[i],
                "steps": env.steps,
                "instruction": texts[i] if texts else None,
            }
            if env.stages:
                result["stages_reached"] = env.stages_reached
            if videos[i] is not None:
                path = videos[i].with_stem(f"{videos[i].stem}_{'success' if success[i] else 'failure'}")
                captioned = caption_episode(frames[i], task, result["instruction"], success[i])
                result["video"] = str(write_video(path, captioned, env.fps))
            results.append(result)
        return results, policy_s, envs[0].stages
    finally:
        for env in envs:
            env.close()


def _training_demos(model_dir: str | Path) -> dict[str, Any] | None:
    """demos.json of the model's training dataset, with its path; None when there is none."""
    path = Path(read_run_config(model_dir).data.path) / DEMOS_FILE
    return {**json.loads(path.read_text()), "path": str(path)} if path.is_file() else None


def _check_disjoint_from_demos(
    demos: dict[str, Any] | None, suite: str, tasks: list[str], seed: int, episodes: int
) -> list[int] | None:
    """The demonstration seeds [first, last] of the model's training dataset (None without its
    demos.json); raises when they overlap the evaluation seeds on a shared task."""
    if demos is None:
        return None
    path = demos["path"]
    first, last = demos["seed"], demos["seed"] + demos["episodes_per_task"] - 1
    shared = sorted(set(tasks) & set(demos["tasks"])) if demos["suite"] == suite else []
    if shared and seed <= last and first <= seed + episodes - 1:
        raise ConfigError(
            f"seed: evaluation seeds {seed} .. {seed + episodes - 1} overlap the demonstration seeds {first} .. {last} "
            f"of {path} (tasks {shared}); evaluate from seed {EVAL_SEED} or above {last}"
        )
    return [first, last]


def markdown_table(report: dict[str, Any], model: bool = True) -> str:
    """success.md: one row per task, then the mean, under a line giving the settings (and the
    model folder: `model`)."""
    ensemble = report["temporal_ensemble"]
    of = f"Rollouts of `{report['model']}` ({report['suite']})" if model else report["suite"]
    lines = [
        f"{of}: {report['episodes_per_task']} episodes per task, "
        f"seeds {report['seeds'][0]} .. {report['seeds'][1]}, chunk {report['chunk_size']}, "
        f"query period {report['query_period']}, temporal ensembling {'off' if ensemble is None else f'm = {ensemble}'}"
        + (f", {report['phrasings']} phrasings" if report["phrasings"] else ""),
        "",
        "| task | success | episodes | mean steps | s / episode |",
        "|---|---:|---:|---:|---:|",
    ]
    for task, row in report["tasks"].items():
        lines.append(
            f"| {task} | {100 * row['success_rate']:.1f}% | {row['episodes']} | {row['mean_steps']:.0f} | {row['s_per_episode']:.2f} |"
        )
    lines.append(
        f"| **mean** | **{100 * report['mean_success_rate']:.1f}%** | | | {report['s_per_episode']:.2f} |"
    )
    for task, row in report["tasks"].items():
        if "stages" in row:
            lines.append(
                f"\n{task}, episodes that reached each stage: "
                + ", ".join(f"{k} {v}" for k, v in row["stages"].items())
            )
    return "\n".join(lines) + "\n"
