"""Evaluation: how good a trained model is, and pictures of it.

    evaluate.py      `cvae-bridge eval`: the metrics of eval.metrics, written as metrics.json / .md
    classifier.py    faithfulness: a classifier trained on the real images, cached
    fid.py           Frechet distance on EfficientNet-Lite0 features; diversity.py: pairwise diversity
    pictures.py      reconstructions, interpolations, latent plane, loss curves
    rollout.py       policies in the simulators (success rates, sub-stages, videos)
    video.py         rollout videos: MP4 or GIF, each frame captioned with the step, task and outcome
    replay.py        policies on recorded episodes (L1 against the recorded actions)

The top layer: it may import everything else (pipelines, training, data, envs, the model, the
latent diagnostics and sample grids it shares with training); nothing imports it
(tests/test_layering.py).
"""

from .classifier import (
    ClassifierArgs,
    ImageClassifier,
    default_cache_dir,
    fingerprint,
    load_classifier,
    load_or_train_classifier,
    train_classifier,
)
from .diversity import pairwise_diversity
from .evaluate import evaluate
from .fid import FeatureExtractor, frechet_distance

__all__ = [
    "ClassifierArgs",
    "FeatureExtractor",
    "ImageClassifier",
    "default_cache_dir",
    "evaluate",
    "fingerprint",
    "frechet_distance",
    "load_classifier",
    "load_or_train_classifier",
    "pairwise_diversity",
    "train_classifier",
]
