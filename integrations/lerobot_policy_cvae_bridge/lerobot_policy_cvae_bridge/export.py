"""Write a LeRobot policy folder for a cvae_bridge model folder, for `lerobot-eval --policy.path`.

    cvae-bridge-lerobot-export runs/act/model runs/act/lerobot --temporal-ensemble 0.01
    lerobot-eval --policy.path=runs/act/lerobot --env.type=aloha --env.task=AlohaTransferCube-v0 ...

The folder holds LeRobot's config.json (type cvae_bridge, the model folder's absolute path or Hub
repo id) and the processors' policy_preprocessor.json / policy_postprocessor.json; no weights, which
stay in the model folder (export again after moving it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvae_bridge.errors import CvaeBridgeError

from .configuration_cvae_bridge import CvaeBridgeConfig
from .processor_cvae_bridge import make_cvae_bridge_pre_post_processors


def export(
    model_path: str | Path,
    directory: str | Path,
    query_period: int | None = None,
    temporal_ensemble: float | None = None,
) -> Path:
    """Write the LeRobot policy folder `directory` for the model folder (or Hub repo id) `model_path`."""
    local = Path(model_path)
    config = CvaeBridgeConfig(
        model_path=str(local.resolve()) if local.is_dir() else str(model_path),
        query_period=query_period,
        temporal_ensemble=temporal_ensemble,
    )
    config.save_pretrained(directory)
    for processor in make_cvae_bridge_pre_post_processors(config):
        processor.save_pretrained(directory)
    return Path(directory)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvae-bridge-lerobot-export", description=__doc__.split("\n")[0])
    parser.add_argument(
        "model", help="the cvae_bridge model folder (written by cvae-bridge train) or a Hub repo id"
    )
    parser.add_argument("out", help="the LeRobot policy folder to write")
    parser.add_argument("--query-period", type=int, help="re-plan every n steps (default: the chunk size)")
    parser.add_argument(
        "--temporal-ensemble", type=float, help="ACT's temporal ensembling weight m, e.g. 0.01"
    )
    args = parser.parse_args(argv)
    try:
        folder = export(args.model, args.out, args.query_period, args.temporal_ensemble)
    except CvaeBridgeError as error:
        print(f"cvae-bridge-lerobot-export: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {folder}: lerobot-eval --policy.path={folder} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
