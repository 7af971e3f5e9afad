"""The CPU training versions of dropout and attention in cvae_bridge/layers.py: the same
distribution and results as PyTorch's modules, the same parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cvae_bridge.layers import Attention, Dropout, transformer_decoder, transformer_encoder


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_drops_p_of_the_elements_and_scales_the_rest(p):
    torch.manual_seed(0)
    x = torch.rand(1000, 1000) + 0.5
    y = Dropout(p).train()(x)
    dropped = y == 0
    # one million draws: the fraction's standard deviation is under 5e-4
    assert abs(dropped.float().mean().item() - p) < 3e-3
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p))
    # neighbours are independent (the 16-bit slices of one 64-bit word sit side by side), and each
    # of the four slice positions drops p of its elements
    both = (dropped[:, :-1] & dropped[:, 1:]).float().mean().item()
    assert abs(both - p * p) < 3e-3
    for slot in range(4):
        assert abs(dropped.flatten()[slot::4].float().mean().item() - p) < 5e-3


def test_dropout_follows_the_seed_and_passes_gradients_through_the_kept_elements():
    x = torch.randn(64, 33, requires_grad=True)  # an element count not divisible by 4
    masks = []
    for _ in range(2):
        torch.manual_seed(3)
        masks.append(Dropout(0.3).train()(x) != 0)
    assert torch.equal(*masks)
    torch.manual_seed(3)
    Dropout(0.3).train()(x).sum().backward()
    torch.testing.assert_close(x.grad, masks[0].float() / 0.7)
    torch.manual_seed(4)
    assert not torch.equal(Dropout(0.3).train()(x) != 0, masks[0])


def test_dropout_is_the_identity_in_evaluation_and_at_zero():
    x = torch.randn(10, 10)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))  # as nn.Dropout


def _pair(dropout: float = 0.1) -> tuple[Attention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ours = Attention(32, 4, dropout).train()
    stock = nn.MultiheadAttention(32, 4, 0.0, batch_first=True).train()
    stock.load_state_dict(ours.state_dict())
    ours.weights_dropout = nn.Identity()  # compare the attention itself; Dropout is tested above
    return ours, stock


def _padding(batch: int, keys: int) -> torch.Tensor:
    padding = torch.zeros(batch, keys, dtype=torch.bool)
    padding[1, keys // 2 :] = True
    padding[2] = True  # every key masked: PyTorch attends to nothing there (zeros, no NaN)
    return padding


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
@pytest.mark.parametrize("mask", [None, "bool", "additive"])
def test_attention_while_training_on_a_cpu_equals_pytorchs(cross, mask):
    ours, stock = _pair()
    x = torch.randn(3, 9, 32, requires_grad=True)
    memory = torch.randn(3, 6, 32, requires_grad=True) if cross else x
    padding = None if mask is None else _padding(3, memory.shape[1])
    if mask == "additive":
        padding = torch.zeros(padding.shape).masked_fill(padding, float("-inf"))
    outputs, grads = [], []
    for module in (ours, stock):
        out, weights = module(x, memory, memory, key_padding_mask=padding, need_weights=False)
        assert weights is None
        out.square().sum().backward()
        outputs.append(out)
        grads.append([x.grad.clone(), module.in_proj_weight.grad.clone()])
        x.grad = None
    assert not outputs[1].isnan().any()
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_attention_drops_its_weights_while_training_and_not_in_evaluation():
    torch.manual_seed(0)
    attention = Attention(32, 4, 0.5)
    x = torch.randn(2, 8, 32)
    trained = [attention.train()(x, x, x, need_weights=False)[0] for _ in range(2)]
    assert not torch.allclose(trained[0], trained[1])
    evaluated = attention.eval()(x, x, x, need_weights=False)[0]
    stock = nn.MultiheadAttention(32, 4, 0.5, batch_first=True).eval()
    stock.load_state_dict(attention.state_dict())
    torch.testing.assert_close(evaluated, stock(x, x, x, need_weights=False)[0])


def test_transformer_layers_keep_pytorchs_parameter_names():
    encoder = transformer_encoder(32, 2, 4, 64, 0.1, norm_first=False)
    decoder = transformer_decoder(32, 2, 4, 64, 0.1, norm_first=False)
    stock_encoder = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(32, 4, 64, 0.1, batch_first=True), 2, enable_nested_tensor=False
    )
    stock_decoder = nn.TransformerDecoder(
        nn.TransformerDecoderLayer(32, 4, 64, 0.1, batch_first=True), 2, norm=nn.LayerNorm(32)
    )
    for ours, stock in ((encoder, stock_encoder), (decoder, stock_decoder)):
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: v.shape for k, v in stock.state_dict().items()
        }
        modules = [type(m) for m in ours.modules()]
        assert nn.Dropout not in modules and nn.MultiheadAttention not in modules
        assert Dropout in modules and Attention in modules
