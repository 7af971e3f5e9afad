"""The Accelerate training loop: exact resume, checkpoints, non-finite losses, accumulation."""

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from cvae_bridge import ConditionalVAE, ModelConfig, from_dict
from cvae_bridge.config import RunConfig, to_dict
from cvae_bridge.errors import CheckpointError, ConfigError, NonFiniteLossError
from cvae_bridge.training import Trainer, train
from cvae_bridge.training.checkpoints import list_checkpoints
from cvae_bridge.training.optimizer import lr_factor
from cvae_bridge.training.sampler import EpochBatchSampler

MODEL = {
    "d_model": 32,
    "latent_dim": 4,
    "conditions": {"label": {"type": "vector", "num_classes": 10}},
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


def run_config(out, model=MODEL, **train):
    settings = {
        "output_dir": str(out),
        "steps": 30,
        "batch_size": 64,
        "log_every": 5,
        "eval_every": 0,
        "checkpoint_every": 5,
        "progress_bar": False,
        "trackers": [],
        "warmup_steps": 5,
        **train,
    }
    return from_dict(
        RunConfig, {"model": model, "data": {"type": "digits", "binarize": "dynamic"}, "train": settings}
    )


def weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


def interrupt_at(monkeypatch, at_step):
    """Deliver a real SIGINT to this process during optimiser step `at_step`."""
    original = Trainer._step

    def step(self, batches, step):
        if step == at_step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, batches, step)

    monkeypatch.setattr(Trainer, "_step", step)


SHARPEN = {"image": {"adversarial_weight": 0.5, "discriminator_widths": [4], "start_step": 3}}


@pytest.mark.parametrize(
    "settings",
    [{}, {"grad_accum": 2, "num_workers": 2}, {"sharpen": SHARPEN}],
    ids=["plain", "accumulated", "sharpened"],
)
def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, monkeypatch, settings):
    """22 batches per epoch: the run crosses epochs, and is interrupted mid-epoch by SIGINT. With
    a discriminator, its weights and optimiser state come back from the checkpoint too."""
    train(run_config(tmp_path / "a", **settings))
    interrupt_at(monkeypatch, 12)
    first = train(run_config(tmp_path / "b", **settings))
    assert first.status == "interrupted" and first.step == 13
    # The stopped run exported the model of its last step, the card says which.
    exported = ConditionalVAE.from_pretrained(first.model_dir).state_dict()
    checkpoint = load_file(str(list_checkpoints(tmp_path / "b")[-1] / "model.safetensors"))
    assert checkpoint and all(torch.equal(exported[k], v) for k, v in checkpoint.items())
    assert "step 13 of 30" in (first.model_dir / "README.md").read_text()
    monkeypatch.undo()
    resumed = train(run_config(tmp_path / "b", **settings), resume=True)
    assert resumed.status == "completed" and resumed.step == 30
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_checkpoints_rotate_and_runs_are_not_overwritten(tmp_path):
    train(run_config(tmp_path, steps=12, checkpoint_every=3, keep_checkpoints=2))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000009", "step_00000012"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]
    with pytest.raises(CheckpointError, match="already holds checkpoints.*--resume"):
        train(run_config(tmp_path, steps=12))


def nan_at(monkeypatch, at_step):
    original = ConditionalVAE.forward

    def forward(self, batch, step=None, **options):
        out = original(self, batch, step, **options)
        if step == at_step:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(ConditionalVAE, "forward", forward)


def test_nonfinite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    nan_at(monkeypatch, 7)
    with pytest.raises(NonFiniteLossError, match="step 8: non-finite loss.*step_00000005"):
        train(run_config(tmp_path))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005"]
    load_file(str(list_checkpoints(tmp_path)[0] / "model.safetensors"))  # intact and readable


def test_nonfinite_loss_can_be_skipped(tmp_path, monkeypatch, capsys):
    nan_at(monkeypatch, 7)
    result = train(run_config(tmp_path, steps=10, on_nonfinite="skip"))
    assert result.status == "completed"
    assert "skipping step 8" in capsys.readouterr().out
    assert all(torch.isfinite(t).all() for t in weights(tmp_path).values())


@pytest.mark.parametrize("on_device", [True, False], ids=["fused", "host"])
def test_a_nonfinite_step_is_skipped(tmp_path, monkeypatch, on_device):
    """The fused AdamW skips the update itself (found_inf), else (fp16's grad scaler, an optimiser
    without the fused kernel) the host does: the weights, the optimiser's step count and the EMA
    stay as they were; the step's figures say it was skipped."""
    trainer = Trainer(run_config(tmp_path, ema_decay=0.9, max_grad_norm=1.0))
    assert trainer._skip_on_device
    trainer._skip_on_device = on_device
    batches = trainer._batches(0)
    trainer._train_mode()
    trainer._step([next(batches)], 0)

    def state():
        weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        steps = [s["step"].item() for s in trainer.optimizer.optimizer.state.values()]
        return weights, steps, {n: t.clone() for n, t in trainer.ema.shadow.items()}

    weights, steps, shadow = state()
    nan_at(monkeypatch, 1)
    skipped = trainer._step([next(batches)], 1)
    assert skipped.values[-1].item() == 1 and skipped.values[skipped.names.index("loss")].isnan()
    after = state()
    assert all(torch.equal(weights[n], after[0][n]) for n in weights) and after[1] == steps == [1] * len(
        steps
    )
    assert all(torch.equal(shadow[n], after[2][n]) for n in shadow)
    monkeypatch.undo()
    assert trainer._step([next(batches)], 2).values[-1].item() == 0
    assert state()[1] == [2] * len(steps) and any(not torch.equal(weights[n], state()[0][n]) for n in weights)


def test_a_step_reads_nothing_on_the_host(tmp_path):
    """No figure of Trainer._step is read on the host (each read waits for a GPU): they are read
    on log, evaluation and checkpoint steps. (The model's own input checks are not counted.)"""
    from torch.overrides import TorchFunctionMode

    reads = []
    methods = {torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.numpy}
    methods |= {torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__}

    class Reads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in methods:
                ours = [f for f in traceback.extract_stack() if "cvae_bridge" in f.filename]
                if ours and "training" in Path(ours[-1].filename).parts:
                    reads.append(f"{func.__name__} at {ours[-1].filename}:{ours[-1].lineno}")
            return func(*args, **(kwargs or {}))

    trainer = Trainer(run_config(tmp_path, ema_decay=0.9, max_grad_norm=1.0, grad_accum=2))
    batches = trainer._batches(0)
    micro_batches = [next(batches), next(batches)]
    trainer._train_mode()
    with Reads():
        trainer._step(micro_batches, 0)
    assert not reads


def test_logged_figures_are_the_means_of_the_steps(tmp_path):
    runs = {}
    for log_every in (1, 3):
        out = tmp_path / str(log_every)
        train(run_config(out, steps=6, log_every=log_every, max_grad_norm=1.0, grad_accum=2, batch_size=16))
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        runs[log_every] = [row for row in rows if row["split"] == "train"]
    assert len(runs[3]) == 2
    for i, row in enumerate(runs[3]):
        steps = runs[1][3 * i : 3 * i + 3]
        for key in ("loss", "kl", "grad_norm"):
            assert row[key] == pytest.approx(sum(s[key] for s in steps) / 3, rel=1e-12, abs=0)


def clipped_gradients(trainer, micro_batches):
    """Run one optimiser step; return the gradients the optimiser saw and the number of clips."""
    seen, clips = {}, []
    step, clip = trainer.optimizer.step, trainer.accelerator.clip_grad_norm_

    def record(*args, **kwargs):
        seen.update({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        return step(*args, **kwargs)

    def count(*args, **kwargs):
        clips.append(1)
        return clip(*args, **kwargs)

    trainer.optimizer.step, trainer.accelerator.clip_grad_norm_ = record, count
    trainer._step(micro_batches, 0)
    return seen, len(clips)


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    """Deterministic model: two micro-batches of 16 give the gradient of one batch of 32, clipped
    once, after accumulation."""
    model = dict(MODEL, deterministic=True)
    big = Trainer(run_config(tmp_path / "big", model=model, batch_size=32, max_grad_norm=0.5))
    accumulated = Trainer(
        run_config(tmp_path / "acc", model=model, batch_size=16, grad_accum=2, max_grad_norm=0.5)
    )
    micro = accumulated._batches(0)
    a, clips_a = clipped_gradients(big, [next(big._batches(0))])
    b, clips_b = clipped_gradients(accumulated, [next(micro), next(micro)])
    assert clips_a == clips_b == 1
    assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in b.values()])) == pytest.approx(
        0.5, rel=1e-4
    )
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-4)


def test_ema_weights_are_exported(tmp_path):
    result = train(run_config(tmp_path, steps=10, ema_decay=0.9))
    raw = load_file(str(list_checkpoints(tmp_path)[-1] / "model.safetensors"))
    exported = weights(tmp_path)
    assert result.model_dir == tmp_path / "model"
    assert any(not torch.equal(raw[k], exported[k]) for k in raw)
    assert (list_checkpoints(tmp_path)[-1] / "ema.safetensors").is_file()


def test_bf16_mixed_precision_on_cpu(tmp_path):
    result = train(run_config(tmp_path, steps=4, mixed_precision="bf16"))
    assert result.status == "completed" and result.metrics["loss"] == pytest.approx(result.metrics["loss"])


def test_mixed_precision_follows_the_launcher_unless_the_config_names_one(tmp_path, monkeypatch, capsys):
    from cvae_bridge.training.trainer import Trainer

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch` sets
    assert Trainer(run_config(tmp_path / "auto")).accelerator.mixed_precision == "bf16"
    assert Trainer(run_config(tmp_path / "no", mixed_precision="no")).accelerator.mixed_precision == "no"
    assert (
        "train.mixed_precision='no' overrides the launcher's --mixed_precision bf16"
        in capsys.readouterr().out
    )
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    assert Trainer(run_config(tmp_path / "plain")).accelerator.mixed_precision == "no"


def test_trackers_are_checked_before_the_run_starts(tmp_path, monkeypatch):
    import accelerate.tracking

    from cvae_bridge.errors import DependencyError

    with pytest.raises(ConfigError, match=r"train.trackers\[0\]: unknown tracker 'tensorbord'"):
        train(run_config(tmp_path / "a", trackers=["tensorbord"]))
    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["tensorboard"])
    with pytest.raises(DependencyError, match=r"train.trackers\[1\]: 'wandb' is not installed"):
        train(run_config(tmp_path / "b", trackers=["tensorboard", "wandb"]))
    assert not (tmp_path / "b").exists()


def test_every_checkpoint_is_also_a_model_folder(tmp_path):
    result = train(run_config(tmp_path, steps=4, checkpoint_every=2, keep_checkpoints=5))
    final = ConditionalVAE.from_pretrained(result.model_dir)
    for step in (2, 4):
        folder = tmp_path / "checkpoints" / f"step_{step:08d}"
        model = ConditionalVAE.from_pretrained(folder)
        assert (folder / "run_config.json").is_file() and (folder / "README.md").is_file()
    # The last checkpoint holds the exported weights (no EMA in this run).
    for a, b in zip(model.state_dict().values(), final.state_dict().values()):
        assert torch.equal(a, b)


def test_logs_samples_and_config_are_written(tmp_path):
    train(run_config(tmp_path, steps=10, eval_every=5, eval_batches=2, trackers=["tensorboard"]))
    assert (tmp_path / "samples" / "step_00000010.png").is_file()
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert any('"split": "val"' in line for line in lines) and any(
        '"split": "train"' in line for line in lines
    )
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "logs").rglob("*"))
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["train"]["steps"] == 10
    loaded = ConditionalVAE.from_pretrained(tmp_path / "model")
    assert from_dict(ModelConfig, to_dict(loaded.config)) == loaded.config


def test_log_gives_the_share_of_time_spent_waiting_for_data(tmp_path, monkeypatch):
    """data_wait: the fraction of each logging interval blocked on the data loader."""
    from cvae_bridge.data.base import PairedDataset

    train(run_config(tmp_path / "fast", steps=10, batch_size=8))
    original = PairedDataset.__getitem__
    monkeypatch.setattr(
        PairedDataset, "__getitem__", lambda self, key: time.sleep(0.05) or original(self, key)
    )
    train(run_config(tmp_path / "slow", steps=10, batch_size=8))
    waits = {}
    for run in ("fast", "slow"):
        rows = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        waits[run] = [row["data_wait"] for row in rows if row["split"] == "train"]
        assert len(waits[run]) == 2 and all(0 <= w <= 1 for w in waits[run])
    # 400 ms of sleep per step: well above a tiny step's compute, even on a CPU shared with other jobs
    assert min(waits["slow"]) > 0.3 and min(waits["slow"]) > max(waits["fast"])


def test_two_processes_with_accelerate_launch(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(to_dict(run_config(tmp_path / "run", steps=6, batch_size=16, checkpoint_every=3)))
    )
    # `--multi_gpu` selects Accelerate's torchrun launcher; without a GPU it forms a CPU group.
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "cvae_bridge.cli",
        "train",
        str(config),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = yaml.safe_load(
        (tmp_path / "run" / "checkpoints" / "step_00000006" / "trainer_state.json").read_text()
    )
    assert len(state["rng"]) == 2  # both processes saved their random state
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_sampler_shards_are_disjoint_and_resumable():
    shards = [list(EpochBatchSampler(100, 8, seed=3, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 6
    flat = [i for shard in shards for batch in shard for _, i in batch]
    assert len(flat) == len(set(flat)) == 96
    sampler = EpochBatchSampler(100, 8, seed=3)
    full = list(sampler)
    sampler.set_position(0, 4)
    assert list(sampler) == full[4:]
    sampler.set_position(1, 0)
    assert list(sampler) != full and all(e == 1 for batch in sampler for e, _ in batch)


def test_lr_schedule():
    assert lr_factor(0, 10, 100, "cosine", 0.0) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(70, 10, 100, "constant", 0.0) == 1.0
