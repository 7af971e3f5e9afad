"""P1: images/s of cvae_bridge's trainer vs a bare PyTorch loop, same MLP VAE, same data.

The model is the classic PyTorch example VAE (784-400-20, Bernoulli / BCE, Adam lr 1e-3, batch
128) on MNIST. Three loops over the same in-memory dataset object, interleaved, each repeated:

    bare        a plain PyTorch loop, the example's own nn.Module and its optimiser (Adam)
    bare+model  the same plain loop driving cvae_bridge's ConditionalVAE built from the config,
                with the trainer's optimiser (build_optimizer: fused AdamW)
    trainer     cvae_bridge.training.train with that config (Accelerate, logging, checks,
                the final checkpoint and export included)

Prints images/s per loop (median over repeats) and two ratios: trainer / bare is P1 (the
framework against the example as people write it); trainer / bare+model isolates what the
training loop itself costs, same model and optimiser.

    python tools/trainer_overhead.py --steps 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from cvae_bridge import ConditionalVAE
from cvae_bridge.config import RunConfig, from_dict
from cvae_bridge.data import build_source
from cvae_bridge.training import Trainer, build_optimizer

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


def bare_loop(dataset, steps: int, model: nn.Module, optimizer: torch.optim.Optimizer, loss_of) -> float:
    loader = DataLoader(dataset, batch_size=128, shuffle=True, drop_last=True)
    start, done = time.perf_counter(), 0
    while done < steps:
        for batch in loader:
            loss = loss_of(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    return steps * 128 / (time.perf_counter() - start)


def trainer_loop(config: RunConfig, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        config.train.output_dir, config.train.steps = out, steps
        trainer = Trainer(config)  # building the model and the data source is not timed
        start = time.perf_counter()
        trainer.fit()
        return steps * 128 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trackers", nargs="*", default=["tensorboard"], help="trackers of the trainer run")
    args = parser.parse_args()

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
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.repeats):
        for name, loop in loops.items():  # interleaved, so that load changes hit every loop alike
            torch.manual_seed(0)
            rates[name].append(loop())
    print(f"torch threads: {torch.get_num_threads()}, steps per run: {args.steps}, repeats: {args.repeats}")
    for name, values in rates.items():
        print(
            f"{name:>11}: {statistics.median(values):8.0f} images/s   (runs: {', '.join(f'{v:.0f}' for v in values)})"
        )
    bare, model, trainer = (statistics.median(rates[n]) for n in loops)
    print(f"ratio trainer / bare       = {trainer / bare:.3f}")
    print(f"ratio trainer / bare+model = {trainer / model:.3f}")


if __name__ == "__main__":
    main()
