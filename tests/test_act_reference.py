"""tools/act_reference.py, ACT's original network rebuilt in plain torch, and the FLOP counter of
tools/act_benchmark.py, at tiny sizes (nothing is timed)."""

import math
import sys
from pathlib import Path

import torch
from torch import nn

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))  # the benchmark imports the reference as its neighbour

from act_benchmark import count_flops  # noqa: E402
from act_reference import ACTReference, FrozenBatchNorm2d, sine_positions_2d  # noqa: E402

TINY = dict(
    state_dim=3,
    hidden=16,
    heads=2,
    ff_dim=24,
    encoder_layers=1,
    decoder_layers=2,
    num_queries=5,
    latent_dim=4,
    backbone_width=4,
)


def test_shapes_at_inference_and_in_training():
    torch.manual_seed(0)
    model = ACTReference(**TINY).eval()
    qpos, image = torch.randn(2, 3), torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        actions, pad, (mu, logvar) = model(qpos, image)
    assert actions.shape == (2, 5, 3) and pad.shape == (2, 5, 1)
    assert mu is None and logvar is None
    assert model.backbone(image).shape == (2, 32, 2, 3)  # 8 x width channels at stride 32

    model.train()
    is_pad = torch.zeros(2, 5, dtype=torch.bool)
    is_pad[1, 3:] = True
    out = model.loss(qpos, image, torch.randn(2, 5, 3), is_pad)
    assert set(out) == {"l1", "kl", "loss"} and out["loss"].ndim == 0
    assert torch.allclose(out["loss"], out["l1"] + 10 * out["kl"])
    out["loss"].backward()
    assert model.encoder_action_proj.weight.grad is not None  # the CVAE encoder is in the loss
    assert model.backbone.conv1.weight.grad is not None


def test_frozen_batch_norm_has_nothing_to_train():
    norm = FrozenBatchNorm2d(3)
    assert list(norm.parameters()) == []
    model = ACTReference(**TINY)
    frozen = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 1 + 8 * 2 + 3  # the stem, two in each of 8 blocks, one per downsampling
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    norm.running_mean.fill_(1.0)
    norm.running_var.fill_(4.0)
    x = torch.randn(1, 3, 2, 2)
    assert torch.allclose(norm(x), (x - 1.0) / math.sqrt(4.0 + 1e-5))


def test_sine_positions_match_detrs_formula():
    height, width, features = 2, 3, 4
    pos = sine_positions_2d(height, width, features)
    assert pos.shape == (1, 2 * features, height, width)
    for c in range(2 * features):
        k = c % features
        for i in range(height):
            for j in range(width):
                # rows first, then columns; normalised to (0, 2 pi]; sin at even k, cos at odd k
                coordinate = (i + 1) / (height + 1e-6) if c < features else (j + 1) / (width + 1e-6)
                angle = coordinate * 2 * math.pi / 10000 ** (2 * (k // 2) / features)
                expected = math.sin(angle) if k % 2 == 0 else math.cos(angle)
                assert abs(pos[0, c, i, j].item() - expected) < 1e-6


def test_flop_counter_counts_a_linear_and_cpu_attention():
    linear = nn.Linear(3, 5)
    x = torch.randn(2, 3)
    counts = count_flops(lambda: linear(x), {"linear": [linear]})
    assert counts == {"total": 2 * 2 * 3 * 5, "linear": 2 * 2 * 3 * 5}

    # Attention without weights runs the CPU's fused kernel; it must count as the explicit path does.
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    tokens = torch.randn(1, 4, 8)
    fused = count_flops(lambda: attention(tokens, tokens, tokens, need_weights=False))["total"]
    explicit = count_flops(lambda: attention(tokens, tokens, tokens, need_weights=True))["total"]
    projections = 2 * 4 * 8 * (3 * 8) + 2 * 4 * 8 * 8
    assert fused == explicit == projections + 2 * (2 * 4 * 4 * 8)


def test_flop_counter_counts_a_depthwise_convolution_backward_as_its_forward_per_gradient():
    # torch's own formula leaves out the groups: 8 times too much here
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    forward = 2 * (8 * 6 * 6) * 9
    assert count_flops(lambda: conv(x))["total"] == forward
    assert count_flops(lambda: conv(x).sum().backward())["total"] == 3 * forward  # + grad input, grad weight


def test_flop_counter_sees_through_the_transformer_fast_path():
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
    tokens = torch.randn(1, 4, 8)
    with torch.inference_mode():
        counted = count_flops(lambda: layer(tokens))["total"]
    attention = 2 * 4 * 8 * (3 * 8) + 2 * 4 * 8 * 8 + 2 * (2 * 4 * 4 * 8)
    assert counted == attention + 2 * (2 * 4 * 8 * 16)
    assert torch.backends.mha.get_fastpath_enabled()  # switched back on
