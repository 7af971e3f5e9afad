"""Simulated benchmarks: task lists, instructions, env interface, scripted experts, reproducibility.

The simulator tests skip when metaworld / mujoco / gym_aloha are not installed.
"""

import sys

import numpy as np
import pytest

from cvae_bridge.envs import (
    ENV_STATE,
    IMAGE,
    IMAGE_SIZE,
    STATE,
    ExpertEpisode,
    RenderError,
    instructions,
    list_tasks,
    make_env,
    scripted_episodes,
)
from cvae_bridge.envs.suites import SUITES
from cvae_bridge.errors import ConfigError, InputError

MT10 = [
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
]


def needs(*modules):
    for module in modules:
        pytest.importorskip(module)


def assert_same_episode(a: ExpertEpisode, b: ExpertEpisode):
    assert a.frames.keys() == b.frames.keys()
    for key in a.frames:
        np.testing.assert_array_equal(a.frames[key], b.frames[key])
    np.testing.assert_array_equal(a.action, b.action)
    assert (a.instruction, a.success, a.seed) == (b.instruction, b.success, b.seed)


def replay(suite, task, episode):
    """Step a fresh env through the episode's actions: its observations and final success."""
    env = make_env(suite, task, episode.seed)
    frames, success = [env.reset()], False
    for action in episode.action:
        obs, success, _ = env.step(action)
        frames.append(obs)
    env.close()
    return frames[:-1], success


# ---------------------------------------------------------------------------------------------
# Pure data: no simulator needed.


def test_task_lists():
    # MT10 first, in Meta-World's order, then the tasks beyond it that fine-tuning uses.
    assert list_tasks("metaworld") == [*MT10, "door-close-v3", "push-wall-v3"]
    assert list_tasks("aloha") == ["transfer_cube", "insertion"]
    with pytest.raises(ConfigError, match="unknown suite 'robosuite'"):
        list_tasks("robosuite")
    with pytest.raises(ConfigError, match="unknown suite 'robosuite'"):
        instructions("robosuite", "lift")


@pytest.mark.parametrize("suite", ["metaworld", "aloha"])
def test_instructions_split_train_and_heldout(suite):
    seen = set()
    for task in list_tasks(suite):
        train, heldout = instructions(suite, task, "train"), instructions(suite, task, "heldout")
        assert len(train) >= 3 and len(heldout) == 2 and len(train) + len(heldout) >= 5
        assert not set(train) & set(heldout)
        assert instructions(suite, task, "all") == train + heldout
        assert all(isinstance(text, str) and text.strip() == text and text for text in train + heldout)
        assert not seen & set(train + heldout), f"{task}: a phrasing is shared with another task"
        seen |= set(train + heldout)
    with pytest.raises(ConfigError, match="unknown phrasing set 'test'"):
        instructions(suite, list_tasks(suite)[0], "test")


def test_unknown_task_and_bad_arguments():
    with pytest.raises(ConfigError, match="unknown metaworld task 'reach-v2'"):
        make_env("metaworld", "reach-v2", 0)
    with pytest.raises(ConfigError, match="seed must be a non-negative int"):
        make_env("aloha", "insertion", -1)
    with pytest.raises(ConfigError, match="num_episodes must be a non-negative int"):
        scripted_episodes("aloha", "insertion", 2.5, 0)


def test_missing_simulator_names_the_pip_command(monkeypatch):
    # Pretend gym_aloha is not installed and the aloha module was never imported.
    for name in [name for name in sys.modules if name.startswith("gym_aloha")] + ["gym_aloha"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "cvae_bridge.envs.aloha", raising=False)
    with pytest.raises(ImportError, match=r"package '(gym_aloha|mujoco)'.*pip install gym-aloha"):
        make_env("aloha", "transfer_cube", 0)


# ---------------------------------------------------------------------------------------------
# Meta-World


def test_mt10_task_names_match_metaworld():
    needs("metaworld")
    from metaworld.env_dict import MT10_V3

    assert list(MT10_V3) == list(SUITES["metaworld"].aliases["mt10"])


def test_metaworld_interface():
    needs("metaworld")
    env = make_env("metaworld", "reach-v3", seed=0)
    assert (env.action_dim, env.max_steps, env.fps) == (4, 500, 80)
    obs = env.reset()
    assert set(obs) == {STATE} and obs[STATE].shape == (39,) and obs[STATE].dtype == np.float32
    # The goal (last 3 entries) depends on the seed, and the same seed gives the same start.
    assert not np.allclose(env.reset(seed=1)[STATE][-3:], obs[STATE][-3:])
    np.testing.assert_array_equal(env.reset(seed=0)[STATE], obs[STATE])
    with pytest.raises(InputError, match=r"shape \(4,\)"):
        env.step(np.zeros(14))
    done = False
    for _ in range(env.max_steps):
        obs, success, done = env.step(np.zeros(4))
    assert done and not success and env.steps == 500
    with pytest.raises(RuntimeError, match="max_steps=500"):
        env.step(np.zeros(4))
    env.close()


def test_metaworld_scripted_episode_succeeds_and_is_reproducible():
    needs("metaworld")
    [episode] = scripted_episodes("metaworld", "pick-place-v3", 1, seed=7)
    assert episode.success and episode.task == "pick-place-v3" and episode.seed == 7 and episode.fps == 80
    assert episode.instruction in instructions("metaworld", "pick-place-v3", "train")
    steps = len(episode)
    assert 20 < steps < 500  # stops shortly after the first success, not at the horizon
    assert episode.frames[STATE].shape == (steps, 39) and episode.frames[STATE].dtype == np.float32
    assert episode.action.shape == (steps, 4) and episode.action.dtype == np.float32
    assert np.abs(episode.action).max() <= 1.0
    assert_same_episode(episode, scripted_episodes("metaworld", "pick-place-v3", 1, seed=7)[0])
    # The env alone, seeded the same and fed the recorded actions, reproduces the trajectory.
    frames, success = replay("metaworld", "pick-place-v3", episode)
    np.testing.assert_array_equal(np.stack([f[STATE] for f in frames]), episode.frames[STATE])
    assert success
    # Another seed moves the puck and the goal.
    [other] = scripted_episodes("metaworld", "pick-place-v3", 1, seed=8)
    assert not np.allclose(other.frames[STATE][0], episode.frames[STATE][0])


# ---------------------------------------------------------------------------------------------
# ALOHA


def test_aloha_interface():
    needs("mujoco", "gym_aloha")
    from gym_aloha.constants import START_ARM_POSE
    from gym_aloha.utils import sample_insertion_pose

    env = make_env("aloha", "insertion", seed=3)
    assert (env.action_dim, env.max_steps, env.fps) == (14, 400, 50)
    obs = env.reset()
    assert set(obs) == {STATE, ENV_STATE}
    assert obs[STATE].shape == (14,) and obs[STATE].dtype == np.float32
    np.testing.assert_allclose(obs[STATE][:6], START_ARM_POSE[:6], atol=1e-6)
    # Peg and socket poses: those gym-aloha samples for the same seed.
    np.testing.assert_allclose(obs[ENV_STATE], np.concatenate(sample_insertion_pose(3)), atol=1e-6)
    obs, success, done = env.step(obs[STATE])  # hold the start pose
    assert not success and not done and env.reward() == 0
    with pytest.raises(InputError, match="NaN"):
        env.step(np.full(14, np.nan))
    env.close()


def test_aloha_transfer_cube_scripted_episode_succeeds():
    needs("mujoco", "gym_aloha")
    [episode] = scripted_episodes("aloha", "transfer_cube", 1, seed=0)
    assert episode.success and episode.fps == 50 and len(episode) == 400
    assert episode.frames[STATE].shape == (400, 14) and episode.frames[ENV_STATE].shape == (400, 7)
    assert episode.action.shape == (400, 14) and episode.action.dtype == np.float32
    assert episode.instruction in instructions("aloha", "transfer_cube", "train")
    cube = episode.frames[ENV_STATE]
    assert cube[-1, 2] > cube[0, 2] + 0.1  # the cube ends up lifted, held by the left arm
    # Replaying the recorded actions in a fresh env reproduces the episode exactly.
    frames, success = replay("aloha", "transfer_cube", episode)
    np.testing.assert_array_equal(np.stack([f[STATE] for f in frames]), episode.frames[STATE])
    assert success


def test_aloha_sub_stages_follow_the_staged_reward():
    """stages_reached: how far gym-aloha's reward (1 touched .. 4 transferred) got in the episode."""
    needs("mujoco", "gym_aloha")
    [episode] = scripted_episodes("aloha", "transfer_cube", 1, seed=0)
    env = make_env("aloha", "transfer_cube", seed=0)
    env.reset()
    reached = []
    for action in episode.action:
        env.step(action)
        reached.append(env.stages_reached)
    assert env.stages == ("touched", "lifted", "transfer attempted", "transferred")
    assert reached == sorted(reached) and reached[0] == 0 and reached[-1] == 4 and {1, 2} <= set(reached)
    env.reset()
    assert env.stages_reached == 0
    env.close()


def test_aloha_insertion_scripted_episode_succeeds():
    needs("mujoco", "gym_aloha")
    [episode] = scripted_episodes("aloha", "insertion", 1, seed=1)
    assert episode.success and episode.frames[ENV_STATE].shape == (400, 14)
    assert_same_episode(episode, scripted_episodes("aloha", "insertion", 1, seed=1)[0])


def test_weld_fix_makes_the_gripper_follow_the_mocap_orientation():
    # MuJoCo 3's default weld (torquescale 1) lets the gripper trail a pitched mocap target.
    needs("mujoco", "gym_aloha")
    import mujoco
    from gym_aloha.constants import ASSETS_DIR, START_ARM_POSE

    from cvae_bridge.envs.aloha_scripted import _restore_weld_stiffness

    def orientation_error_deg(fixed: bool) -> float:
        model = mujoco.MjModel.from_xml_path(
            str(ASSETS_DIR / "bimanual_viperx_end_effector_transfer_cube.xml")
        )
        if fixed:
            _restore_weld_stiffness(model)
        data = mujoco.MjData(model)
        data.qpos[:16] = START_ARM_POSE
        data.mocap_pos[1] = [0.1, 0.5, 0.1]
        data.mocap_quat[1] = [np.cos(np.pi / 6), 0, -np.sin(np.pi / 6), 0]  # pitched 60 degrees down
        mujoco.mj_step(model, data, nstep=600)
        target = np.empty(4)
        mujoco.mju_mulQuat(target, data.mocap_quat[1], model.eq_data[1, 6:10])  # mocap pose * weld relpose
        gripper = data.body("vx300s_right/gripper_link").xquat
        return float(np.degrees(2 * np.arccos(min(1.0, abs(gripper @ target)))))

    assert orientation_error_deg(fixed=False) > 10
    assert orientation_error_deg(fixed=True) < 1


# ---------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize("suite,task", [("aloha", "transfer_cube"), ("metaworld", "reach-v3")])
def test_rendered_observation(suite, task):
    needs("mujoco", "gym_aloha" if suite == "aloha" else "metaworld")
    try:
        env = make_env(suite, task, seed=0, render=True)
    except RenderError as error:
        pytest.skip(str(error))
    image = env.reset()[IMAGE]
    assert image.shape == (*IMAGE_SIZE, 3) and image.dtype == np.uint8
    assert image.std() > 10  # a scene, not a blank frame
    obs, _, _ = env.step(np.zeros(env.action_dim))
    assert obs[IMAGE].shape == image.shape
    env.close()
