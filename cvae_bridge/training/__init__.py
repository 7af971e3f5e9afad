"""Training on Accelerate: the loop, its schedule, resumable checkpoints."""

from .trainer import Trainer, TrainResult, build_optimizer, train

__all__ = ["TrainResult", "Trainer", "build_optimizer", "train"]
