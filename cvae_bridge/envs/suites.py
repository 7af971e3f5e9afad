"""The simulator suites, each declared once: its tasks and their instruction phrasings, the module
that drives it, what installs it, and its robot type. Nothing here imports a simulator.

To add a suite: declare it in SUITES and write its module (`make_env`, `scripted_episodes`,
`feature_names`) in this package; the commands, the task lists and the demonstrations' metadata read it from here.
"""

from __future__ import annotations

from typing import NamedTuple

from ..utils.phrasings import Phrasings


class Suite(NamedTuple):
    name: str
    module: str  # the cvae_bridge.envs module that drives the simulator, imported on first use
    install: str  # the command that installs the simulator
    robot_type: str  # LeRobot's info.json `robot_type` of its demonstrations
    # Task-list names that stand for several tasks ("mt10"); "all" always stands for every task.
    aliases: dict[str, tuple[str, ...]]
    # task -> its instruction phrasings (the held-out ones are for evaluation only).
    instructions: dict[str, Phrasings]


def _phrasings(pairs: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> dict[str, Phrasings]:
    return {task: Phrasings(*pair) for task, pair in pairs.items()}


# The Meta-World MT10 benchmark's tasks; the suite declares more (fine-tuning targets outside MT10).
MT10 = (
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
)

METAWORLD = Suite(
    name="metaworld",
    module="metaworld",
    install="pip install metaworld==3.1.1",
    robot_type="sawyer",
    aliases={"mt10": MT10},
    instructions=_phrasings(
        {
            "reach-v3": (
                (
                    "reach to the goal position",
                    "move the gripper to the target location",
                    "reach the target point with the gripper",
                    "move the end effector to the goal",
                ),
                (
                    "bring the robot hand to the marked goal",
                    "extend the arm until the gripper is at the target",
                ),
            ),
            "push-v3": (
                (
                    "push the puck to the goal",
                    "slide the puck to the target location",
                    "push the red puck to the goal position",
                    "move the puck to the target by pushing it",
                ),
                (
                    "shove the puck over to the goal spot",
                    "nudge the puck along the table until it reaches the target",
                ),
            ),
            "pick-place-v3": (
                (
                    "pick up the puck and place it at the goal",
                    "grasp the puck and put it on the target",
                    "pick the puck up and move it to the goal position",
                    "lift the puck and place it at the target location",
                ),
                ("take the puck and set it down at the goal", "grab the puck and carry it to the target"),
            ),
            "door-open-v3": (
                (
                    "open the door",
                    "pull the door open",
                    "swing the door open by its handle",
                    "open the door on its hinge",
                ),
                ("grab the door handle and open the door", "swing the door outward until it is open"),
            ),
            "drawer-open-v3": (
                (
                    "open the drawer",
                    "pull the drawer open",
                    "pull the drawer out by its handle",
                    "slide the drawer open",
                ),
                ("grab the drawer handle and pull it out", "draw the drawer out towards the robot"),
            ),
            "drawer-close-v3": (
                (
                    "close the drawer",
                    "push the drawer closed",
                    "slide the drawer shut",
                    "push the drawer back in",
                ),
                ("shut the open drawer", "press on the drawer until it is closed"),
            ),
            "button-press-topdown-v3": (
                (
                    "press the button from the top",
                    "push the button down",
                    "press down on the button",
                    "push the button from above",
                ),
                ("hit the button with a downward press", "lower the gripper onto the button and press it"),
            ),
            "peg-insert-side-v3": (
                (
                    "insert the peg into the hole from the side",
                    "pick up the peg and insert it sideways into the hole",
                    "put the peg into the side hole",
                    "grasp the peg and push it into the hole",
                ),
                (
                    "slide the peg into the opening on the box",
                    "fit the peg into the hole in the side of the block",
                ),
            ),
            "window-open-v3": (
                (
                    "open the window",
                    "slide the window open",
                    "push the window sideways to open it",
                    "slide the window to the open position",
                ),
                ("move the window pane so that the window is open", "slide the sliding window open"),
            ),
            "window-close-v3": (
                (
                    "close the window",
                    "slide the window shut",
                    "push the window sideways to close it",
                    "slide the window to the closed position",
                ),
                ("move the window pane so that the window is closed", "slide the sliding window closed"),
            ),
            # Outside MT10: targets for fine-tuning an MT10 policy (README, "Fine-tune on your data").
            "door-close-v3": (
                (
                    "close the door",
                    "push the door shut",
                    "swing the door closed",
                    "shut the door on its hinge",
                ),
                ("push on the door until it is closed", "move the open door back into its frame"),
            ),
            "push-wall-v3": (
                (
                    "push the puck around the wall to the goal",
                    "slide the puck past the wall to the target",
                    "push the puck to the goal behind the wall",
                    "move the puck around the obstacle to the target by pushing it",
                ),
                (
                    "get the puck past the barrier and onto the goal",
                    "nudge the puck around the wall until it reaches the target",
                ),
            ),
        }
    ),
)

ALOHA = Suite(
    name="aloha",
    module="aloha",
    install="pip install gym-aloha==0.1.5 mujoco==3.3.0",
    robot_type="aloha",
    aliases={},
    instructions=_phrasings(
        {
            "transfer_cube": (
                (
                    "transfer the cube to the other arm",
                    "pick up the red cube with the right arm and hand it to the left arm",
                    "hand the cube over from the right gripper to the left gripper",
                    "pass the red cube from one arm to the other",
                ),
                (
                    "lift the cube and give it to the left arm",
                    "grasp the block with one arm and transfer it to the other",
                ),
            ),
            "insertion": (
                (
                    "insert the peg into the socket",
                    "pick up the peg and the socket and insert the peg",
                    "grab the red peg and the blue socket and put the peg inside",
                    "lift both parts and insert the peg into the socket in mid-air",
                ),
                ("put the peg into the socket", "bring the peg and the socket together and slide the peg in"),
            ),
        }
    ),
)

SUITES: dict[str, Suite] = {suite.name: suite for suite in (METAWORLD, ALOHA)}
