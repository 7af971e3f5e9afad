"""ACT's scripted ALOHA demonstrations (Zhao et al. 2023, tonyzhaozh/act), made to work on MuJoCo 3.

Recipe: in the end-effector sim (bimanual_viperx_end_effector_*.xml) each gripper is welded to a
mocap body; a time-indexed waypoint trajectory moves the mocap bodies and the gripper fingers.
The arm joint positions it produces, with the gripper commands in place of the finger positions,
become the joint commands that `aloha.py` replays in the joint-controlled sim; the replayed episode
is the demonstration.

The MuJoCo 3 fix: MuJoCo 3.0 changed how a weld constraint is regularised. MuJoCo 2.x (ACT pins
2.3.7) approximated all six rows of a weld with the body's translational inverse inertia
(`body_invweight0[b, 0]`, a counter bug in `mj_diagApprox`); MuJoCo 3 uses the rotational one
(`body_invweight0[b, 1]`) for the three angular rows. For the ViperX gripper link that ratio is
about 400, so in MuJoCo 3 the weld's orientation part is ~400x softer and the grippers trail the
mocap orientation by up to ~30 degrees and miss the cube and the peg (1 success in 20 episodes).
Scaling the weld's angular residual by torquescale = sqrt(rot / trans inverse weight) restores the
old ratio exactly (the angular rows' effective regulariser scales with 1/torquescale^2), and the
joint trajectories then match MuJoCo 2.3.7's to ~1e-3 rad. The weld's relpose (the mocap point
0.13 m in front of the gripper link, between the fingertips) is as in ACT and left alone.
"""

from __future__ import annotations

import mujoco
import numpy as np
from gym_aloha.constants import (
    ASSETS_DIR,
    DT,
    PUPPET_GRIPPER_POSITION_CLOSE,
    START_ARM_POSE,
    normalize_puppet_gripper_position,
    unnormalize_puppet_gripper_position,
)

EPISODE_STEPS = 400  # ACT's episode_len for both tasks

# Initial mocap poses of ACT's ee_sim_env: the gripper links' poses at START_ARM_POSE.
_INIT_MOCAP_LEFT = np.array([-0.31718881, 0.5, 0.29525084, 1.0, 0.0, 0.0, 0.0])
_INIT_MOCAP_RIGHT = np.array([0.31718881, 0.49999888, 0.29525084, 1.0, 0.0, 0.0, 0.0])


def scripted_joint_commands(task: str, object_poses: np.ndarray) -> np.ndarray:
    """(EPISODE_STEPS, 14) joint commands (arm joints, normalised gripper) of the scripted expert
    for objects starting at `object_poses` (the joint sim's environment state at reset)."""
    model = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / f"bimanual_viperx_end_effector_{task}.xml"))
    _restore_weld_stiffness(model)
    data = mujoco.MjData(model)
    data.qpos[:16] = START_ARM_POSE
    data.qpos[16:] = object_poses
    data.mocap_pos[:] = _INIT_MOCAP_LEFT[:3], _INIT_MOCAP_RIGHT[:3]
    data.mocap_quat[:] = _INIT_MOCAP_LEFT[3:], _INIT_MOCAP_RIGHT[3:]
    data.ctrl[:] = np.array([1, -1, 1, -1]) * PUPPET_GRIPPER_POSITION_CLOSE
    mujoco.mj_forward(model, data)

    left, right = _WAYPOINTS[task](_INIT_MOCAP_LEFT, _INIT_MOCAP_RIGHT, object_poses)
    substeps = round(DT / model.opt.timestep)
    commands = np.empty((EPISODE_STEPS, 14))
    for t in range(EPISODE_STEPS):
        # As in ACT: the command at t is the state the EE sim reached after t steps, with each
        # finger position replaced by the gripper command that is driving it.
        commands[t] = _joint_command(data)
        for side, waypoints in enumerate((left, right)):
            pose = _interpolate(waypoints, t)
            data.mocap_pos[side] = pose[:3]
            data.mocap_quat[side] = pose[3:7] / np.linalg.norm(pose[3:7])
            finger = unnormalize_puppet_gripper_position(pose[7])
            data.ctrl[2 * side : 2 * side + 2] = finger, -finger
        mujoco.mj_step(model, data, nstep=substeps)
    return commands


def _restore_weld_stiffness(model: mujoco.MjModel) -> None:
    """Give every weld the MuJoCo 2.x rotational stiffness (see the module docstring)."""
    for i in np.flatnonzero(model.eq_type == mujoco.mjtEq.mjEQ_WELD):
        inv_weight = model.body_invweight0[model.eq_obj1id[i]] + model.body_invweight0[model.eq_obj2id[i]]
        model.eq_data[i, 10] = np.sqrt(
            inv_weight[1] / inv_weight[0]
        )  # eq_data: anchor(3) relpose(7) torquescale


def _joint_command(data: mujoco.MjData) -> np.ndarray:
    qpos, ctrl = data.qpos, data.ctrl
    grip_left, grip_right = normalize_puppet_gripper_position(ctrl[[0, 2]])
    return np.concatenate([qpos[:6], [grip_left], qpos[8:14], [grip_right]])


def _interpolate(waypoints: np.ndarray, t: int) -> np.ndarray:
    """Piecewise-linear (xyz, quat, gripper) at step t; rows of `waypoints` are (t, xyz, quat, gripper)."""
    return np.array([np.interp(t, waypoints[:, 0], waypoints[:, k]) for k in range(1, 9)])


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ]
    )


def _axis_quat(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    half = np.deg2rad(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * np.asarray(axis, dtype=float)])


def _rows(*waypoints: tuple) -> np.ndarray:
    """(t, xyz, quat, gripper) tuples -> an (N, 9) array; gripper 0 = closed, 1 = open."""
    return np.array([np.concatenate([[t], xyz, quat, [gripper]]) for t, xyz, quat, gripper in waypoints])


def _transfer_cube(
    init_left: np.ndarray, init_right: np.ndarray, objects: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # The right arm picks the cube and lifts it to the meeting point; the left arm takes it over.
    box = objects[:3]
    pick = _quat_mul(init_right[3:], _axis_quat((0, 1, 0), -60))
    meet_left = _axis_quat((1, 0, 0), 90)
    meet = np.array([0.0, 0.5, 0.25])
    level = np.array([1.0, 0.0, 0.0, 0.0])
    left = _rows(
        (0, init_left[:3], init_left[3:], 0),  # sleep
        (100, meet + [-0.1, 0, -0.02], meet_left, 1),  # approach the meeting point
        (260, meet + [0.02, 0, -0.02], meet_left, 1),  # move to it
        (310, meet + [0.02, 0, -0.02], meet_left, 0),  # close the gripper
        (360, meet + [-0.1, 0, -0.02], level, 0),  # move left
        (400, meet + [-0.1, 0, -0.02], level, 0),  # stay
    )
    right = _rows(
        (0, init_right[:3], init_right[3:], 0),  # sleep
        (90, box + [0, 0, 0.08], pick, 1),  # approach the cube
        (130, box + [0, 0, -0.015], pick, 1),  # go down
        (170, box + [0, 0, -0.015], pick, 0),  # close the gripper
        (200, meet + [0.05, 0, 0], pick, 0),  # approach the meeting point
        (220, meet, pick, 0),  # move to it
        (310, meet, pick, 1),  # open the gripper
        (360, meet + [0.1, 0, 0], pick, 1),  # move right
        (400, meet + [0.1, 0, 0], pick, 1),  # stay
    )
    return left, right


def _insertion(
    init_left: np.ndarray, init_right: np.ndarray, objects: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    # The left arm picks the socket, the right arm the peg; they meet and insert in mid-air.
    peg, socket = objects[:3], objects[7:10]
    pick_right = _quat_mul(init_right[3:], _axis_quat((0, 1, 0), -60))
    pick_left = _quat_mul(init_right[3:], _axis_quat((0, 1, 0), 60))  # ACT builds both from the right pose
    meet = np.array([0.0, 0.5, 0.15])
    lift_right = 0.00715
    left = _rows(
        (0, init_left[:3], init_left[3:], 0),  # sleep
        (120, socket + [0, 0, 0.08], pick_left, 1),  # approach the socket
        (170, socket + [0, 0, -0.03], pick_left, 1),  # go down
        (220, socket + [0, 0, -0.03], pick_left, 0),  # close the gripper
        (285, meet + [-0.1, 0, 0], pick_left, 0),  # approach the meeting point
        (340, meet + [-0.05, 0, 0], pick_left, 0),  # insertion
        (400, meet + [-0.05, 0, 0], pick_left, 0),  # stay
    )
    right = _rows(
        (0, init_right[:3], init_right[3:], 0),  # sleep
        (120, peg + [0, 0, 0.08], pick_right, 1),  # approach the peg
        (170, peg + [0, 0, -0.03], pick_right, 1),  # go down
        (220, peg + [0, 0, -0.03], pick_right, 0),  # close the gripper
        (285, meet + [0.1, 0, lift_right], pick_right, 0),  # approach the meeting point
        (340, meet + [0.05, 0, lift_right], pick_right, 0),  # insertion
        (400, meet + [0.05, 0, lift_right], pick_right, 0),  # stay
    )
    return left, right


_WAYPOINTS = {"transfer_cube": _transfer_cube, "insertion": _insertion}
