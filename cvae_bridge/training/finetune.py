"""Fine-tuning: start a run from a trained model folder, and choose which parts train.

train.init_from: DIR          the folder's weights (normalisation statistics included) go into the
                              model the run config builds; strict by default
train.init_strict: false      tensors of new or resized components start fresh; `init.json` in the
                              run folder lists what was loaded, what is new, what was dropped
train.freeze: [glob, ...]     module names (`condition_encoders.*`, `decoders.image`) whose weights
                              stay as loaded; they also stay in eval mode (batch norm, dropout)
train.lr_multipliers: {glob: factor}   parameter names -> factor of train.lr
train.lora: {rank, alpha, targets}     LoRA adapters (peft) on matching layers, the rest frozen;
                              merged into the weights of the exported model, or (merge: false)
                              saved alone with the name and hash of their base model: load_adapter
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..config import LoRAConfig, RunConfig, from_dict, to_dict
from ..errors import CheckpointError, ConfigError, DependencyError
from ..hub import WEIGHTS_NAME, read_json, read_weights, saved_state, write_run_config
from ..utils.files import atomic_directory


def load_initial_weights(model: torch.nn.Module, directory: str | Path, strict: bool) -> dict[str, Any]:
    """Load a model folder's weights into `model`; returns the report written as init.json.

    Strict: every tensor the model saves must be in the folder with the same shape, and nothing more.
    Otherwise the tensors present with the same shape are loaded and the rest start fresh.
    """
    directory = Path(directory)
    where = f"train.init_from={str(directory)!r}"
    if not directory.is_dir():
        raise CheckpointError(f"{where}: no such folder (expected a model folder written by training)")
    try:
        state = read_weights(directory)
    except CheckpointError as error:
        raise CheckpointError(f"{where}: {error}") from error
    weights = directory / WEIGHTS_NAME
    expected = saved_state(model)
    same = sorted(k for k in expected.keys() & state.keys() if expected[k].shape == state[k].shape)
    mismatched = sorted(
        f"{k}: saved {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected.keys() & state.keys()
        if expected[k].shape != state[k].shape
    )
    new = sorted(expected.keys() - state.keys())
    dropped = sorted(state.keys() - expected.keys())
    if strict and (mismatched or new or dropped):
        raise CheckpointError(
            f"{where} does not match the model of this run config: shape mismatches {mismatched[:5]}, "
            f"missing from the folder {new[:5]}, not in the model {dropped[:5]} "
            f"({len(mismatched)}, {len(new)}, {len(dropped)} in all); set train.init_strict: false to load "
            f"what matches and start the rest fresh"
        )
    model.load_state_dict({k: state[k] for k in same}, strict=False)
    return {
        "init_from": str(directory),
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "strict": strict,
        "loaded": same,
        "new": new,
        "dropped": dropped,
        "mismatched": mismatched,
    }


def freeze(model: torch.nn.Module, patterns: list[str]) -> list[str]:
    """Stop gradients to the modules whose names match a glob; returns their names. A pattern that
    matches nothing is an error listing the model's top module names."""
    names = [n for n, _ in model.named_modules() if n]
    frozen = []
    for pattern in patterns:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            top = sorted({n.rsplit(".", 1)[0] for n in names if n.count(".") <= 1})
            raise ConfigError(f"train.freeze: {pattern!r} matches no module; modules include {top}")
        frozen += matched
    for name in frozen:
        model.get_submodule(name).requires_grad_(False)
    return frozen


def lr_factor_of(name: str, patterns: dict[str, float], declared: dict[str, float]) -> float:
    """The learning-rate factor of parameter `name`: the first matching train.lr_multipliers glob,
    else what the model declares for its submodule (a fine-tuned backbone), else 1."""
    for pattern, factor in patterns.items():
        if fnmatch.fnmatchcase(name, pattern):
            return factor
    return next((f for prefix, f in declared.items() if name.startswith(prefix + ".")), 1.0)


def check_lr_patterns(model: torch.nn.Module, patterns: dict[str, float]) -> None:
    names = [n for n, _ in model.named_parameters()]
    for pattern, factor in patterns.items():
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"train.lr_multipliers: {pattern!r} matches no parameter; e.g. {names[:5]}")
        if not factor >= 0:
            raise ConfigError(f"train.lr_multipliers: {pattern!r} needs a factor >= 0, got {factor}")


def add_lora(model: torch.nn.Module, config: LoRAConfig) -> list[str]:
    """Wrap the Linear and Conv2d layers matching `config.targets` with LoRA adapters (peft) and
    freeze every other weight; returns the wrapped module names. Attention's output projection is
    left out: nn.MultiheadAttention reads its weight directly, so an adapter there would do nothing."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model
    except ImportError as error:
        raise DependencyError(
            'train.lora needs peft: pip install "cvae-bridge[finetune]" (or pip install peft)'
        ) from error
    attention = {
        f"{n}.out_proj" for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)
    }
    layers = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)
        and n not in attention
        and any(p.requires_grad for p in m.parameters())
    ]
    names = []
    for pattern in config.targets:
        matched = [n for n in layers if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(
                f"train.lora.targets: {pattern!r} matches no trainable Linear or Conv2d layer; e.g. {layers[:8]}"
            )
        names += [n for n in matched if n not in names]
    model.requires_grad_(False)
    settings = PeftLoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=names
    )
    inject_adapter_in_model(settings, model)  # only the adapters' weights train
    return names


def merge_lora(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every adapter into the layer it wraps and put the plain layer back, in place: the
    model then has the structure (and state-dict keys) of one built from its config."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    return model


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter.safetensors"


def save_adapter(
    model: torch.nn.Module, directory: str | Path, run: RunConfig, report: dict[str, Any]
) -> Path:
    """An adapter-only folder: the LoRA weights, their settings and the base model they adapt
    (its folder and the SHA-256 of its weights, from the run's init report)."""
    # The base model's folder relative to the adapter folder (written beside where it ends up),
    # as a saved run config holds its paths: no absolute path of this machine.
    base = os.path.relpath(os.path.abspath(report["init_from"]), os.path.abspath(directory))
    config = {
        "format": "cvae_bridge-lora",
        "base_model": base,
        "base_weights_sha256": report["weights_sha256"],
        "lora": to_dict(run.train.lora),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if "lora_" in k}
    with atomic_directory(directory) as temporary:
        (temporary / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
        save_file(state, str(temporary / ADAPTER_WEIGHTS))
        write_run_config(run, temporary)
    return Path(directory)


def load_adapter(directory: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The base model named by an adapter folder with the adapters merged in, ready for inference
    (the same model a `merge: true` run exports)."""
    from ..model import ConditionalVAE

    directory = Path(directory)
    path = directory / ADAPTER_CONFIG
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: an adapter folder is written by a run with train.lora.merge: false"
        )
    config = read_json(path)
    kinds = {"base_model": str, "base_weights_sha256": str, "lora": dict}
    if not isinstance(config, dict) or not all(isinstance(config.get(k), t) for k, t in kinds.items()):
        raise CheckpointError(
            f"{path}: expected a JSON object with base_model (a folder), base_weights_sha256 and lora"
        )
    # Relative to the adapter folder; an absolute one (as earlier versions wrote) stays as it is.
    base = Path(os.path.normpath(directory / config["base_model"]))
    digest = (
        hashlib.sha256((base / WEIGHTS_NAME).read_bytes()).hexdigest()
        if (base / WEIGHTS_NAME).is_file()
        else None
    )
    if digest != config["base_weights_sha256"]:
        raise CheckpointError(
            f"{path}: the base model {base} is missing or has changed since the adapters were trained "
            f"(weights SHA-256 {digest}, expected {config['base_weights_sha256']})"
        )
    model = ConditionalVAE.from_pretrained(base)
    add_lora(model, from_dict(LoRAConfig, config["lora"], path=f"{path}:lora"))
    missing, unexpected = model.load_state_dict(load_file(str(directory / ADAPTER_WEIGHTS)), strict=False)
    missing = [k for k in missing if "lora_" in k]
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / ADAPTER_WEIGHTS}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return merge_lora(model).to(device).eval()
