"""Strict dataclass configs, read from and written to YAML / JSON.

Every pluggable part (encoder, decoder, likelihood, posterior, prior, dataset) has a config class
deriving from one of the `*Config` bases below and carrying a `type` that names the registered
class; parsing looks the class up and fills *its* config, so each component sees exactly its own
fields. Unknown keys raise and list the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import yaml

from .errors import ConfigError
from .registry import REGISTRIES
from .utils.files import atomic_write_text

C = TypeVar("C")


# ---------------------------------------------------------------------------------------------
# Component config bases: `kind` selects the registry in which `type` is looked up.


@dataclass
class ComponentConfig:
    type: str = ""
    kind: ClassVar[str] = ""


@dataclass
class EncoderConfig(ComponentConfig):
    kind: ClassVar[str] = "encoder"


@dataclass
class DecoderConfig(ComponentConfig):
    kind: ClassVar[str] = "decoder"


@dataclass
class LikelihoodConfig(ComponentConfig):
    kind: ClassVar[str] = "likelihood"


@dataclass
class PosteriorConfig(ComponentConfig):
    kind: ClassVar[str] = "posterior"
    # Condition modalities the posterior sees besides the targets; None means all of them.
    conditions: list[str] | None = None


@dataclass
class PriorConfig(ComponentConfig):
    kind: ClassVar[str] = "prior"


@dataclass
class DatasetConfig(ComponentConfig):
    kind: ClassVar[str] = "dataset"


def component(base: type[C], type: str, **fields: Any) -> C:
    """Build the config of registered component `type` (of `base`'s kind) from keyword fields."""
    return from_dict(base, {"type": type, **fields})


# ---------------------------------------------------------------------------------------------
# The model and run configs.


@dataclass
class KLConfig:
    beta: float = 1.0
    # beta rises linearly from 0 to `beta` over this many optimiser steps (Bowman et al. 2016).
    warmup_steps: int = 0
    # Free bits (Kingma et al. 2016): nats per latent dimension, batch-averaged, not penalised.
    free_bits: float = 0.0


@dataclass
class SharpenConfig:
    perceptual_weight: float = 0.0  # per example, beside a reconstruction term in nats
    perceptual_resolution: int = 64  # images are resized to this for the feature network
    perceptual_blocks: list[int] = field(
        default_factory=lambda: [0, 2, 4]
    )  # EfficientNet-Lite0 blocks compared
    adversarial_weight: float = 0.0
    discriminator_widths: list[int] = field(default_factory=lambda: [64, 128])
    start_step: int = 0  # optimiser step from which both terms count

    @property
    def enabled(self) -> bool:
        return self.perceptual_weight > 0 or self.adversarial_weight > 0


@dataclass
class TargetConfig:
    encoder: EncoderConfig
    decoder: DecoderConfig
    likelihood: LikelihoodConfig
    weight: float = 1.0
    # How this target enters the optimised loss: "sum" over its elements (a log-likelihood in
    # nats), or "mean" over them (ACT's L1 convention, which its KL weight of 10 assumes).
    # Reported reconstruction terms are always sums, in nats.
    reduction: Literal["sum", "mean"] = "sum"


@dataclass
class ModelConfig:
    targets: dict[str, TargetConfig]
    conditions: dict[str, EncoderConfig] = field(default_factory=dict)
    latent_dim: int = 32
    # Width D of every token: all encoders map their input to (B, N, D).
    d_model: int = 256
    posterior: PosteriorConfig = field(default_factory=lambda: component(PosteriorConfig, "mlp"))
    prior: PriorConfig = field(default_factory=lambda: component(PriorConfig, "standard"))
    kl: KLConfig = field(default_factory=KLConfig)
    # Modalities standardised per feature with dataset statistics kept in the model (ACT-style).
    normalize: list[str] = field(default_factory=list)
    # Deterministic autoencoder: z = posterior mean and no KL term.
    deterministic: bool = False


@dataclass
class LoRAConfig:
    """Low-rank adapters (peft) on the Linear and Conv2d layers whose module names match `targets`;
    everything else is frozen. The exported model has them merged into its weights, or, with
    `merge: false`, is an adapter-only folder that names its base model (train.init_from)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["*"])  # module-name globs
    merge: bool = True

    def __post_init__(self) -> None:
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ConfigError(
                f"lora: expected rank >= 1, alpha > 0 and 0 <= dropout < 1; got {self.rank}, {self.alpha}, {self.dropout}"
            )


@dataclass
class TrainConfig:
    output_dir: str = "runs/mnist_text_to_image"
    seed: int = 0
    steps: int = 3000  # optimiser steps
    batch_size: int = 128  # per process and micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 1e-3
    weight_decay: float = 0.0
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 100  # linear learning-rate warm-up
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    max_grad_norm: float = 1.0  # 0 turns clipping off
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    ema_decay: float = 0.0  # > 0 keeps an exponential moving average of the weights and exports it
    num_workers: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000  # 0: only the final checkpoint
    keep_checkpoints: int = 3
    eval_every: int = 1000  # validation loss and sample grid; 0 turns it off
    eval_batches: int = 10
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient
    trackers: list[Literal["tensorboard", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    cpu: bool = False  # force the CPU even where a GPU is available
    progress_bar: bool = True
    # Target name -> perceptual and adversarial terms for an image target
    # (training/losses.py); none by default.
    sharpen: dict[str, SharpenConfig] = field(default_factory=dict)
    # Fine-tuning (training/finetune.py): start from a model folder's weights, strictly unless
    # init_strict is false; keep modules matching `freeze` globs as loaded; scale the learning rate
    # of parameters matching `lr_multipliers` globs.
    init_from: str | None = None
    init_strict: bool = True
    freeze: list[str] = field(default_factory=list)
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    lora: LoRAConfig | None = None  # adapters instead of full fine-tuning

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.adam_betas) != 2:
            raise ConfigError(f"adam_betas must hold two numbers, got {self.adam_betas}")


@dataclass
class EvalConfig:
    split: Literal["train", "val", "test"] = "test"
    # Which metrics `cvae-bridge eval` computes (those that do not apply to a model are skipped
    # with a note in the table): faithfulness, nll, fid, diversity, diagnostics (of the latent
    # space: KL per dimension, active units, mutual information; diagnostics.py).
    metrics: list[Literal["faithfulness", "nll", "fid", "diversity", "diagnostics"]] = field(
        default_factory=lambda: ["faithfulness", "nll", "fid", "diversity"]
    )
    nll_samples: int = 1000  # K of the importance-weighted bound
    nll_examples: int = 1000  # test examples it is averaged over
    samples_per_prompt: int = 100  # generated images per held-out prompt (faithfulness, diversity)
    fid_samples: int = 2000
    fid_resolution: int = 112  # EfficientNet input size: distances compare only at equal sizes
    # Scales the prior's standard deviation for every generated image (faithfulness, fid,
    # diversity): below 1 trades diversity for fidelity, as Glow's samples at 0.7.
    temperature: float = 1.0
    # Prompts of the sample grids written during training and by `eval` (one row each); empty:
    # the conditions of the first examples of the evaluation split.
    prompts: list[str] = field(default_factory=list)
    grid_columns: int = 8
    classifier_epochs: int = 3


@dataclass
class RunConfig:
    model: ModelConfig
    data: DatasetConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_run_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a run config (YAML) or, without a path, the embedded default; then apply overrides."""
    if path is None:
        from .defaults import default_run_config

        data, source = to_dict(default_run_config()), "default config"
    else:
        data, source = read_yaml(path), str(path)
    data = apply_overrides(data, list(overrides))
    targets = data.get("model", {}).get("targets") if isinstance(data.get("model"), dict) else None
    for name, target in (targets or {}).items():
        if isinstance(target, dict) and "sharpen" in target:
            raise ConfigError(
                f"{source}: model.targets.{name}.sharpen moved to train.sharpen.{name} (the perceptual and "
                f"adversarial terms are training losses, not part of the model); move the block there"
            )
    return from_dict(RunConfig, data, path=source)


# ---------------------------------------------------------------------------------------------
# Parsing.


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        # `True == 1`: without the type check a boolean would pass for an integer choice.
        if value not in args or not any(type(value) is type(a) for a in args):
            raise ConfigError(f"{path}: expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item = args[0] if args else Any
        converted = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return converted if origin is list else tuple(converted)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[C], data: Any, path: str = "config") -> C:
    """Build dataclass `cls` from a plain mapping, strictly: unknown keys and wrong types raise."""
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping for {cls.__name__}, got {data!r}")
    if issubclass(cls, ComponentConfig) and cls.kind:
        type_name = data.get("type")
        if not isinstance(type_name, str) or not type_name:
            raise ConfigError(
                f"{path}.type: every {cls.kind} config needs a `type` naming a registered {cls.kind}"
            )
        try:
            component_cls = REGISTRIES[cls.kind].get(type_name)
        except KeyError as error:
            raise ConfigError(f"{path}.type: {error.args[0]}") from None
        cls = component_cls.Config
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}"
        )
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}: missing required key {name!r} for {cls.__name__}")
    try:
        instance = cls(**values)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: {error}") from error
    return instance


def to_dict(config: Any) -> Any:
    """Plain, YAML/JSON-ready form of a config dataclass (component subclasses included)."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `--set a.b.c=value` overrides (values parsed as YAML) to a plain config mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} holds {child!r}, not a mapping")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return data


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: expected a mapping at the top level, got {type(data).__name__}"
        )
    return data


def write_yaml(config: Any, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None))
