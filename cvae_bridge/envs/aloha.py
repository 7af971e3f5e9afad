"""ALOHA sim transfer-cube and insertion behind the RobotEnv interface, with ACT's scripted experts.

The joint-controlled sim is gym-aloha 0.1.5's (its MJCF assets, actions, object sampling and
contact rewards), driven with mujoco directly rather than through dm_control: the same physics,
fewer layers, and no per-step rendering of three cameras. Success is the task's max reward (4):
transfer-cube, the cube held by the left gripper off the table; insertion, the peg touching the pin
inside the socket.

Observation: "observation.state" = qpos (14: per arm 6 joints + the normalised gripper opening,
0 closed .. 1 open), "observation.environment_state" = object poses (xyz + quat; cube (7) or peg
and socket (14)). Action: 6 joint targets + normalised gripper per arm (14). 50 steps per second,
400 steps per episode (ACT's length). Seed s gives the object poses gym-aloha's `reset(seed=s)` gives.
"""

from __future__ import annotations

import os
import sys

if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco is imported

import mujoco
import numpy as np
from gym_aloha.constants import (
    ACTIONS,
    ASSETS_DIR,
    DT,
    JOINTS,
    START_ARM_POSE,
    normalize_puppet_gripper_position,
    unnormalize_puppet_gripper_position,
)
from gym_aloha.utils import sample_box_pose, sample_insertion_pose

from . import (
    ACTION,
    ENV_STATE,
    IMAGE,
    STATE,
    ExpertEpisode,
    RobotEnv,
    draw_instruction,
    make_renderer,
    stack_frames,
)
from .aloha_scripted import EPISODE_STEPS, scripted_joint_commands

MAX_REWARD = 4
_LEFT_FINGER = "vx300s_left/10_left_gripper_finger"
_RIGHT_FINGER = "vx300s_right/10_right_gripper_finger"
_SOCKET = ("socket-1", "socket-2", "socket-3", "socket-4")


def object_poses(task: str, seed: int) -> np.ndarray:
    """Initial object poses (xyz + quat per object) for a seed, sampled as gym-aloha samples them."""
    if task == "transfer_cube":
        return sample_box_pose(seed)
    return np.concatenate(sample_insertion_pose(seed))


def _transfer_cube_reward(touching) -> int:
    # gym-aloha's TransferCubeTask.get_reward
    right, left, table = (
        touching("red_box", _RIGHT_FINGER),
        touching("red_box", _LEFT_FINGER),
        touching("red_box", "table"),
    )
    if left:
        return 4 if not table else 3  # transferred / attempted transfer
    if right:
        return 2 if not table else 1  # lifted / touched
    return 0


def _insertion_reward(touching) -> int:
    # gym-aloha's InsertionTask.get_reward
    if touching("red_peg", "pin"):
        return 4  # inserted
    on_table = touching("red_peg", "table") or any(touching(s, "table") for s in _SOCKET)
    if any(touching("red_peg", s) for s in _SOCKET) and not on_table:
        return 3  # peg and socket touching in the air
    if touching("red_peg", _RIGHT_FINGER) and any(touching(s, _LEFT_FINGER) for s in _SOCKET):
        return 2 if not on_table else 1  # both grasped and lifted / both touched
    return 0


_REWARDS = {"transfer_cube": _transfer_cube_reward, "insertion": _insertion_reward}
# What reward 1 .. 4 means (gym-aloha's comments): the sub-stages a rollout reports.
STAGES = {
    "transfer_cube": ("touched", "lifted", "transfer attempted", "transferred"),
    "insertion": ("both touched", "both grasped", "peg meets socket", "inserted"),
}


class AlohaEnv(RobotEnv):
    action_dim = 14
    max_steps = EPISODE_STEPS
    fps = round(1 / DT)

    def __init__(self, task: str, seed: int, render: bool, image_size: tuple[int, int]):
        super().__init__(task, seed, render, image_size)
        self.stages = STAGES[task]
        self._model = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / f"bimanual_viperx_{task}.xml"))
        self._data = mujoco.MjData(self._model)
        self._substeps = round(DT / self._model.opt.timestep)  # 10 physics steps of 2 ms per control step
        self._geom_names = [self._model.geom(i).name for i in range(self._model.ngeom)]
        self._renderer = make_renderer(self._model, image_size) if render else None

    def _reset_sim(self, seed: int) -> None:
        model, data = self._model, self._data
        mujoco.mj_resetData(model, data)
        data.qpos[:16] = START_ARM_POSE
        data.ctrl[:] = START_ARM_POSE
        data.qpos[16:] = object_poses(self.task, seed)
        mujoco.mj_forward(model, data)
        self.stages_reached = 0

    def _apply(self, action: np.ndarray) -> bool:
        grip_left, grip_right = unnormalize_puppet_gripper_position(action[[6, 13]])
        self._data.ctrl[:] = np.concatenate(
            [action[:6], [grip_left, -grip_left], action[7:13], [grip_right, -grip_right]]
        )
        mujoco.mj_step(self._model, self._data, nstep=self._substeps)
        reward = self.reward()
        self.stages_reached = max(self.stages_reached, reward)
        return reward == MAX_REWARD

    def reward(self) -> int:
        """gym-aloha's staged contact reward of the current state (0 .. 4)."""
        names = self._geom_names
        contact = self._data.contact
        pairs = {frozenset((names[a], names[b])) for a, b in zip(contact.geom1, contact.geom2)}
        return _REWARDS[self.task](lambda a, b: frozenset((a, b)) in pairs)

    def _observe(self) -> dict[str, np.ndarray]:
        qpos = self._data.qpos
        grip_left, grip_right = normalize_puppet_gripper_position(qpos[[6, 14]])
        obs = {
            STATE: np.concatenate([qpos[:6], [grip_left], qpos[8:14], [grip_right]]).astype(np.float32),
            ENV_STATE: qpos[16:].astype(np.float32),
        }
        if self._renderer is not None:
            self._renderer.update_scene(self._data, camera="top")
            obs[IMAGE] = self._renderer.render()
        return obs

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def make_env(task: str, seed: int, *, render: bool, image_size: tuple[int, int]) -> AlohaEnv:
    return AlohaEnv(task, seed, render, image_size)


def feature_names(task: str) -> dict[str, list[str]]:
    """Per-element names of the features: gym-aloha's joint and action names, and the pose of each
    object's free joint in the task's MJCF (position, then MuJoCo's w-first quaternion)."""
    model = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / f"bimanual_viperx_{task}.xml"))
    objects = [
        model.joint(i).name.removesuffix("_joint")
        for i in range(model.njnt)
        if model.jnt_type[i] == mujoco.mjtJoint.mjJNT_FREE
    ]
    pose = ("x", "y", "z", "qw", "qx", "qy", "qz")
    return {
        STATE: list(JOINTS),
        ENV_STATE: [f"{name}_{axis}" for name in objects for axis in pose],
        ACTION: list(ACTIONS),
    }


def scripted_episodes(
    task: str, seeds: list[int], *, render: bool, image_size: tuple[int, int]
) -> list[ExpertEpisode]:
    """ACT's recipe: scripted end-effector trajectory -> joint commands -> replayed here; the replay is kept."""
    env = AlohaEnv(task, 0, render, image_size)
    episodes = []
    try:
        for seed in seeds:
            # float32 first, so that the recorded actions are exactly the ones applied
            commands = scripted_joint_commands(task, object_poses(task, seed)).astype(np.float32)
            obs, frames, success = env.reset(seed), [], False
            for command in commands:
                frames.append(obs)
                obs, success, _ = env.step(command)
            episodes.append(
                ExpertEpisode(
                    frames=stack_frames(frames),
                    action=commands,
                    instruction=draw_instruction("aloha", task, seed),
                    task=task,
                    success=success,
                    seed=seed,
                    fps=env.fps,
                )
            )
    finally:
        env.close()
    return episodes
