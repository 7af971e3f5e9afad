"""Frechet distance between image sets, on ImageNet-pretrained EfficientNet-Lite0 features.

This is FID with EfficientNet-Lite0 (1280-d pooled features) in place of Inception-v3, so its
figures are not comparable with published FID values, and only comparable among themselves
when computed at the same `resolution` (and with similar sample counts: the estimate is biased
upwards for small sets).
"""

from __future__ import annotations

import numpy as np
import torch
from einops import reduce
from torch.nn import functional as F

from ..errors import InputError
from ..imagenet import imagenet_normalize, load_efficientnet_lite0

FEATURE_DIM = 1280


class FeatureExtractor:
    """Loads EfficientNet-Lite0 once and maps images to its 1280-d average-pooled features.

    Images are (N, C, H, W) floats in [0, 1] with C = 1 (grayscale, repeated to RGB) or 3; they are
    resized (bilinear, antialiased) to `resolution` x `resolution`. 224 is the model's native size;
    112 is 4x cheaper. Distances are only comparable at the same resolution.
    """

    def __init__(self, resolution: int = 224, device: str | torch.device = "cpu"):
        if resolution < 32:
            raise InputError(
                f"FeatureExtractor: resolution must be >= 32 (the network downsamples 32x), got {resolution}"
            )
        self.resolution = resolution
        self.device = torch.device(device)
        # channels_last: oneDNN runs these convolutions ~1.5x faster on CPU.
        self.model = load_efficientnet_lite0(resolution).to(self.device, memory_format=torch.channels_last)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1 or 3, H, W) in [0, 1] -> (N, 3, resolution, resolution), normalised for the network."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(
                f"FeatureExtractor: expected images (N, 1 or 3, H, W) with values in [0, 1], got {got}"
            )
        x = images.to(self.device, torch.float32)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(
                x,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB (after resizing: a third of the work); a no-op for RGB
        return imagenet_normalize(x).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def features(self, images: torch.Tensor, batch_size: int = 100) -> np.ndarray:
        """Pooled features (N, 1280) as float64 numpy."""
        if not isinstance(images, torch.Tensor):
            raise InputError(
                f"FeatureExtractor: expected a tensor of images (N, 1 or 3, H, W), got {type(images).__name__}"
            )
        self.model.eval()  # BatchNorm running statistics and no dropout, even if someone called .train()
        chunks = []
        for batch in images.split(batch_size):
            maps = self.model.extract_features(
                self.preprocess(batch)
            )  # (B, 1280, h, w), before pooling and _fc
            chunks.append(reduce(maps, "b c h w -> b c", "mean").double().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, FEATURE_DIM))


def _mean_and_covariance(features: np.ndarray | torch.Tensor, what: str) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise InputError(f"frechet_distance: {what} must be (N, D) with N >= 2, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise InputError(f"frechet_distance: {what} contains NaN or infinite values")
    return features.mean(0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (tiny negative eigenvalues from
    round-off are clamped to zero)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D), in float64:

    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)),
    with tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD
    matrix similar to S_a S_b, so no complex square roots are needed.
    """
    mu_a, cov_a = _mean_and_covariance(features_a, "features_a")
    mu_b, cov_b = _mean_and_covariance(features_b, "features_b")
    if mu_a.shape != mu_b.shape:
        raise InputError(f"frechet_distance: feature sizes differ, {mu_a.shape[0]} vs {mu_b.shape[0]}")
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    distance = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(distance, 0.0)  # round-off can make identical sets come out at -1e-12
