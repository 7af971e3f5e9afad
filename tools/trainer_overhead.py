"""P1: images/s of cvae_bridge's trainer vs a bare PyTorch loop, for an MLP VAE and an image policy.

mnist: the classic PyTorch example VAE (784-400-20, Bernoulli / BCE, Adam lr 1e-3, batch 128) on
MNIST. Three loops over the same in-memory dataset, interleaved, each repeated:

    bare        a plain PyTorch loop, the example's own nn.Module and its optimiser (Adam)
    bare+model  the same plain loop driving cvae_bridge's ConditionalVAE built from the config,
                with the trainer's optimiser (build_optimizer: fused AdamW)
    trainer     cvae_bridge.training.train with that config (Accelerate, logging, checks,
                the final checkpoint and export included)

Prints images/s per loop (median over repeats) and two ratios: trainer / bare is P1 (the
framework against the example as people write it); trainer / bare+model isolates what the
training loop itself costs, same model and optimiser.

aloha: configs/aloha_transfer_cube_pixels.yaml (joints and one 120x160 camera through a frozen
EfficientNet-Lite0, chunks of 50 actions, batch 32, one DataLoader worker) on a small synthetic
dataset of random frames that the script writes in the LeRobot layout into a temporary folder (no
simulator). Two loops, interleaved, each repeated, both reading that folder through the same data
source (`build_source` of the config) and the config's DataLoader settings:

    bare        a plain PyTorch loop over ConditionalVAE built from the config (normalisation
                statistics from the data, as the trainer's), build_optimizer's optimiser, the
                config's gradient clipping
    trainer     cvae_bridge.training.train with that config (final checkpoint and export included)

Both use the config's frozen-backbone feature cache (cache_size): each run builds a fresh model,
so each starts with an empty cache and computes the backbone once per frame in its first epoch
(run at least an epoch: --aloha-steps x 32 >= the dataset's frames). Prints samples/s per loop
(median over repeats) and the ratio trainer / bare. Both run with the trainer's allocator setting
(keep_freed_memory), set before the first loop.

    python tools/trainer_overhead.py --steps 1000 --repeats 3                 # both
    python tools/trainer_overhead.py --config aloha --aloha-steps 40 --repeats 3  # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from cvae_bridge import ConditionalVAE
from cvae_bridge.config import RunConfig, from_dict, load_run_config
from cvae_bridge.data import build_source
from cvae_bridge.data.lerobot import write_lerobot_dataset
from cvae_bridge.data.resolve import resolve_run_config
from cvae_bridge.training import Trainer, build_optimizer
from cvae_bridge.utils.runtime import keep_freed_memory

ALOHA_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "aloha_transfer_cube_pixels.yaml"

CONFIG = {
    "model": {
        "d_model": 400,
        "latent_dim": 20,
        "targets": {
            "image": {
                "encoder": {"type": "vector", "shape": [1, 28, 28], "activation": "relu"},
                "decoder": {"type": "vector", "shape": [1, 28, 28], "hidden": [400], "activation": "relu"},
                "likelihood": {"type": "bernoulli"},
            }
        },
        "posterior": {"type": "mlp"},
    },
    "data": {"type": "mnist"},
    # As the example: constant learning rate, no clipping; no periodic evaluation.
    "train": {
        "batch_size": 128,
        "lr": 1e-3,
        "warmup_steps": 0,
        "schedule": "constant",
        "max_grad_norm": 0.0,
        "eval_every": 0,
        "checkpoint_every": 0,
        "progress_bar": False,
        "log_every": 100,
    },
}


class ExampleVAE(nn.Module):
    """pytorch/examples vae/main.py."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        logits = self.fc4(F.relu(self.fc3(z)))
        bce = F.binary_cross_entropy_with_logits(logits, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (bce + kld) / x.shape[0]


def bare_loop(
    dataset,
    steps: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_of,
    batch_size: int = 128,
    num_workers: int = 0,
    max_grad_norm: float = 0.0,
) -> float:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    start, done = time.perf_counter(), 0
    while done < steps:
        for batch in loader:
            loss = loss_of(model, batch)
            optimizer.zero_grad()
            loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            done += 1
            if done == steps:
                break
    return steps * batch_size / (time.perf_counter() - start)


def trainer_loop(config: RunConfig, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        config.train.output_dir, config.train.steps = out, steps
        trainer = Trainer(config)  # building the model and the data source is not timed
        start = time.perf_counter()
        trainer.fit()
        return steps * config.train.batch_size / (time.perf_counter() - start)


def write_aloha_frames(root: Path, episodes: int, length: int, size: list[int]) -> None:
    """Random joints, actions and camera frames (all distinct) in the LeRobot layout of an ALOHA
    sim dataset: the features configs/aloha_transfer_cube_pixels.yaml reads."""
    rng = np.random.default_rng(0)
    write_lerobot_dataset(
        root,
        (
            {
                "observation.state": rng.normal(size=(length, 14)).astype(np.float32),
                "observation.images.top": rng.integers(0, 256, (length, *size, 3), dtype=np.uint8),
                "action": rng.normal(size=(length, 14)).astype(np.float32),
                "task": "transfer the cube",
            }
            for _ in range(episodes)
        ),
        fps=50,
    )


def measure(loops: dict, repeats: int, unit: str = "images/s") -> dict[str, float]:
    """Examples/s of each loop, the median over `repeats` interleaved runs; prints every run."""
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():  # interleaved, so that load changes hit every loop alike
            torch.manual_seed(0)
            rates[name].append(loop())
    for name, values in rates.items():
        print(
            f"{name:>11}: {statistics.median(values):8.1f} {unit}   (runs: {', '.join(f'{v:.1f}' for v in values)})"
        )
    return {name: statistics.median(values) for name, values in rates.items()}


def mnist(args: argparse.Namespace) -> None:
    config = from_dict(RunConfig, {**CONFIG, "train": {**CONFIG["train"], "trackers": args.trackers}})
    dataset = build_source(config.data).split("train")

    def example() -> float:
        model = ExampleVAE()
        return bare_loop(
            dataset,
            args.steps,
            model,
            torch.optim.Adam(model.parameters(), lr=1e-3),
            lambda m, b: m(b["image"]),
        )

    def ours() -> float:
        model = ConditionalVAE(config.model)
        return bare_loop(
            dataset,
            args.steps,
            model,
            build_optimizer(model, config.train),
            lambda m, b: m({"image": b["image"]})["loss"],
        )

    loops = {
        "bare": example,
        "bare+model": ours,
        "trainer": lambda: trainer_loop(copy.deepcopy(config), args.steps),
    }
    print(
        f"mnist: torch threads: {torch.get_num_threads()}, steps per run: {args.steps}, repeats: {args.repeats}"
    )
    bare, model, trainer = measure(loops, args.repeats).values()
    print(f"ratio trainer / bare       = {trainer / bare:.3f}")
    print(f"ratio trainer / bare+model = {trainer / model:.3f}")


def aloha(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = load_run_config(str(ALOHA_CONFIG))
        write_aloha_frames(
            Path(folder) / "data", args.aloha_episodes, args.aloha_length, config.data.image_size
        )
        config.data.path = str(Path(folder) / "data")
        config.train.eval_every, config.train.checkpoint_every = 0, 0
        config.train.progress_bar, config.train.trackers = False, args.trackers
        config, _ = resolve_run_config(config)
        cfg = config.train
        source = build_source(config.data)
        dataset = source.split("train")
        stats = source.statistics(config.model.normalize)

        def bare() -> float:
            model = ConditionalVAE(config.model)  # a fresh, empty feature cache, as the trainer's
            model.set_normalization(
                {n: (torch.as_tensor(m), torch.as_tensor(s)) for n, (m, s) in stats.items()}
            )
            model.train()
            return bare_loop(
                dataset,
                args.aloha_steps,
                model,
                build_optimizer(model, cfg),
                lambda m, b: m(b)["loss"],
                cfg.batch_size,
                cfg.num_workers,
                cfg.max_grad_norm,
            )

        loops = {"bare": bare, "trainer": lambda: trainer_loop(copy.deepcopy(config), args.aloha_steps)}
        print(
            f"aloha: torch threads: {torch.get_num_threads()}, {len(dataset)} training samples of "
            f"{args.aloha_episodes} x {args.aloha_length} frames, batch {cfg.batch_size}, "
            f"steps per run: {args.aloha_steps}, repeats: {args.repeats}, feature cache in both"
        )
        rates = measure(loops, args.repeats, "samples/s")
        print(f"ratio trainer / bare       = {rates['trainer'] / rates['bare']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", nargs="+", choices=["mnist", "aloha"], default=["mnist", "aloha"])
    parser.add_argument("--steps", type=int, default=1000, help="mnist: steps per run")
    parser.add_argument("--aloha-steps", type=int, default=40, help="aloha: steps per run")
    parser.add_argument("--aloha-episodes", type=int, default=4, help="aloha: synthetic episodes")
    parser.add_argument("--aloha-length", type=int, default=80, help="aloha: frames per episode")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trackers", nargs="*", default=["tensorboard"], help="trackers of the trainer run")
    args = parser.parse_args()
    # The trainer sets glibc's allocator to keep freed memory, for the whole process: so do it
    # before any loop, or a bare loop run first would fault its activations' pages in every step.
    keep_freed_memory()
    for name in args.config:
        {"mnist": mnist, "aloha": aloha}[name](args)


if __name__ == "__main__":
    main()
