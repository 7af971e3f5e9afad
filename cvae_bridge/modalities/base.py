"""What every modality provides: an encoder to tokens, a decoder to per-site features.

Encoders map their input to `Tokens`: a sequence (B, N, D) and a mask (B, N), True where a token
is real. Any mix of conditions is then one sequence, and decoders never need to know which
modalities produced it.

Decoders map a latent z and the condition tokens to features (B, S, F) for S "sites" (pixels,
chunk steps, or one site for a vector); the likelihood head projects those to distribution
parameters over the C channels of each site. `to_sites` / `from_sites` move a target between its
natural shape and (B, S, C).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..config import DecoderConfig, EncoderConfig
from ..errors import InputError
from ..registry import DECODERS, ENCODERS


class Tokens(NamedTuple):
    x: torch.Tensor  # (B, N, D)
    mask: torch.Tensor  # (B, N) bool, True = valid token

    @staticmethod
    def cat(parts: list[Tokens], batch: int, dim: int, device: torch.device) -> Tokens:
        """Concatenate along N; an empty list gives an empty sequence (B, 0, D)."""
        if not parts:
            return Tokens(
                torch.zeros(batch, 0, dim, device=device),
                torch.zeros(batch, 0, dtype=torch.bool, device=device),
            )
        return Tokens(torch.cat([p.x for p in parts], dim=1), torch.cat([p.mask for p in parts], dim=1))


def check_tensor(
    value: Any,
    name: str,
    *,
    ndim: int | None = None,
    trailing: tuple[int | None, ...] = (),
    floating: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[float, float] | None:
    """Raise InputError unless `value` is a finite tensor of the expected rank and trailing sizes
    with at least one example; `dtype`: the floating-point type it must have (the weights').
    Returns a floating tensor's (min, max), so that range checks need no second pass."""
    if not isinstance(value, torch.Tensor):
        raise InputError(f"batch[{name!r}]: expected a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise InputError(
            f"batch[{name!r}]: expected {ndim} dimensions (batch first), got shape {tuple(value.shape)}"
        )
    if value.ndim == 0 or value.shape[0] == 0:
        raise InputError(
            f"batch[{name!r}]: expected at least one example (batch first), got shape {tuple(value.shape)}"
        )
    actual = tuple(value.shape[value.ndim - len(trailing) :]) if trailing else ()
    if any(want is not None and want != got for want, got in zip(trailing, actual)):
        expected = "x".join("*" if t is None else str(t) for t in trailing)
        raise InputError(
            f"batch[{name!r}]: expected trailing shape {expected}, got shape {tuple(value.shape)}"
        )
    if floating:
        if not value.is_floating_point():
            raise InputError(f"batch[{name!r}]: expected a floating-point tensor, got {value.dtype}")
        # Layers fail on a float64 input (numpy's default) with a message that names no key.
        if dtype is not None and value.dtype != dtype:
            raise InputError(
                f"batch[{name!r}]: expected {dtype} like the model's weights, got {value.dtype}; convert it with .to({dtype})"
            )
        # One pass for both checks: NaN propagates into min and max, an infinity is one of them.
        low, high = (float(v) for v in value.aminmax())
        if not (math.isfinite(low) and math.isfinite(high)):
            raise InputError(f"batch[{name!r}]: contains NaN or infinite values")
        return low, high
    return None


KINDS = ("image", "text", "vector", "action", "other")


class Encoder(nn.Module):
    """Base class of modality encoders. Subclasses set `Config` and implement `forward`."""

    Config: ClassVar[type[EncoderConfig]]
    # What the encoder reads, for code that prepares inputs (the policy converts "image" observations
    # from uint8 H x W x 3; text conditions take instructions): "image", "text", "vector", "action", "other".
    input_kind: ClassVar[str] = "other"

    def __init__(self, config: EncoderConfig, d_model: int):
        super().__init__()
        self.config = config
        self.d_model = d_model

    def check(self, value: Any, name: str) -> None:
        """Raise InputError naming `name` if `value` is not a valid batch of this modality."""

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the weights, which tensor inputs must share."""
        return next(self.parameters()).dtype

    def batch_size(self, value: Any) -> int:
        return len(value)

    def forward(self, value: Any, mask: torch.Tensor | None = None) -> Tokens:
        raise NotImplementedError

    def external_modules(self) -> list[str]:
        """Names of submodules whose weights are loaded from elsewhere (a frozen pretrained
        network) and are therefore not saved with the model."""
        return []

    def lr_multipliers(self) -> dict[str, float]:
        """Submodule name -> factor of the run's learning rate for its weights (a fine-tuned
        pretrained network learns slower than the layers around it); others train at 1."""
        return {}


ENCODERS.define_contract(Encoder, EncoderConfig, ("forward",))


class Decoder(nn.Module):
    """Base class of modality decoders. Subclasses set `Config`, `event_shape`, `sites`,
    `channels`, `out_features` and implement `forward`, `to_sites` and `from_sites`."""

    Config: ClassVar[type[DecoderConfig]]
    event_shape: tuple[int, ...]  # shape of one target example
    # What the decoder produces, for code that reads its outputs (evaluation draws "image" targets
    # as grids and scores them; the policy runs an "action" chunk): the same kinds as `input_kind`.
    output_kind: ClassVar[str] = "other"
    sites: int
    channels: int
    out_features: int

    def __init__(self, config: DecoderConfig, d_model: int, latent_dim: int, conditioned: bool):
        # `conditioned` is False for a model without condition modalities (a plain VAE): the
        # decoder then builds no condition pathway at all.
        super().__init__()
        self.config = config
        self.d_model = d_model
        self.latent_dim = latent_dim
        self.conditioned = conditioned

    def forward(self, z: torch.Tensor, conditions: Tokens) -> torch.Tensor:
        """(B, latent_dim), condition tokens -> features (B, sites, out_features)."""
        raise NotImplementedError

    def to_sites(self, x: torch.Tensor) -> torch.Tensor:
        """Target in its natural shape (B, *event_shape) -> (B, sites, channels)."""
        raise NotImplementedError

    def from_sites(self, y: torch.Tensor) -> torch.Tensor:
        """(B, sites, channels) -> natural shape (B, *event_shape)."""
        raise NotImplementedError


DECODERS.define_contract(Decoder, DecoderConfig, ("forward", "to_sites", "from_sites"))
