"""Training on Accelerate: the loop, its schedule, resumable checkpoints."""

from .trainer import TrainResult, Trainer, build_optimizer, train

__all__ = ["TrainResult", "Trainer", "build_optimizer", "train"]
