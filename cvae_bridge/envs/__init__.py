"""Simulated robot benchmarks with scripted experts, behind one small interface.

Suites and tasks:
    "metaworld": the 10 Meta-World MT10 tasks and two more (metaworld 3.1.1), experts from
                 `metaworld.policies`; the task list "mt10" names the ten.
    "aloha":     ALOHA sim "transfer_cube" and "insertion" (gym-aloha 0.1.5 assets), experts
                 following ACT's recipe (scripted end-effector trajectory, replayed in joint space).

    make_env(suite, task, seed, render=False, image_size=IMAGE_SIZE)     -> RobotEnv
    scripted_episodes(suite, task, num_episodes, seed, render=False, ...) -> list[ExpertEpisode]  (episode i uses seed + i)
    list_suites(), get_suite(suite)                       -> the suites declared in suites.py
    list_tasks(suite), instructions(suite, task, split)   -> task names, instruction phrasings
    feature_names(suite, task)                            -> joint / axis names per feature (LeRobot's `names`)

Observations are dicts keyed by LeRobot feature names: "observation.state" (float32),
"observation.environment_state" (float32 object poses, ALOHA only) and, with render=True,
"observation.images.top" (uint8 (H, W, 3) at `image_size`, IMAGE_SIZE by default; ALOHA's "top" camera,
Meta-World's "corner2"). The same (suite, task, seed) always gives the same initial state, and the
same actions then give the same trajectory; a camera renders natively at its size (a policy must
see frames rendered the way it was trained, not resized ones).

This module imports no simulator: mujoco, metaworld and gym_aloha are imported by the suite
modules (`metaworld.py`, `aloha.py`) when an environment is first built. `demos.py` writes expert
demonstrations as LeRobot datasets. The package imports `data` (to write them) and the core's small
modules, never the model, training, evaluation or pipelines.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, DependencyError, InputError, UsageError
from .suites import SUITES, Suite

STATE = "observation.state"
ENV_STATE = "observation.environment_state"
IMAGE = "observation.images.top"
ACTION = "action"
IMAGE_SIZE = (240, 320)  # (H, W) by default: half of ACT's 480x640, so that episodes with images stay small


class RenderError(RuntimeError):
    """Offscreen rendering (MUJOCO_GL=egl or osmesa) is unavailable on this machine."""


@dataclass
class ExpertEpisode:
    """One recorded episode. `frames[k][t]` is the observation before `action[t]` was applied."""

    frames: dict[str, np.ndarray]  # observation key -> (T, ...) array
    action: np.ndarray  # (T, action_dim) float32, the action applied at each step
    instruction: str  # a training phrasing, drawn with the episode's seed
    task: str
    success: bool
    seed: int
    fps: int

    def __len__(self) -> int:
        return len(self.action)


class RobotEnv(abc.ABC):
    """A simulated task. `reset()` starts an episode from the state fixed by the seed; it ends
    (`done`) at the first success or after `max_steps` steps. Stepping on after a success is
    allowed up to `max_steps` (scripted demonstrations record their full trajectory)."""

    max_steps: int
    action_dim: int
    fps: int
    # The task's sub-stages in order, where the suite defines them (ALOHA's staged reward), and how
    # many of them the current episode has reached: where a failed episode stopped.
    stages: tuple[str, ...] = ()
    stages_reached: int = 0

    def __init__(self, task: str, seed: int, render: bool, image_size: tuple[int, int] = IMAGE_SIZE):
        self.task = task
        self.seed = seed
        self.render = render
        self.image_size = image_size
        self._steps: int | None = None  # None until the first reset
        self._success = False

    @property
    def steps(self) -> int:
        """Steps taken in the current episode."""
        return self._steps or 0

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start an episode; `seed` replaces the env's seed (the same seed gives the same initial state)."""
        if seed is not None:
            self.seed = _check_seed(seed)
        self._reset_sim(self.seed)
        self._steps, self._success = 0, False
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], bool, bool]:
        """Apply one action; returns (observation, success so far in this episode, done)."""
        if self._steps is None:
            raise UsageError(f"{type(self).__name__}: call reset() before step()")
        if self._steps >= self.max_steps:
            raise UsageError(
                f"{type(self).__name__}: the episode already took max_steps={self.max_steps} steps; call reset()"
            )
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.action_dim,) or not np.isfinite(action).all():
            raise InputError(
                f"{type(self).__name__} ({self.task}): expected a finite action of shape ({self.action_dim},), "
                f"got shape {action.shape}{'' if np.isfinite(action).all() else ' with NaN/inf values'}"
            )
        self._success |= self._apply(action)
        self._steps += 1
        return self._observe(), self._success, self._success or self._steps >= self.max_steps

    def close(self) -> None:  # noqa: B027 -- optional: most environments hold nothing to release
        """Release the renderer, if any."""

    @abc.abstractmethod
    def _reset_sim(self, seed: int) -> None:
        """Put the simulator in the initial state of `seed`."""

    @abc.abstractmethod
    def _apply(self, action: np.ndarray) -> bool:
        """Advance one control step with `action`; whether the task is solved now."""

    @abc.abstractmethod
    def _observe(self) -> dict[str, np.ndarray]:
        """The current observation dict."""


def list_suites() -> list[str]:
    return list(SUITES)


def get_suite(suite: str) -> Suite:
    if suite not in SUITES:
        raise ConfigError(f"unknown suite {suite!r}; expected one of {sorted(SUITES)}")
    return SUITES[suite]


def list_tasks(suite: str) -> list[str]:
    """The task names of a suite, e.g. list_tasks("metaworld")[0] == "reach-v3"."""
    return list(get_suite(suite).instructions)


def instructions(suite: str, task: str, split: str = "train") -> list[str]:
    """Instruction phrasings of a task: "train", "heldout" (evaluation only) or "all"."""
    _check_task(suite, task)
    return list(SUITES[suite].instructions[task].pick(split))


def draw_instruction(suite: str, task: str, seed: int) -> str:
    """The training phrasing that the episode with this seed gets."""
    phrasings = instructions(suite, task, "train")
    return phrasings[int(np.random.default_rng(seed).integers(len(phrasings)))]


def make_env(
    suite: str, task: str, seed: int, *, render: bool = False, image_size: Sequence[int] = IMAGE_SIZE
) -> RobotEnv:
    """Build the environment of a task, seeded; call `reset()` to start an episode. With `render`,
    observations carry the camera image at `image_size` (H, W)."""
    _check_task(suite, task)
    seed = _check_seed(seed)  # before the simulator import, so that argument errors come first
    return _backend(suite).make_env(task, seed, render=render, image_size=check_image_size(image_size))


def scripted_episodes(
    suite: str,
    task: str,
    num_episodes: int,
    seed: int,
    *,
    render: bool = False,
    image_size: Sequence[int] = IMAGE_SIZE,
) -> list[ExpertEpisode]:
    """Episodes of the task's scripted expert, episode i from seed + i, failures included
    (`ExpertEpisode.success` tells them apart)."""
    _check_task(suite, task)
    if not isinstance(num_episodes, (int, np.integer)) or isinstance(num_episodes, bool) or num_episodes < 0:
        raise ConfigError(f"num_episodes must be a non-negative int, got {num_episodes!r}")
    seeds = [_check_seed(seed) + i for i in range(num_episodes)]
    return _backend(suite).scripted_episodes(
        task, seeds, render=render, image_size=check_image_size(image_size)
    )


def feature_names(suite: str, task: str) -> dict[str, list[str]]:
    """Per-element names of a task's features (joints, axes, object poses), from the simulator's
    definition: what demonstrations write as info.json's `names`, as LeRobot's recorders do."""
    _check_task(suite, task)
    return _backend(suite).feature_names(task)


def stack_frames(frames: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A list of observation dicts -> one dict of arrays stacked over time."""
    return {key: np.stack([frame[key] for frame in frames]) for key in frames[0]}


def check_image_size(image_size: Sequence[int]) -> tuple[int, int]:
    """(H, W) as a tuple of two positive ints, or a ConfigError naming `image_size`."""
    size = tuple(image_size) if isinstance(image_size, (list, tuple)) else ()
    if len(size) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size
    ):
        raise ConfigError(f"image_size: expected [height, width], two positive ints, got {image_size!r}")
    return int(size[0]), int(size[1])


def make_renderer(model, image_size: tuple[int, int]):
    """An offscreen `mujoco.Renderer` of `image_size` (H, W) for `model`, or a RenderError saying why not."""
    import mujoco  # only the suite modules get here, with mujoco installed

    height, width = image_size
    # The offscreen framebuffer bounds the size; the assets declare 640x480, so grow it if asked for more.
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    try:
        return mujoco.Renderer(model, height, width)
    except Exception as error:  # the GL backends raise assorted types (AttributeError, FatalError, ...)
        raise RenderError(
            f"offscreen rendering failed ({type(error).__name__}: {error}); MUJOCO_GL must be 'egl' (libEGL) or "
            f"'osmesa' (libOSMesa) and be set before mujoco is first imported"
        ) from error


def _check_task(suite: str, task: str) -> str:
    tasks = list_tasks(suite)
    if task not in tasks:
        raise ConfigError(f"unknown {suite} task {task!r}; expected one of {tasks}")
    return task


def _check_seed(seed: int) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _backend(suite: str):
    """The suite's module, imported on first use so that this package needs no simulator."""
    try:
        return importlib.import_module(f"{__name__}.{get_suite(suite).module}")
    except ModuleNotFoundError as error:
        if error.name is None or error.name.startswith(__name__):
            raise
        raise DependencyError(
            f"the {suite!r} environments need the package {error.name.split('.')[0]!r}, which is not installed; "
            f"install it with: {SUITES[suite].install}"
        ) from error
