"""The generic conditional VAE: loss parts, inference, IWAE, save/load, learning."""

import json

import pytest
import torch
from conftest import TINY_CONFIGS, build, make_batch

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict
from cvae_bridge.config import to_dict
from cvae_bridge.errors import CheckpointError, ConfigError, InputError
from cvae_bridge.hub import FORMAT_VERSION


def test_loss_parts_are_nats_per_example(tiny):
    model = build(tiny)
    out = model(make_batch(tiny), step=0)
    target = next(iter(model.decoders))
    assert out[f"rec_{target}"] > 0 and out["kl"] >= 0
    torch.testing.assert_close(out["nelbo"], out[f"rec_{target}"] + out["kl"])
    out["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad), (
        "a parameter got no gradient"
    )


def test_beta_warmup_and_free_bits():
    config = dict(TINY_CONFIGS["mlp_vae"], kl={"beta": 2.0, "warmup_steps": 100, "free_bits": 0.5})
    model = ConditionalVAE(from_dict(ModelConfig, config))
    assert model.beta(0) == 0.0 and model.beta(50) == 1.0 and model.beta(500) == 2.0
    torch.manual_seed(0)
    out = model(make_batch("mlp_vae"), step=100)
    # With tiny initial KLs every dimension sits below 0.5 nats: the penalised term is 4 x 0.5.
    torch.testing.assert_close(out["loss"], out["rec_image"] + 2.0 * 4 * 0.5)


def test_sample_shapes_and_determinism(tiny):
    model = build(tiny).eval()
    batch = make_batch(tiny, size=2)
    conditions = {n: batch[n] for n in model.condition_encoders}
    samples = model.sample(conditions, num_samples=3)
    target = next(iter(model.decoders))
    rows = (2 if conditions else 1) * 3  # without conditions there is one "example"
    assert samples[target].shape == (rows, *model.decoders[target].event_shape)
    zero = model.sample(conditions, num_samples=2, latent="mean")[target]
    torch.testing.assert_close(zero[0], zero[1])  # z = prior mean: no randomness left


def test_sample_undoes_normalisation():
    model = build("act").eval()
    model.normalizers["action"].set(torch.full((3,), 100.0), torch.full((3,), 1e-6), min_std=1e-6)
    conditions = {n: make_batch("act", 2)[n] for n in ("qpos", "camera")}
    actions = model.sample(conditions, latent="mean")["action"]
    torch.testing.assert_close(actions, torch.full_like(actions, 100.0), atol=1e-3, rtol=0)


def test_action_padding_does_not_count():
    model = build("act").eval()
    batch = make_batch("act")
    changed = dict(batch, action=batch["action"].clone())
    changed["action"][0, 4] += 50.0  # a padded step of example 0
    torch.manual_seed(1)
    a = model(batch)["rec_action"]
    torch.manual_seed(1)
    b = model(changed)["rec_action"]
    torch.testing.assert_close(a, b)


def test_iwae_bounds_elbo_and_tightens():
    model = build("conv_cvae").eval()
    # 50 copies of 4 examples: averages over many draws, so the comparisons are not noise.
    batch = {k: v.repeat(50, *[1] * (v.ndim - 1)) for k, v in make_batch("conv_cvae", size=4).items()}
    torch.manual_seed(0)
    elbo = -model(batch)["nelbo"]
    estimates = []
    for k in (1, 10, 100):
        torch.manual_seed(0)
        estimates.append(model.log_likelihood(batch, num_samples=k, chunk_size=64).mean())
    torch.testing.assert_close(estimates[0], elbo, atol=0.3, rtol=0)  # K = 1 is the ELBO
    assert estimates[0] < estimates[1] < estimates[2], estimates


def test_iwae_chunking_does_not_change_the_estimate():
    model = build("mlp_vae").eval()
    batch = make_batch("mlp_vae", size=3)
    torch.manual_seed(0)
    one = model.log_likelihood(batch, num_samples=20, chunk_size=20)
    torch.manual_seed(0)
    chunked = model.log_likelihood(batch, num_samples=20, chunk_size=7)
    assert one.shape == (3,)
    # Different chunking draws the same number of samples in another order: estimates agree closely.
    torch.testing.assert_close(one, chunked, atol=2.0, rtol=0)


def test_save_load_round_trip(tiny, tmp_path):
    model = build(tiny).eval()
    model.save_pretrained(tmp_path / "m")
    loaded = ConditionalVAE.from_pretrained(tmp_path / "m")
    batch = make_batch(tiny, size=2)
    conditions = {n: batch[n] for n in model.condition_encoders}
    for m in (model, loaded):
        torch.manual_seed(3)
        m.out = m.sample(conditions, num_samples=2)
    for name in model.out:
        assert torch.equal(model.out[name], loaded.out[name])
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION and config["model"]["targets"]


def test_load_is_strict(tmp_path):
    build("mlp_vae").save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config["model"]["targets"]["image"]["decoder"]["hidden"] = [16]
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="shape or dtype mismatch"):
        ConditionalVAE.from_pretrained(tmp_path / "m")
    config["model"]["latent_dim"] = "four"
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="latent_dim"):
        ConditionalVAE.from_pretrained(tmp_path / "m")


def test_missing_and_unexpected_weights_raise(tmp_path):
    from safetensors.torch import load_file, save_file

    model = build("mlp_vae")
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(weights)
    state["extra.weight"] = torch.zeros(1)
    del state[next(iter(state))]
    save_file(state, weights)
    with pytest.raises(CheckpointError, match="missing 1 tensor.*unexpected 1 tensor"):
        ConditionalVAE.from_pretrained(tmp_path / "m")


def test_tiny_model_overfits_a_fixed_batch(tiny):
    """Eighty Adam steps on one batch cut the loss by at least 2.5x."""
    model = build(tiny)
    batch = make_batch(tiny)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    first = model(batch)["loss"].item()
    for _ in range(80):
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    last = min(model(batch)["loss"].item() for _ in range(3))
    assert last < first / 2.5, (first, last)


def test_bad_batches_name_the_key():
    model = build("conv_cvae")
    batch = make_batch("conv_cvae")
    with pytest.raises(InputError, match="missing modality \\['label'\\]"):
        model({"image": batch["image"]})
    with pytest.raises(InputError, match="'image'.*shape"):
        model(dict(batch, image=batch["image"][:, :, :4]))
    bad = batch["image"].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="'image'.*NaN"):
        model(dict(batch, image=bad))
    with pytest.raises(InputError, match="'label'.*integer labels"):
        model(dict(batch, label=batch["label"] + 5))
    with pytest.raises(InputError, match="batch size"):
        model(dict(batch, label=batch["label"][:2]))


def test_config_errors_name_the_key():
    config = dict(TINY_CONFIGS["mlp_vae"], latnet_dim=3)
    with pytest.raises(ConfigError, match="latnet_dim.*valid keys.*latent_dim"):
        from_dict(ModelConfig, config)
    config = dict(TINY_CONFIGS["mlp_vae"], prior={"type": "gaussian_mixture"})
    with pytest.raises(ConfigError, match="prior.type.*known: conditional, standard"):
        from_dict(ModelConfig, config)
    with pytest.raises(ConfigError, match="conditional prior needs at least one condition"):
        ConditionalVAE(from_dict(ModelConfig, dict(TINY_CONFIGS["mlp_vae"], prior={"type": "conditional"})))


def test_a_saved_folder_carries_a_model_card(tmp_path):
    from cvae_bridge.config import RunConfig
    from cvae_bridge.defaults import default_run_config

    run = default_run_config()
    run = from_dict(
        RunConfig, {**to_dict(run), "data": {"type": "imagefolder", "root": str(tmp_path / "my_pictures")}}
    )
    build("mlp_vae").save_pretrained(tmp_path / "m", run)
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: cvae-bridge\n") and "ConditionalVAE.from_pretrained" in card
    assert "`imagefolder`, `my_pictures`" in card and str(tmp_path) not in card  # no local folders
    ConditionalVAE.from_pretrained(tmp_path / "m")  # the card is beside the weights, not in the way
