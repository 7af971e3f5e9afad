"""Metrics for generated images: faithfulness (a trained classifier), Frechet distance, diversity."""

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
