"""Training on Accelerate: the loop, its schedule, resumable checkpoints, training-only losses.

    trainer.py       train(config) / Trainer: the loop, optimiser groups, logging, export
    checkpoints.py   resumable checkpoints (model, training losses, EMA, random states)
    losses.py        perceptual and adversarial terms for image targets (train.sharpen)
    sampler.py       epoch-seeded, resumable, sharded batch order
    ema.py           exponential moving average of the weights

Imports the model, data and the core (its periodic sample grid and latent diagnostics come from
`cvae_bridge/samples.py` and `diagnostics.py`, which evaluation uses too); never evaluation or
pipelines (tests/test_layering.py).
"""

from .trainer import Trainer, TrainResult, build_optimizer, train

__all__ = ["TrainResult", "Trainer", "build_optimizer", "train"]
