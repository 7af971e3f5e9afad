"""Simulation benchmarks A1 / A2 end to end: scripted demonstrations, training, rollout evaluation.

    python tools/sim_benchmark.py metaworld_mt10          # A1: MT10, one language-conditioned policy
    python tools/sim_benchmark.py aloha_transfer_cube     # A2: state-based ALOHA, CPU-sized
    python tools/sim_benchmark.py aloha_insertion
    python tools/sim_benchmark.py aloha_transfer_cube_pixels   # A2p: the top camera and the joints only
    python tools/sim_benchmark.py aloha_insertion_pixels
    python tools/sim_benchmark.py aloha_transfer_cube --demos 3 --steps 300 --eval-episodes 3 --root /tmp/sanity

Each benchmark writes its dataset and its run where its config says, below ROOT (data/<name>, demos
from seed 0, with the camera rendered for the pixel benchmarks, kept if it exists so that a second
call only trains and evaluates; runs/<name>, an
existing run is resumed), then evaluates the policy from seed 100000 on, disjoint from
the demos: with temporal ensembling off (rollout/) and on (rollout_te/, m = 0.01), and for MT10 on
held-out phrasings too (rollout_heldout/). Each folder holds success.json and success.md (and GIFs in
videos/ with --videos N); the script prints the success rates side by side. Run it with
OMP_NUM_THREADS=1 on a shared CPU; an interrupted run resumes when the command is run again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import NamedTuple

from cvae_bridge.config import load_run_config
from cvae_bridge.envs.demos import DEMOS_FILE, DemosConfig, format_demos_report, generate_demos
from cvae_bridge.evaluation.rollout import RolloutConfig, evaluate_policy
from cvae_bridge.training import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class Benchmark(NamedTuple):
    config: str
    suite: str
    tasks: str
    query_period: int | None = None  # with ensembling off; None: the chunk size
    heldout: bool = False  # evaluate held-out phrasings too
    image_size: tuple[int, int] | None = None  # the demonstrations' camera; None: no camera


BENCHMARKS = {
    "metaworld_mt10": Benchmark("metaworld_mt10.yaml", "metaworld", "mt10", query_period=5, heldout=True),
    "aloha_transfer_cube": Benchmark("aloha_transfer_cube_state.yaml", "aloha", "transfer_cube"),
    "aloha_insertion": Benchmark("aloha_insertion_state.yaml", "aloha", "insertion"),
    "aloha_transfer_cube_pixels": Benchmark(
        "aloha_transfer_cube_pixels.yaml", "aloha", "transfer_cube", image_size=(240, 320)
    ),
    "aloha_insertion_pixels": Benchmark(
        "aloha_insertion_pixels.yaml", "aloha", "insertion", image_size=(240, 320)
    ),
}
ENSEMBLE = 0.01  # ACT's m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--root", default=".", help="folder holding data/ and runs/ (default: the current folder)"
    )
    parser.add_argument("--tasks", nargs="+", help="a subset of the tasks (default: all of the benchmark)")
    parser.add_argument("--demos", type=int, default=50, help="demonstrations per task (default: 50)")
    parser.add_argument("--steps", type=int, help="training steps (default: the config's)")
    parser.add_argument(
        "--eval-episodes", type=int, default=50, help="evaluation episodes per task (default: 50)"
    )
    parser.add_argument(
        "--videos",
        type=int,
        default=0,
        help="GIFs of the first N episodes per task and evaluation (default: 0; "
        "without a GPU, rendering takes 0.1-0.25 s per frame)",
    )
    args = parser.parse_args(argv)
    config_name, suite, tasks, query_period, heldout, image_size = BENCHMARKS[args.benchmark]
    tasks = args.tasks or tasks
    root = Path(args.root)
    config = load_run_config(CONFIGS / config_name)
    data, run = root / config.data.path, root / config.train.output_dir

    if (data / DEMOS_FILE).is_file():
        print(f"using the demonstrations in {data}")
    else:
        config = DemosConfig(suite, str(data), [tasks] if isinstance(tasks, str) else tasks, args.demos)
        config.image_size = list(image_size) if image_size else None
        print(format_demos_report(generate_demos(config)))

    overrides = [f"data.path={data}", f"train.output_dir={run}"] + (
        [f"train.steps={args.steps}"] if args.steps else []
    )
    start = time.perf_counter()
    result = train(load_run_config(CONFIGS / config_name, overrides), resume=True)
    if result.status == "interrupted":
        print(f"training stopped at step {result.step}; run the same command again to resume it")
        return 128 + result.stop_signal
    print(
        f"trained to step {result.step} in {time.perf_counter() - start:.0f} s; model in {result.model_dir}"
    )
    waits = [
        row["data_wait"]
        for row in map(json.loads, (run / "log.jsonl").read_text().splitlines())
        if "data_wait" in row
    ]
    if waits:
        print(
            f"waiting for data: median {100 * statistics.median(waits):.1f}% of the training loop's time (max {100 * max(waits):.1f}%)"
        )

    evaluations = {"rollout": {"query_period": query_period}, "rollout_te": {"temporal_ensemble": ENSEMBLE}}
    if heldout:
        evaluations["rollout_heldout"] = {"query_period": query_period, "phrasings": "heldout"}
    reports = {
        name: evaluate_policy(
            RolloutConfig(
                str(result.model_dir),
                suite,
                [tasks] if isinstance(tasks, str) else tasks,
                args.eval_episodes,
                out=str(run / name),
                video_dir=str(run / name / "videos") if args.videos else None,
                videos=args.videos,
                **options,
            )
        )
        for name, options in evaluations.items()
    }
    print(f"\n{'task':<26}" + "".join(f"{name:>17}" for name in reports))
    for task in next(iter(reports.values()))["tasks"]:
        print(
            f"{task:<26}"
            + "".join(f"{100 * r['tasks'][task]['success_rate']:>16.1f}%" for r in reports.values())
        )
    print(f"{'mean':<26}" + "".join(f"{100 * r['mean_success_rate']:>16.1f}%" for r in reports.values()))
    print(f"{'s / episode':<26}" + "".join(f"{r['s_per_episode']:>17.2f}" for r in reports.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
