"""The policy's inference precision (`dtype`): bf16 autocast gives the float32 chunk within bf16's
tolerance, returned in float32, through the folded pretrained trunk too; float32 is the model's
own output, bit for bit; a wrong dtype is named."""

import warnings

import numpy as np
import pytest
import torch
from conftest import build
from test_image_backbone import SIZE, policy_config

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict
from cvae_bridge.errors import ConfigError
from cvae_bridge.pipelines import ActionChunkPolicy
from cvae_bridge.pipelines import policy as policy_module

# bf16 keeps 8 significant bits (relative rounding 2^-9); through a few layers the chunk moves by a
# few thousandths of the action's normalisation scale (measured here: under 0.01 for both models).
TOLERANCE = 0.05  # of the action's std, the scale the model predicts at
FEATURES = {"qpos": "observation.state", "camera": "observation.images.top", "top": "observation.images.top"}

pytestmark = pytest.mark.usefixtures("one_thread")


def pretrained_trunk_model() -> ConditionalVAE:
    """A tiny ACT-style model whose camera goes through the folded EfficientNet-Lite0 trunk."""
    torch.manual_seed(0)
    model = ConditionalVAE(from_dict(ModelConfig, {**policy_config(), "normalize": ["qpos", "action"]}))
    model.set_normalization(
        {
            "qpos": (torch.tensor([1.0, -2.0, 3.0]), torch.tensor([2.0, 0.5, 4.0])),
            "action": (torch.full((2,), 5.0), torch.full((2,), 3.0)),
        }
    )
    return model


MODELS = {"act": lambda: build("act"), "pretrained trunk": pretrained_trunk_model}


def observation(image_size, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation.state": rng.normal(size=3).astype(np.float32),
        "observation.images.top": rng.integers(0, 256, (*image_size, 3), dtype=np.uint8),
    }


def policy(model, **options) -> ActionChunkPolicy:
    size = SIZE if "top" in model.condition_encoders else [8, 8]
    return ActionChunkPolicy(model, FEATURES, size, **options)


@pytest.fixture
def bf16_hardware(monkeypatch):
    """As on a CPU with bf16 arithmetic: no warning (the numbers are the same where it is emulated)."""
    monkeypatch.setattr(policy_module, "native_bf16", lambda device: True)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_chunk_is_the_float32_one_within_tolerance(name, bf16_hardware):
    model = MODELS[name]()
    exact, low = policy(model), policy(model, dtype="bfloat16")
    scale = float(model.normalizers["action"].std.min())
    for seed in range(3):
        seen = observation(exact.image_size, seed)
        fp32, bf16 = exact.predict_action_chunk(seen), low.predict_action_chunk(seen)
        assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
        difference = float((bf16 - fp32).abs().max()) / scale
        assert 0 < difference < TOLERANCE  # > 0: the products did run in bf16
    action = low.select_action(observation(exact.image_size))
    assert action.dtype == np.float32 and action.shape == (exact.action_dim,)
    # The model the policy was given stays float32, for whoever else uses it.
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_float32_is_the_models_own_output(bf16_hardware):
    model = build("act")
    seen = observation([8, 8])
    policies = [policy(model), policy(model, dtype="float32"), policy(model, dtype=torch.float32)]
    chunks = [p.predict_action_chunk(seen) for p in policies]
    batch, _ = policies[0].model_inputs(seen)
    with torch.inference_mode():
        expected = model.sample(batch, latent="mean")["action"]
    assert all(torch.equal(chunk, expected) for chunk in chunks)
    assert policies[0].dtype == torch.float32 and policy(model, dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", ["float16", "bf16", "fp32", torch.float16, torch.float64, 16, None])
def test_a_wrong_dtype_is_named(dtype):
    with pytest.raises(ConfigError, match=r"dtype: expected one of \['bfloat16', 'float32'\]"):
        policy(build("act"), dtype=dtype)
    with pytest.raises(ConfigError, match="dtype: expected"):
        ActionChunkPolicy.from_pretrained("no/such/folder", dtype=dtype)


def test_bf16_is_for_the_torch_network_only():
    with pytest.raises(ConfigError, match="dtype: 'bfloat16' needs backend='torch'"):
        ActionChunkPolicy.from_pretrained("no/such/folder", backend="onnxruntime", dtype="bfloat16")
    network = policy(build("act")).network  # any ChunkNetwork that is not a ConditionalVAE
    with pytest.raises(ConfigError, match="dtype: 'bfloat16' applies to a ConditionalVAE"):
        ActionChunkPolicy(network, FEATURES, [8, 8], dtype="bfloat16")


def test_emulated_bf16_warns_and_float32_does_not(monkeypatch):
    monkeypatch.setattr(policy_module, "native_bf16", lambda device: False)
    model = build("act")
    with pytest.warns(RuntimeWarning, match="no bf16 arithmetic.*Use dtype='float32'"):
        policy(model, dtype="bfloat16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        policy(model).predict_action_chunk(observation([8, 8]))


def test_native_bf16_reads_the_cpu_capabilities(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True, "avx512_bf16": False})
    assert not policy_module.native_bf16(torch.device("cpu"))
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True})
    assert policy_module.native_bf16(torch.device("cpu"))
