"""Exponential moving average of the trainable weights."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError


class EMA:
    """shadow <- decay * shadow + (1 - decay) * weights, after every optimiser step (float32)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module, skipped: torch.Tensor | None = None) -> None:
        """One step of the average; none where `skipped` (a bool tensor on the device, so that
        a step skipped there needs no wait for it)."""
        weight = 1.0 - self.decay if skipped is None else torch.where(skipped, 0.0, 1.0 - self.decay)
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), weight)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.cpu() for n, t in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.shadow):
            raise CheckpointError(
                f"EMA state does not match the model: missing {sorted(set(self.shadow) - set(state))[:5]}, unexpected {sorted(set(state) - set(self.shadow))[:5]}"
            )
        for name, tensor in state.items():
            self.shadow[name].copy_(tensor)
