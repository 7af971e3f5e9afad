"""Success rate and run time of the scripted experts, per task, then the mean over tasks.

    python tools/scripted_success.py --suite aloha --episodes 50
    python tools/scripted_success.py --suite metaworld --tasks reach-v3 push-v3 --episodes 10 --seed 100

Episode i of a task uses seed --seed + i (as `cvae_bridge.envs.scripted_episodes` does).
"""

from __future__ import annotations

import argparse
import sys
import time

from cvae_bridge.envs import list_tasks, scripted_episodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", required=True, choices=["metaworld", "aloha"])
    parser.add_argument("--tasks", nargs="+", help="task names (default: all tasks of the suite)")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per task (default: 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    tasks = args.tasks or list_tasks(args.suite)
    unknown = sorted(set(tasks) - set(list_tasks(args.suite)))
    if unknown:
        parser.error(f"unknown {args.suite} task(s) {unknown}; expected some of {list_tasks(args.suite)}")

    # wall time, and this process's CPU time (the fairer figure on a machine shared with other jobs)
    print(
        f"{'task':<26} {'success':>9} {'rate':>7} {'time':>8} {'s/episode':>10} {'cpu s/episode':>14} {'steps/episode':>14}"
    )
    rates = []
    for task in tasks:
        start, start_cpu = time.perf_counter(), time.process_time()
        episodes = scripted_episodes(args.suite, task, args.episodes, args.seed)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        successes = sum(episode.success for episode in episodes)
        rates.append(successes / len(episodes))
        steps = sum(len(episode) for episode in episodes) / len(episodes)
        print(
            f"{task:<26} {successes:>4}/{len(episodes):<4} {100 * rates[-1]:>6.1f}% {elapsed:>7.1f}s "
            f"{elapsed / len(episodes):>10.3f} {cpu / len(episodes):>14.3f} {steps:>14.1f}",
            flush=True,
        )
    print(f"{'mean over ' + str(len(tasks)) + ' task(s)':<26} {'':>9} {100 * sum(rates) / len(rates):>6.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
