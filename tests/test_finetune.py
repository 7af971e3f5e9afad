"""Fine-tuning: starting from a trained model folder (strict and partial), freezing, learning-rate
multipliers by pattern, a condition added to a trained model, and LoRA adapters."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_training import MODEL, run_config, weights

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict
from cvae_bridge.config import LoRAConfig
from cvae_bridge.errors import CheckpointError, ConfigError
from cvae_bridge.training import Trainer, train
from cvae_bridge.training.finetune import add_lora, load_adapter, merge_lora

UNCONDITIONAL = {**MODEL, "conditions": {}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small label-conditioned model, trained for 6 steps."""
    out = tmp_path_factory.mktemp("base")
    train(run_config(out, steps=6))
    return out / "model"


def test_strict_start_loads_every_tensor(trained, tmp_path):
    trainer = Trainer(run_config(tmp_path / "run", steps=2, init_from=str(trained)))
    started = {k: v for k, v in trainer.unwrapped.state_dict().items()}
    assert all(torch.equal(started[k], v) for k, v in load_file(str(trained / "model.safetensors")).items())
    report = trainer.init_report
    assert report["new"] == report["dropped"] == report["mismatched"] == [] and len(report["loaded"]) == len(
        started
    )
    trainer.fit()
    saved = json.loads((tmp_path / "run" / "init.json").read_text())
    assert saved["init_from"] == str(trained) and len(saved["weights_sha256"]) == 64


def test_strict_start_names_what_differs_and_writes_nothing(trained, tmp_path):
    other = {**MODEL, "latent_dim": 6}
    with pytest.raises(CheckpointError, match=r"init_from=.*shape mismatches .*saved \(8,\), model \(12,\)"):
        Trainer(run_config(tmp_path / "run", model=other, init_from=str(trained)))
    with pytest.raises(CheckpointError, match="no such folder"):
        Trainer(run_config(tmp_path / "run", init_from=str(tmp_path / "missing")))
    assert not (tmp_path / "run").exists()


def test_a_condition_added_to_a_trained_model_starts_fresh_and_trains(tmp_path):
    train(run_config(tmp_path / "base", model=UNCONDITIONAL, steps=4))
    settings = {"init_from": str(tmp_path / "base" / "model"), "init_strict": False, "steps": 4}
    result = train(run_config(tmp_path / "run", **settings))
    report = json.loads((tmp_path / "run" / "init.json").read_text())
    # New: the label's encoder and type embedding, and the decoder's pooling of conditions, which
    # an unconditional decoder does not have; resized: the layers that now read the label too.
    assert all(
        k.startswith(("condition_encoders.label.", "type_embeddings.label", "decoders.image.pool."))
        for k in report["new"]
    )
    assert [m.split(":")[0] for m in report["mismatched"]] == [
        "decoders.image.input.weight",
        "posterior.net.0.weight",
    ]
    assert not report["dropped"] and result.status == "completed"
    assert {"target_encoders.image.net.0.weight", "heads.image.project.weight"} & set(report["loaded"])


def test_frozen_modules_keep_their_weights_bitwise(trained, tmp_path):
    result = train(
        run_config(
            tmp_path / "run", steps=3, init_from=str(trained), freeze=["target_encoders.*", "decoders.*"]
        )
    )
    before, after = load_file(str(trained / "model.safetensors")), weights(tmp_path / "run")
    frozen = [k for k in before if k.startswith(("target_encoders.", "decoders."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("heads."))
    assert result.status == "completed"
    counts = json.loads((tmp_path / "run" / "parameters.json").read_text())
    assert counts["frozen"] == sum(before[k].numel() for k in frozen) and counts["lora_layers"] == 0
    assert counts["trainable"] == sum(t.numel() for t in before.values()) - counts["frozen"]


def test_unknown_patterns_are_errors_that_list_the_names(tmp_path):
    with pytest.raises(ConfigError, match=r"train.freeze: 'encoder\.\*' matches no module; modules include"):
        Trainer(run_config(tmp_path / "a", freeze=["encoder.*"]))
    with pytest.raises(ConfigError, match=r"train.lr_multipliers: 'nothing\.\*' matches no parameter"):
        Trainer(run_config(tmp_path / "b", lr_multipliers={"nothing.*": 0.1}))


def test_learning_rate_multipliers_by_pattern(tmp_path):
    trainer = Trainer(run_config(tmp_path / "a", lr_multipliers={"decoders.*": 0.1}))
    rates = sorted(group["initial_lr"] for group in trainer.optimizer.param_groups)  # before warm-up
    base = trainer.config.train.lr
    assert rates == pytest.approx(sorted([base, base * 0.1]))


def test_merged_lora_adapters_give_the_adapted_outputs():
    torch.manual_seed(0)
    model = ConditionalVAE(from_dict(ModelConfig, MODEL))
    plain_keys = set(model.state_dict())
    adapted = add_lora(model, LoRAConfig(rank=2, targets=["decoders.*", "heads.*"]))
    assert adapted and all(n.startswith(("decoders.", "heads.")) for n in adapted)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    for name, param in model.named_parameters():  # peft starts B at zero: make the adapters do something
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    batch = {"label": torch.arange(4) % 10, "image": torch.rand(4, 1, 8, 8)}
    model.eval()
    torch.manual_seed(1)
    with torch.no_grad():
        before = model(batch)
    merge_lora(model)
    assert set(model.state_dict()) == plain_keys
    torch.manual_seed(1)
    with torch.no_grad():
        after = model(batch)
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=1e-4, atol=1e-4)


def test_a_lora_run_changes_only_the_adapted_layers_and_exports_a_plain_model(trained, tmp_path):
    lora = {"rank": 2, "targets": ["decoders.*"]}
    result = train(run_config(tmp_path / "run", steps=3, init_from=str(trained), lora=lora))
    before, after = load_file(str(trained / "model.safetensors")), weights(tmp_path / "run")
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("decoders.") and k.endswith("weight") for k in changed)
    ConditionalVAE.from_pretrained(result.model_dir)
    with pytest.raises(ConfigError, match=r"train.lora.targets: 'posterior\.out' matches no trainable"):
        Trainer(run_config(tmp_path / "bad", lora={"targets": ["posterior.out"]}))


def test_an_adapter_only_folder_loads_as_the_merged_model(trained, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(trained, base)
    lora = {"rank": 2, "targets": ["decoders.*"]}
    merged = train(run_config(tmp_path / "merged", steps=3, init_from=str(base), lora=lora))
    alone = train(run_config(tmp_path / "alone", steps=3, init_from=str(base), lora={**lora, "merge": False}))
    assert sorted(p.name for p in alone.model_dir.iterdir()) == [
        "adapter.safetensors",
        "adapter_config.json",
        "run_config.json",
    ]
    assert (alone.model_dir / "adapter.safetensors").stat().st_size < (
        base / "model.safetensors"
    ).stat().st_size
    expected = ConditionalVAE.from_pretrained(merged.model_dir).state_dict()
    # The base is named relative to the adapter folder: both moved together still load.
    assert json.loads((alone.model_dir / "adapter_config.json").read_text())["base_model"] == "../../base"
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copytree(base, moved / "base")
    shutil.copytree(alone.model_dir, moved / "alone" / "model")
    for folder in (alone.model_dir, moved / "alone" / "model"):
        for key, value in load_adapter(folder).state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)

    save_file(
        {k: v + 1 for k, v in load_file(str(base / "model.safetensors")).items()},
        str(base / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match="base model .* has changed since the adapters were trained"):
        load_adapter(alone.model_dir)
    with pytest.raises(ConfigError, match="merge: false saves adapters for a base model"):
        Trainer(run_config(tmp_path / "x", lora={**lora, "merge": False}))
