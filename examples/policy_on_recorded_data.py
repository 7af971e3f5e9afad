"""Train an ACT-style policy on episodes you recorded, and check it against them.

    python examples/policy_on_recorded_data.py --data data/my_so101_recording
    python examples/policy_on_recorded_data.py --data someone/so101_pick_place   # a repo id under HF_LEROBOT_HOME
    python examples/policy_on_recorded_data.py --data data/my_aloha_hdf5 --hdf5  # ACT's episode_<i>.hdf5 files

The data: a LeRobot dataset (`lerobot-record` writes one) with `observation.state` and `action`,
or a folder of ACT HDF5 files. The policy is configs/act_aloha_state.yaml's, on the joints alone
(recorded data has no object poses: `model.conditions.env_state=null`); its sizes come from the
dataset's own description, so a 6-joint arm needs no size settings. After training, the policy
runs on the recorded observations (`replay_episodes`) and the L1 error to the recorded actions is
printed; `ActionChunkPolicy.select_action` is what a control loop calls, one observation at a time.
For a camera, start from configs/act_aloha.yaml instead (an ImageNet-pretrained backbone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cvae_bridge import ActionChunkPolicy, load_run_config
from cvae_bridge.evaluation.replay import ReplayConfig, replay_episodes
from cvae_bridge.training import train

CONFIG = Path(__file__).parents[1] / "configs" / "act_aloha_state.yaml"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", required=True, help="a LeRobot dataset folder or repo id, or an ACT HDF5 folder"
    )
    parser.add_argument("--hdf5", action="store_true", help="the data are ACT HDF5 files")
    parser.add_argument("--steps", type=int, default=20000, help="optimiser steps")
    parser.add_argument("--chunk-size", type=int, default=100, help="k: actions per predicted chunk")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="runs/example_policy", help="the run folder")
    args = parser.parse_args(argv)

    k = args.chunk_size
    overrides = [
        f"data.path={args.data}",
        f"data.type={'act_hdf5' if args.hdf5 else 'lerobot'}",
        "model.conditions.env_state=null",
        f"data.chunk_size={k}",
        f"model.targets.action.encoder.chunk_size={k}",
        f"model.targets.action.decoder.chunk_size={k}",
        f"train.steps={args.steps}",
        f"train.batch_size={args.batch_size}",
        f"train.output_dir={args.out}",
    ]
    result = train(load_run_config(CONFIG, overrides))

    report = replay_episodes(
        ReplayConfig(model=str(result.model_dir), data=args.data, temporal_ensemble=0.01, progress_bar=False)
    )
    print(
        f"policy in {result.model_dir}; L1 to the recorded actions {report['l1']:.4f} over {report['frames']} frames"
    )

    # In a control loop: one observation at a time, as the robot gives it (LeRobot's keys).
    policy = ActionChunkPolicy.from_pretrained(result.model_dir, temporal_ensemble=0.01)
    policy.reset()
    print("the policy's structure of inputs:", sorted(policy.observation_keys))
    return report


if __name__ == "__main__":
    main()
