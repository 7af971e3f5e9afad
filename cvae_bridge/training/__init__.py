"""Training on Accelerate: the loop, its schedule, resumable checkpoints."""

from .trainer import TrainResult, Trainer, train

__all__ = ["TrainResult", "Trainer", "train"]
