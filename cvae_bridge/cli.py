"""`cvae-bridge` commands. Each is a thin shell over a plain function that tests call directly."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
    brief_repr,
    range_of,
)
from .envs.suites import SUITES
from .errors import ConfigError, CvaeBridgeError
from .version import __version__

DTYPE_HELP = (
    "the policy network's precision (default: float32); bfloat16 pays on a device with bf16 arithmetic, "
    "such as a GPU, and is emulated, slower, on a CPU without it"
)
DEVICE_HELP = "auto (the GPU where there is one; the default), cpu, cuda or cuda:N"


def _checked(annotated: Any) -> Callable[[str], int | float]:
    """An argparse `type` for a ranged number such as `PositiveInt`: the option's text parsed and
    checked against the range, so that argparse reports `argument --num: expected an integer >= 1,
    got 0` and exits with status 2."""
    kind, bounds = range_of(annotated)

    def parse(text: str) -> int | float:
        try:
            return bounds.check(kind, kind(text), "")
        except (ValueError, ConfigError):
            shown = text if text.isprintable() and len(text) <= 80 else brief_repr(text)
            raise argparse.ArgumentTypeError(f"expected {bounds.describe(kind)}, got {shown}") from None

    return parse


def _train(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from .config import load_run_config
    from .training import train

    result = train(load_run_config(args.config, args.set), resume=args.resume)
    state = PartialState()
    # Tear the process group down before exit: gloo's threads abort the process otherwise.
    state.destroy_process_group()
    if not state.is_main_process:
        return 0
    if result.status == "interrupted":
        name = signal.Signals(result.stop_signal).name
        print(
            f"interrupted by {name} at step {result.step}; checkpoint saved in {result.output_dir / 'checkpoints'}, "
            f"its model in {result.model_dir}; --resume continues the run"
        )
        return 128 + result.stop_signal  # the shell's convention for death by that signal
    print(f"model saved to {result.model_dir}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from .pipelines.text_to_image import GenerateConfig, generate_grid

    config = _command_config(GenerateConfig, args, "generate")
    path = generate_grid(config)
    rows = f"{len(config.prompts)} prompts" if config.prompts else "no prompt"
    print(f"wrote {path} ({rows} x {config.num} images)")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate

    out = args.out or Path(args.model).parent / "eval"
    metrics = evaluate(args.model, out, overrides=args.set, device=args.device, model_card=args.model_card)
    print(f"wrote {Path(out) / 'metrics.json'} and {Path(out) / 'metrics.md'}")
    for key, value in metrics.items():
        print(f"  {key}: {value}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import ExportConfig, export_onnx

    config = _command_config(ExportConfig, args, "export")
    graph = export_onnx(config)
    check = graph["check"]
    print(
        f"wrote {config.out} ({graph['kind']}, ONNX opset {graph['opset']}, batch size dynamic); ONNX Runtime "
        f"vs PyTorch on {check['batch']} random examples: max |difference| {check['max_abs_difference']:.2g}"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from .evaluation.replay import ReplayConfig, replay_episodes

    config = _command_config(ReplayConfig, args, "replay")
    report = replay_episodes(config)
    for row in report["episodes"]:
        print(f"  episode {row['episode']:>5}: L1 {row['l1']:.4f} over {row['frames']} frames")
    out = config.out or Path(config.model).parent / "replay.json"
    print(
        f"L1 {report['l1']:.4f} over {len(report['episodes'])} episodes ({report['frames']} frames); wrote {out}"
    )
    return 0


def _demos(args: argparse.Namespace) -> int:
    from .envs.demos import DemosConfig, format_demos_report, generate_demos

    config = _command_config(DemosConfig, args, "demos")
    print(format_demos_report(generate_demos(config)))
    print(f"wrote {config.out} (LeRobot v3) and {Path(config.out) / 'demos.json'}")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    from .evaluation.rollout import RolloutConfig, evaluate_policy, markdown_table

    config = _command_config(RolloutConfig, args, "rollout")
    report = evaluate_policy(config)
    out = Path(config.out or Path(config.model).parent / "rollout")
    print(markdown_table(report), end="")
    print(f"wrote {out / 'success.json'} and {out / 'success.md'}")
    if "model_card" in report:
        print(report["model_card"])
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, launch_demo

    launch_demo(_command_config(DemoConfig, args, "demo"))  # serves until Ctrl-C
    return 0


def _command_config(cls: type, args: argparse.Namespace, command: str) -> Any:
    """The command's config dataclass from its flags (those given) and `--set field=value`
    overrides, parsed and checked like a run config."""
    from .config import apply_overrides, from_dict

    fields = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return from_dict(cls, apply_overrides(given, args.set), path=command)


def _list(args: argparse.Namespace) -> int:
    from .registry import REGISTRIES

    for kind, registry in REGISTRIES.items():
        print(f"{kind}s:")
        for name in registry.names():
            cls = registry.get(name)
            print(f"  {name:<20} {cls.__module__}.{cls.__qualname__}")
    return 0


def _config(args: argparse.Namespace) -> int:
    import yaml

    from .config import explain, load_run_config, to_dict

    config = load_run_config(args.config, args.set)
    if args.explain:
        for key, value, about in explain(config):
            print(f"{key}: {value}  # {about}" if value else f"{key}:  # {about}")
        return 0
    print(yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvae-bridge", description="Multimodal conditional VAEs: train, generate, evaluate."
    )
    parser.add_argument("--version", action="version", version=f"cvae-bridge {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error instead of one line (or set CVAE_BRIDGE_DEBUG=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.steps=500 (repeatable)",
    )

    _add_train(commands, overrides)
    _add_generate(commands, overrides)
    _add_evaluate(commands, overrides)
    _add_export(commands, overrides)
    _add_replay(commands, overrides)
    _add_demos(commands, overrides)
    _add_rollout(commands, overrides)
    _add_demo(commands, overrides)
    _add_listing(commands, overrides)
    _add_config(commands, overrides)
    return parser


def _add_train(commands: Any, overrides: argparse.ArgumentParser) -> None:
    train = commands.add_parser(
        "train", parents=[overrides], help="train a model (no CONFIG: text-to-image on MNIST)"
    )
    train.add_argument("config", nargs="?", help="a run config YAML (see configs/)")
    train.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in train.output_dir"
    )
    train.set_defaults(run=_train)


def _add_generate(commands: Any, overrides: argparse.ArgumentParser) -> None:
    generate = commands.add_parser(
        "generate",
        parents=[overrides],
        help="write a grid of images generated from prompts (none for an unconditional model)",
    )
    generate.add_argument("--model", required=True, help="a model folder (save_pretrained)")
    generate.add_argument(
        "--prompt", dest="prompts", action="append", help="a text prompt (repeatable: one grid row each)"
    )
    generate.add_argument("--out", help="PNG file to write (default: grid.png)")
    generate.add_argument("--num", type=_checked(PositiveInt), help="images per prompt (>= 1; default: 8)")
    generate.add_argument(
        "--temperature",
        type=_checked(PositiveFloat),
        help="scales the prior's standard deviation (> 0; default: 1)",
    )
    generate.add_argument("--seed", type=_checked(Seed), help="the draws' seed (default: 0)")
    generate.add_argument(
        "--display-size",
        type=_checked(PositiveInt),
        help="enlarge images by a whole factor (nearest neighbour) to about this many pixels (default: 112; 1: as generated)",
    )
    generate.add_argument("--device", help=DEVICE_HELP)
    generate.set_defaults(run=_generate)


def _add_evaluate(commands: Any, overrides: argparse.ArgumentParser) -> None:
    evaluate = commands.add_parser(
        "eval", parents=[overrides], help="evaluate a model folder: metrics.json, metrics.md and pictures"
    )
    evaluate.add_argument("--model", required=True, help="a model folder written by training")
    evaluate.add_argument("--out", help="output folder (default: eval/ beside the model folder)")
    evaluate.add_argument("--device", default="auto", help=DEVICE_HELP)
    evaluate.add_argument(
        "--no-card",
        dest="model_card",
        action="store_false",
        help="leave the model folder's README.md as it is (default: the figures are added to it)",
    )
    evaluate.set_defaults(run=_eval)


def _add_export(commands: Any, overrides: argparse.ArgumentParser) -> None:
    export = commands.add_parser(
        "export",
        parents=[overrides],
        help="write the inference graph of a policy or a text-to-image model's decoder as ONNX",
    )
    export.add_argument("--model", required=True, help="a model folder written by training")
    export.add_argument("--format", choices=["onnx"], required=True, help="the graph format")
    export.add_argument("--out", required=True, help="the folder to write (replaced if it exists)")
    export.add_argument(
        "--instruction",
        dest="instructions",
        action="append",
        help="a language-conditioned policy: an instruction it will be given (repeatable; stored with the graph)",
    )
    export.set_defaults(run=_export)


def _add_replay(commands: Any, overrides: argparse.ArgumentParser) -> None:
    replay = commands.add_parser(
        "replay",
        parents=[overrides],
        help="run an action-chunk policy on recorded episodes; L1 error against the recorded actions",
    )
    replay.add_argument("--model", required=True, help="a model folder written by training")
    replay.add_argument(
        "--data",
        required=True,
        help="a dataset folder: LeRobot (meta/info.json) or ACT HDF5 (episode_<i>.hdf5)",
    )
    replay.add_argument(
        "--episodes", type=_checked(NonNegativeInt), nargs="+", help="episode indices (default: all)"
    )
    replay.add_argument(
        "--query-period",
        type=_checked(PositiveInt),
        help="re-plan every N steps (default: the chunk size, or 1 with --temporal-ensemble)",
    )
    replay.add_argument(
        "--temporal-ensemble",
        type=_checked(NonNegativeFloat),
        metavar="M",
        help="ACT's temporal ensembling with weights exp(-M * i), e.g. 0.01",
    )
    replay.add_argument("--out", help="JSON file to write (default: replay.json beside the model folder)")
    replay.add_argument("--device", help=DEVICE_HELP)
    replay.add_argument("--dtype", choices=["float32", "bfloat16"], help=DTYPE_HELP)
    replay.set_defaults(run=_replay)


def _add_demos(commands: Any, overrides: argparse.ArgumentParser) -> None:
    demos = commands.add_parser(
        "demos",
        parents=[overrides],
        help="scripted-expert demonstrations of simulated tasks as a LeRobot dataset",
    )
    demos.add_argument("--suite", required=True, choices=list(SUITES), help="the simulated benchmark")
    demos.add_argument(
        "--tasks", nargs="+", help="task names, or all / mt10 (default: every task of the suite)"
    )
    demos.add_argument("--episodes", type=_checked(PositiveInt), help="episodes per task (default: 50)")
    demos.add_argument(
        "--seed", type=_checked(Seed), help="episode i of each task runs from seed SEED + i (default: 0)"
    )
    demos.add_argument("--out", required=True, help="dataset folder to write (replaced if it exists)")
    demos.add_argument(
        "--render",
        action="store_true",
        help="also store the top camera as observation.images.top (MUJOCO_GL=egl)",
    )
    demos.add_argument(
        "--image-size",
        type=_checked(PositiveInt),
        nargs=2,
        metavar=("H", "W"),
        help="render the camera at H x W (implies --render; default 240 320, ACT's is 480 640)",
    )
    demos.add_argument(
        "--workers",
        type=_checked(PositiveInt),
        help="processes per task (default: 1; rendering takes a core each)",
    )
    demos.add_argument(
        "--keep-failures",
        action="store_true",
        help="keep the experts' failed episodes too (default: successful only)",
    )
    demos.set_defaults(run=_demos)


def _add_rollout(commands: Any, overrides: argparse.ArgumentParser) -> None:
    rollout = commands.add_parser(
        "rollout",
        parents=[overrides],
        help="run a trained policy in the simulator; success per task in success.json / success.md",
    )
    rollout.add_argument("--model", required=True, help="a model folder written by training")
    rollout.add_argument("--suite", required=True, choices=list(SUITES), help="the simulated benchmark")
    rollout.add_argument(
        "--no-card",
        dest="model_card",
        action="store_const",
        const=False,
        help="leave the model folder's README.md as it is (default: the success table is added to it)",
    )
    rollout.add_argument(
        "--tasks", nargs="+", help="task names, or all / mt10 (default: every task of the suite)"
    )
    rollout.add_argument("--episodes", type=_checked(PositiveInt), help="episodes per task (default: 50)")
    rollout.add_argument(
        "--seed",
        type=_checked(Seed),
        help="episode i runs from seed SEED + i (default: 100000, past the demos' seeds)",
    )
    rollout.add_argument(
        "--query-period",
        type=_checked(PositiveInt),
        help="re-plan every N steps (default: the chunk size, or 1 with --temporal-ensemble)",
    )
    rollout.add_argument(
        "--temporal-ensemble",
        type=_checked(NonNegativeFloat),
        metavar="M",
        help="ACT's temporal ensembling with weights exp(-M * i), e.g. 0.01",
    )
    rollout.add_argument(
        "--phrasings",
        choices=["train", "heldout"],
        help="instruction phrasings for a language-conditioned policy",
    )
    rollout.add_argument(
        "--video-dir",
        help="save videos of the first --videos episodes of each task here, captioned with the step, task and outcome",
    )
    rollout.add_argument(
        "--videos",
        type=_checked(NonNegativeInt),
        help="episodes per task saved as videos with --video-dir (default: 2)",
    )
    rollout.add_argument(
        "--video-format",
        choices=["mp4", "gif"],
        help="mp4 (H.264, every frame; the default) or gif (about 20 frames a second)",
    )
    rollout.add_argument(
        "--batch-size",
        type=_checked(PositiveInt),
        help="episodes run side by side, one policy call per step (default: 10)",
    )
    rollout.add_argument("--out", help="output folder (default: rollout/ beside the model folder)")
    rollout.add_argument("--device", help=DEVICE_HELP)
    rollout.add_argument("--dtype", choices=["float32", "bfloat16"], help=DTYPE_HELP)
    rollout.set_defaults(run=_rollout)


def _add_demo(commands: Any, overrides: argparse.ArgumentParser) -> None:
    demo = commands.add_parser(
        "demo",
        parents=[overrides],
        help="serve a demo page (the demo extra): a gallery from prompts, rollout videos and success",
    )
    demo.add_argument("--model", help="a text-to-image model folder: the Generate tab")
    demo.add_argument(
        "--rollouts",
        help="a folder `cvae-bridge rollout --out` wrote (success.json, videos under it): the Rollouts tab",
    )
    demo.add_argument(
        "--prompt",
        dest="prompts",
        action="append",
        help="a first prompt (repeatable; default: the model's training-run sample prompts)",
    )
    demo.add_argument("--num", type=_checked(PositiveInt), help="images per prompt at first (default: 4)")
    demo.add_argument(
        "--temperature", type=_checked(PositiveFloat), help="the temperature at first (> 0; default: 1)"
    )
    demo.add_argument("--seed", type=_checked(Seed), help="the seed at first (default: 0)")
    demo.add_argument("--device", help=DEVICE_HELP)
    demo.add_argument("--host", help="the address to serve on (default: 127.0.0.1; 0.0.0.0: the network)")
    demo.add_argument("--port", type=int, help="the port (default: the first free one from 7860)")
    demo.set_defaults(run=_demo)


def _add_listing(commands: Any, overrides: argparse.ArgumentParser) -> None:
    listing = commands.add_parser("list", help="list registered components, plugins included")
    listing.set_defaults(run=_list)


def _add_config(commands: Any, overrides: argparse.ArgumentParser) -> None:
    config = commands.add_parser(
        "config", parents=[overrides], help="print a run config with defaults filled in"
    )
    config.add_argument(
        "config", nargs="?", help="a YAML run config (default: the built-in MNIST text-to-image run)"
    )
    config.add_argument(
        "--explain",
        action="store_true",
        help="one line per field: its value, what it takes and what it means",
    )
    config.set_defaults(run=_config)


def main(argv: list[str] | None = None) -> int:
    """Run a command. An expected failure (a CvaeBridgeError: bad config, input or folder, a
    missing package) prints one line, `cvae-bridge: error: ...`, and returns 2, as argparse does
    for bad options; `--debug` or CVAE_BRIDGE_DEBUG=1 lets it raise with its traceback."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CvaeBridgeError as error:
        if args.debug or os.environ.get("CVAE_BRIDGE_DEBUG", "") not in ("", "0"):
            raise
        print(f"cvae-bridge: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`cvae-bridge config --explain | head`): stop quietly, as `cat`
        # does; stdout is pointed at /dev/null so that flushing it at exit raises nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
