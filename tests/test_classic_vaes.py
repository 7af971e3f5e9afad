"""The classic VAEs as configs, latent-space pictures and collapse diagnostics."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS
from idx_files import idx_folder
from PIL import Image

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict
from cvae_bridge.config import RunConfig, load_run_config, read_yaml
from cvae_bridge.data import build_source
from cvae_bridge.diagnostics import latent_diagnostics, training_diagnostics
from cvae_bridge.evaluation import evaluate
from cvae_bridge.evaluation.pictures import PLANE_SIZE, write_pictures
from cvae_bridge.latent import MLPPosterior
from cvae_bridge.training import train


def unconditioned_or_labelled(path: Path) -> bool:
    # Read as plain YAML: collecting these tests must not depend on every config in the folder.
    conditions = read_yaml(path)["model"].get("conditions") or {}
    return all(c.get("type") == "vector" and c.get("num_classes", 0) > 0 for c in conditions.values())


CLASSIC = sorted(p.stem for p in CONFIGS.glob("*.yaml") if unconditioned_or_labelled(p))
TINY_RUN = [
    "data.limit=64",
    "train.steps=1",
    "train.batch_size=16",
    "train.eval_every=1",
    "train.eval_batches=1",
    "train.checkpoint_every=0",
    "train.trackers=[]",
    "train.progress_bar=false",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """configs/<name>.yaml trained for one step on 64 examples (once per module), -> run folder.
    Fashion-MNIST configs read a 28x28 idx folder written here, not the Debian package."""
    runs = {}
    fashion = tmp_path_factory.mktemp("fashion_idx")
    idx_folder(fashion, gz=True, n_train=64, n_test=16, h=28, w=28)

    def get(name: str) -> Path:
        if name not in runs:
            out = tmp_path_factory.mktemp(name)
            root = (
                [f"data.root={fashion}"]
                if read_yaml(CONFIGS / f"{name}.yaml")["data"]["type"] == "fashion_mnist"
                else []
            )
            train(load_run_config(CONFIGS / f"{name}.yaml", [*TINY_RUN, *root, f"train.output_dir={out}"]))
            runs[name] = out
        return runs[name]

    return get


def log_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_the_classic_configs_are_all_there():
    assert {
        "mlp_vae_mnist",
        "mlp_cvae_mnist",
        "conv_vae_fashion_2d",
        "conv_cvae_fashion_2d",
        "beta_vae",
        "autoencoder",
    } <= set(CLASSIC)


@pytest.mark.parametrize("name", CLASSIC)
def test_config_trains_one_step(trained, name):
    run = trained(name)
    assert (run / "model" / "model.safetensors").is_file()
    train_line, val_line = (
        next(r for r in log_lines(run) if r["split"] == split) for split in ("train", "val")
    )
    assert math.isfinite(train_line["loss"]) and val_line["active_units"] >= 0


def test_classic_settings():
    mlp = load_run_config(CONFIGS / "mlp_vae_mnist.yaml")
    assert (mlp.model.latent_dim, mlp.model.d_model, mlp.model.targets["image"].decoder.hidden) == (
        20,
        400,
        [400],
    )
    assert (mlp.train.lr, mlp.train.batch_size, mlp.data.binarize) == (1e-3, 128, "dynamic")
    assert ConditionalVAE(mlp.model).posterior.net[0].in_features == 400  # no hidden layer: fc21 / fc22
    conv = load_run_config(CONFIGS / "conv_vae_fashion_2d.yaml")
    assert (conv.model.latent_dim, conv.data.type, conv.model.targets["image"].encoder.widths) == (
        2,
        "fashion_mnist",
        [32, 64, 128],
    )
    assert load_run_config(CONFIGS / "beta_vae.yaml", ["model.kl.beta=0.5"]).model.kl.beta == 0.5
    assert list(load_run_config(CONFIGS / "conv_cvae_fashion_2d.yaml").model.conditions) == ["label"]


def test_autoencoder_has_no_kl_and_no_nll(trained, tmp_path):
    run = trained("autoencoder")
    assert all("kl" not in line for line in log_lines(run))
    metrics = evaluate(run / "model", tmp_path, ["eval.nll_samples=2", "eval.nll_examples=4"])
    assert "nll" in metrics["skipped"] and "nll_nats" not in metrics and "kl_total" not in metrics
    assert metrics["active_units"] <= 2 and "latent_grid.png" in metrics["pictures"]


def test_fid_of_an_unconditional_model_samples_at_the_eval_temperature(trained, tmp_path, monkeypatch):
    run = trained("mlp_vae_mnist")  # trained before the spy is in place
    temperatures = []
    sample = ConditionalVAE.sample

    def spy(self, *args, **kwargs):
        temperatures.append(kwargs.get("temperature"))
        return sample(self, *args, **kwargs)

    monkeypatch.setattr(ConditionalVAE, "sample", spy)
    settings = ["eval.metrics=[fid]", "eval.fid_samples=8", "eval.fid_resolution=32", "eval.temperature=0.5"]
    metrics = evaluate(run / "model", tmp_path, settings)
    assert math.isfinite(metrics["fid"]) and temperatures and set(temperatures) == {0.5}


# -- diagnostics on constructed posteriors ----------------------------------------------------------

COPY_MODEL = {
    "d_model": 4,
    "latent_dim": 4,
    "targets": {
        "x": {
            "encoder": {"type": "vector", "shape": [4]},
            "decoder": {"type": "vector", "shape": [4], "hidden": [8]},
            "likelihood": {"type": "gaussian"},
        }
    },
}


def constructed(copy: bool) -> ConditionalVAE:
    """Identity encoder; the posterior either copies x into its mean with a tiny variance, or
    ignores x: q(z | x) = N(0.5, I) for every x."""
    model = ConditionalVAE(from_dict(ModelConfig, COPY_MODEL))
    encoder, head = model.target_encoders["x"].net[0], model.posterior.net[-1]
    with torch.no_grad():
        encoder.weight.copy_(torch.eye(4))
        encoder.bias.zero_()
        head.weight.zero_()
        head.bias.zero_()
        if copy:
            head.weight[:4].copy_(torch.eye(4))
            head.bias[4:] = -12.0  # sigma = exp(-6)
        else:
            head.bias[:4] = 0.5
    return model.eval()


def batches(n: int = 200) -> list[dict]:
    x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))
    return [{"x": part} for part in x.split(64)]


def test_a_posterior_that_ignores_x_has_no_active_unit_and_no_information():
    figures = latent_diagnostics(constructed(copy=False), batches())
    assert figures["active_units"] == 0 and figures["posterior_collapse"]
    assert figures["mutual_info"] == pytest.approx(0.0, abs=1e-5)
    assert figures["kl_per_dim"] == pytest.approx([0.125] * 4)  # KL(N(0.5, 1) || N(0, 1)) = 0.5^2 / 2
    assert training_diagnostics(constructed(copy=False), batches())[1].startswith(
        "posterior collapse: 0 of 4"
    )


def test_a_posterior_that_copies_x_uses_every_unit_and_tells_examples_apart():
    figures = latent_diagnostics(constructed(copy=True), batches())
    assert figures["active_units"] == 4 and not figures["posterior_collapse"]
    # 200 well-separated posteriors: I(x; z) reaches the estimator's ceiling log N.
    assert figures["mutual_info"] == pytest.approx(math.log(200), abs=0.01) and figures[
        "mutual_info_max"
    ] == math.log(200)
    assert training_diagnostics(constructed(copy=True), batches())[1] is None


# -- pictures and the collapse warning --------------------------------------------------------------

TINY_2D = {
    "d_model": 16,
    "latent_dim": 2,
    "targets": {
        "image": {
            "encoder": {
                "type": "image",
                "channels": 1,
                "widths": [8],
                "blocks": 0,
                "tokens": "flat",
                "size": [8, 8],
            },
            "decoder": {"type": "image", "channels": 1, "size": [8, 8], "widths": [8], "blocks": 0},
            "likelihood": {"type": "bernoulli"},
        }
    },
}
LABELLED_2D = {**TINY_2D, "conditions": {"label": {"type": "vector", "num_classes": 10}}}


def digits_test_split():
    return build_source(
        from_dict(RunConfig, {"model": TINY_2D, "data": {"type": "digits", "binarize": "dynamic"}}).data
    ).split("test")


@pytest.mark.parametrize("model_config", [TINY_2D, LABELLED_2D], ids=["unconditioned", "labelled"])
def test_pictures_of_a_2d_latent_model(tmp_path, model_config):
    log = tmp_path / "log.jsonl"
    log.write_text(
        "".join(
            json.dumps(
                {
                    "step": s,
                    "split": split,
                    "rec_image": 50.0 - s,
                    "kl": 1.0 + s / 10,
                    "nelbo": 51.0 - s / 2,
                    "loss": 51.0 - s / 2,
                }
            )
            + "\n"
            for s in (5, 10)
            for split in ("train", "val")
        )
    )
    torch.manual_seed(0)
    written, skipped = write_pictures(
        ConditionalVAE(from_dict(ModelConfig, model_config)).eval(), digits_test_split(), tmp_path, log
    )
    planes = (
        [f"latent_grid_{k}.png" for k in range(10)] if "conditions" in model_config else ["latent_grid.png"]
    )
    assert (
        written
        == ["reconstructions.png", "interpolations.png", "latent_scatter.png", *planes, "loss_curves.png"]
        and not skipped
    )
    sizes = {name: Image.open(tmp_path / name).size for name in written}
    assert sizes["reconstructions.png"] == (
        8 * 12,
        8 * 12,
    )  # 32 inputs and 32 reconstructions, 8 a row, 2-pixel borders
    assert sizes["interpolations.png"] == (12 * 12, 8 * 12)  # 8 pairs: input, 10 steps, input
    assert sizes["latent_scatter.png"] == (700, 600)
    assert sizes["loss_curves.png"] == (3 * 400, 350)  # rec_image, kl, nelbo (the loss equals the -ELBO)
    assert all(sizes[name] == (PLANE_SIZE * 8, PLANE_SIZE * 8) for name in planes)


def test_pictures_that_do_not_apply_are_skipped_with_a_reason(tmp_path):
    model = ConditionalVAE(from_dict(ModelConfig, {**TINY_2D, "latent_dim": 3})).eval()
    written, skipped = write_pictures(model, digits_test_split(), tmp_path, tmp_path / "missing.jsonl")
    assert written == ["reconstructions.png", "interpolations.png"]
    assert (
        skipped["latent_scatter"] == "the latent has 3 dimensions, not 2"
        and "no training log" in skipped["loss_curves"]
    )


def test_collapse_is_reported_in_the_training_log(tmp_path, monkeypatch, capsys):
    def ignore_x(self, parts):  # q(z | x) = N(0, I) whatever x: the collapsed posterior
        zeros = torch.zeros(parts[0].x.shape[0], self.latent_dim)
        return zeros, zeros

    monkeypatch.setattr(MLPPosterior, "forward", ignore_x)
    train(
        from_dict(
            RunConfig,
            {
                "model": TINY_2D,
                "data": {"type": "digits", "binarize": "dynamic"},
                "train": {
                    "output_dir": str(tmp_path),
                    "steps": 4,
                    "batch_size": 32,
                    "eval_every": 2,
                    "eval_batches": 2,
                    "checkpoint_every": 0,
                    "trackers": [],
                    "progress_bar": False,
                },
            },
        )
    )
    warnings = [line for line in log_lines(tmp_path) if line["split"] == "warning"]
    assert [w["step"] for w in warnings] == [2, 4] and "posterior collapse" in warnings[0]["message"]
    assert all(line["active_units"] == 0 for line in log_lines(tmp_path) if line["split"] == "val")
    assert "warning: step 2: posterior collapse" in capsys.readouterr().out
