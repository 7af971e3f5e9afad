"""Meta-World (metaworld 3.1.1) behind the RobotEnv interface, with the shipped scripted experts.

Seeds and tasks: a Meta-World 3 env only runs after `set_task(Task)`, and a Task freezes one random
vector (`rand_vec`: object and goal positions). The MT10 benchmark draws 50 of them per task with
numpy's global RNG; here every seed draws its own from the env's seeded RNG (`env.seed(seed)`), the
way `metaworld._make_tasks` samples them, so any seed gives a reproducible, new configuration.

Observation: the full 39-d Meta-World observation (hand, gripper, object poses, the previous frame's
copy of those, goal). Action: 4-d in [-1, 1] (hand xyz delta, gripper effort). 80 steps per second.

Scripted episodes stop SUCCESS_TAIL steps after the first success rather than at the 500-step
horizon: the experts solve the tasks in 40-250 steps, and a fixed horizon would fill most of every
demonstration with near-still frames, which an action-chunking policy then learns as its typical
chunk. The short tail still shows it what to do once the task is solved (hold still).
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings

if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import numpy as np
from metaworld.env_dict import MT50_V3, MT50_V3_ARGS_KWARGS
from metaworld.policies import ENV_POLICY_MAP
from metaworld.types import Task

from . import ACTION, IMAGE, STATE, ExpertEpisode, RobotEnv, draw_instruction, make_renderer, stack_frames

CAMERA = (
    "corner2"  # the usual Meta-World camera; it is mounted upside down, so images are rotated 180 degrees
)
SUCCESS_TAIL = 10


class MetaWorldEnv(RobotEnv):
    action_dim = 4

    def __init__(self, task: str, seed: int, render: bool, image_size: tuple[int, int]):
        super().__init__(task, seed, render, image_size)
        self._env = MT50_V3[task]()
        self.max_steps = self._env.max_path_length  # 500, Meta-World's horizon
        self.fps = round(1 / self._env.dt)
        self._renderer = make_renderer(self._env.model, image_size) if render else None
        self.raw_obs: np.ndarray | None = None  # float64 observation, as the experts expect it

    def _reset_sim(self, seed: int) -> None:
        self._env.set_task(self._task_for_seed(seed))
        self.raw_obs, _ = self._env.reset()

    def _task_for_seed(self, seed: int) -> Task:
        env = self._env
        kwargs = dict(MT50_V3_ARGS_KWARGS[self.task]["kwargs"])
        del kwargs["task_id"]
        # Sample rand_vec as metaworld._make_tasks does (a reset with an unfrozen vector), but from
        # the env's own RNG seeded with `seed`; the reset keeps each task's own rejection rules.
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.seed(seed)
        env._set_task_called = True
        env._set_task_inner(**kwargs)
        env.reset()
        data = dict(kwargs, rand_vec=env._last_rand_vec.copy(), env_cls=type(env), partially_observable=False)
        return Task(env_name=self.task, data=pickle.dumps(data))  # MT setting: the goal is observed

    def _apply(self, action: np.ndarray) -> bool:
        self.raw_obs, _, _, _, info = self._env.step(action)
        return bool(info["success"])

    def _observe(self) -> dict[str, np.ndarray]:
        obs = {STATE: self.raw_obs.astype(np.float32)}
        if self._renderer is not None:
            self._renderer.update_scene(self._env.data, camera=CAMERA)
            obs[IMAGE] = np.ascontiguousarray(self._renderer.render()[::-1, ::-1])
        return obs

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        self._env.close()


def make_env(task: str, seed: int, *, render: bool, image_size: tuple[int, int]) -> MetaWorldEnv:
    return MetaWorldEnv(task, seed, render, image_size)


def feature_names(task: str) -> dict[str, list[str]]:
    """Per-element names of the features, as Meta-World lays out its observation: the hand's
    position, the gripper's opening, two objects' position and quaternion (zeros where a task has
    fewer; Meta-World's envs differ in quaternion order, hence q0..q3), the same 18 of the previous
    frame, the goal; the action is the hand's move and the gripper's effort. The same for every task."""
    current = ["hand_x", "hand_y", "hand_z", "gripper_opening"] + [
        f"obj{i}_{axis}" for i in (1, 2) for axis in ("x", "y", "z", "q0", "q1", "q2", "q3")
    ]
    return {
        STATE: current + [f"prev_{name}" for name in current] + ["goal_x", "goal_y", "goal_z"],
        ACTION: ["hand_dx", "hand_dy", "hand_dz", "gripper_effort"],
    }


def scripted_episodes(
    task: str, seeds: list[int], *, render: bool, image_size: tuple[int, int]
) -> list[ExpertEpisode]:
    if not seeds:
        return []
    env = MetaWorldEnv(task, seeds[0], render, image_size)
    try:
        return [_expert_episode(env, ENV_POLICY_MAP[task](), seed) for seed in seeds]
    finally:
        env.close()


def _expert_episode(env: MetaWorldEnv, expert, seed: int) -> ExpertEpisode:
    obs = env.reset(seed)
    frames, actions, solved_at = [], [], None
    while env.steps < env.max_steps and (solved_at is None or env.steps < solved_at + SUCCESS_TAIL):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experts warn when their gain saturates the action; we clip
            action = np.clip(expert.get_action(env.raw_obs), -1.0, 1.0).astype(np.float32)
        frames.append(obs)
        actions.append(action)
        obs, success, _ = env.step(action)
        if success and solved_at is None:
            solved_at = env.steps
    return ExpertEpisode(
        frames=stack_frames(frames),
        action=np.stack(actions),
        instruction=draw_instruction("metaworld", env.task, seed),
        task=env.task,
        success=solved_at is not None,
        seed=seed,
        fps=env.fps,
    )
