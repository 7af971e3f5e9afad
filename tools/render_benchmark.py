"""Rendering cost of the ALOHA top camera per frame, at the sizes given, on this machine.

    MUJOCO_GL=egl python tools/render_benchmark.py                 # 120x160, 240x320, 480x640
    MUJOCO_GL=egl python tools/render_benchmark.py --sizes 240x320 --steps 400

Each size steps the transfer-cube simulation from seed 0 with the scripted expert's joint commands,
once without the camera and once with it; the difference per step is the rendering cost (software
rendering without a GPU, the GPU's where EGL finds one). Prints milliseconds per frame and per
physics step.
"""

from __future__ import annotations

import argparse
import sys
import time

from cvae_bridge.envs import make_env


def seconds_per_step(commands, size: tuple[int, int] | None) -> float:
    env = make_env(
        "aloha", "transfer_cube", 0, render=size is not None, **({"image_size": size} if size else {})
    )
    try:
        env.reset()
        env.step(commands[0])  # the first render allocates the GL buffers
        start = time.perf_counter()
        for command in commands[1:]:
            env.step(command)
        return (time.perf_counter() - start) / (len(commands) - 1)
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", nargs="+", default=["120x160", "240x320", "480x640"], help="HxW sizes (default: three)"
    )
    parser.add_argument(
        "--steps", type=int, default=200, help="simulation steps per measurement (default: 200)"
    )
    args = parser.parse_args(argv)
    from cvae_bridge.envs.aloha import object_poses
    from cvae_bridge.envs.aloha_scripted import scripted_joint_commands

    commands = scripted_joint_commands("transfer_cube", object_poses("transfer_cube", 0))[: args.steps + 1]
    physics = seconds_per_step(commands, None)
    print(f"physics alone: {1000 * physics:.2f} ms per step")
    for text in args.sizes:
        height, width = (int(v) for v in text.lower().split("x"))
        total = seconds_per_step(commands, (height, width))
        print(
            f"{height}x{width}: {1000 * (total - physics):.1f} ms per frame rendered ({1000 * total:.1f} ms per step with physics)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
