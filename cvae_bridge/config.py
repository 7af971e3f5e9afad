"""Strict dataclass configs, read from and written to YAML / JSON.

Every pluggable part (encoder, decoder, likelihood, posterior, prior, dataset) has a config class
deriving from one of the `*Config` bases below and carrying a `type` that names the registered
class; parsing looks the class up and fills *its* config, so each component sees exactly its own
fields. Unknown keys raise and list the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

import yaml

from .errors import ConfigError
from .registry import REGISTRIES
from .utils.files import atomic_write_text
from .utils.ranges import (  # the ranges are part of the config's vocabulary: importable from here
    EfficientNetBlock,
    Fraction,
    FractionBelowOne,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Range,
    Seed,
    brief_repr,
    range_of,
)
from .utils.strict_yaml import parse_yaml, read_yaml

C = TypeVar("C")


# ---------------------------------------------------------------------------------------------
# Component config bases: `kind` selects the registry in which `type` is looked up.


@dataclass
class ComponentConfig:
    type: str = ""  # the registered component (`cvae-bridge list` names them)
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
    beta: NonNegativeFloat = 1.0  # weight of the KL term (beta-VAE)
    # beta rises linearly from 0 to `beta` over this many optimiser steps (Bowman et al. 2016).
    warmup_steps: NonNegativeInt = 0
    # Free bits (Kingma et al. 2016): nats per latent dimension, batch-averaged, not penalised.
    free_bits: NonNegativeFloat = 0.0


@dataclass
class SharpenConfig:
    perceptual_weight: NonNegativeFloat = 0.0  # per example, beside a reconstruction term in nats
    perceptual_resolution: PositiveInt = 64  # images are resized to this for the feature network
    perceptual_blocks: list[EfficientNetBlock] = field(
        default_factory=lambda: [0, 2, 4]
    )  # EfficientNet-Lite0 blocks compared
    adversarial_weight: NonNegativeFloat = 0.0  # of a patch discriminator's hinge loss
    discriminator_widths: list[PositiveInt] = field(default_factory=lambda: [64, 128])  # its conv stages
    start_step: NonNegativeInt = 0  # optimiser step from which both terms count

    @property
    def enabled(self) -> bool:
        return self.perceptual_weight > 0 or self.adversarial_weight > 0


@dataclass
class TargetConfig:
    encoder: EncoderConfig  # reads the target into the posterior (training only)
    decoder: DecoderConfig  # generates it from z and the condition tokens
    likelihood: LikelihoodConfig  # the distribution its decoder's output parameterises
    weight: NonNegativeFloat = 1.0  # of this target's reconstruction term in the loss
    # How this target enters the optimised loss: "sum" over its elements (a log-likelihood in
    # nats), or "mean" over them (ACT's L1 convention, which its KL weight of 10 assumes).
    # Reported reconstruction terms are always sums, in nats.
    reduction: Literal["sum", "mean"] = "sum"


@dataclass
class ModelConfig:
    targets: dict[str, TargetConfig]  # modality name -> what the model generates
    conditions: dict[str, EncoderConfig] = field(default_factory=dict)  # modality name -> what it reads
    latent_dim: PositiveInt = 32  # dimensions of z
    # Width D of every token: all encoders map their input to (B, N, D).
    d_model: PositiveInt = 256
    # q(z | x, c): the network from target (and condition) tokens to the latent Gaussian.
    posterior: PosteriorConfig = field(default_factory=lambda: component(PosteriorConfig, "mlp"))
    # N(0, I) ("standard") or learnt p(z | c) ("conditional").
    prior: PriorConfig = field(default_factory=lambda: component(PriorConfig, "standard"))
    kl: KLConfig = field(default_factory=KLConfig)  # the KL term's weight and schedule
    # Modalities standardised per feature with dataset statistics kept in the model (ACT-style).
    normalize: list[str] = field(default_factory=list)
    # Deterministic autoencoder: z = posterior mean and no KL term.
    deterministic: bool = False


# Fields of encoder and decoder configs that give a modality's size (a vector's `shape`, an action
# chunk's `dim`). None leaves the size to the data: training on a robot dataset fills it from the
# dataset's features (data/resolve.py), as LeRobot's ACT takes its sizes from info.json.
SIZE_FIELDS = ("shape", "dim")


def size_fields(model: ModelConfig) -> list[tuple[str, str, Any, str]]:
    """(modality, config path, component config, field name) of every size field of `model`."""
    components = [(name, f"model.conditions.{name}", c) for name, c in model.conditions.items()]
    for name, target in model.targets.items():
        components += [
            (name, f"model.targets.{name}.encoder", target.encoder),
            (name, f"model.targets.{name}.decoder", target.decoder),
        ]
    return [
        (modality, f"{path}.{field}", component, field)
        for modality, path, component in components
        for field in SIZE_FIELDS
        if hasattr(component, field)
    ]


def unset_sizes(model: ModelConfig) -> list[str]:
    """Config paths of the size fields of `model` left unset (None)."""
    return [path for _, path, component, field in size_fields(model) if getattr(component, field) is None]


@dataclass
class LoRAConfig:
    """Low-rank adapters (peft) on the Linear and Conv2d layers whose module names match `targets`;
    everything else is frozen. The exported model has them merged into its weights, or, with
    `merge: false`, is an adapter-only folder that names its base model (train.init_from)."""

    rank: PositiveInt = 8  # r of the low-rank update
    alpha: PositiveFloat = 16.0  # the update is scaled by alpha / rank
    dropout: FractionBelowOne = 0.0  # on the adapters' input
    targets: list[str] = field(default_factory=lambda: ["*"])  # module-name globs
    merge: bool = True  # export a plain model with the adapters merged; false: an adapter folder


@dataclass
class TrainConfig:
    output_dir: str = "runs/mnist_text_to_image"  # the run folder (checkpoints, logs, model/)
    seed: Seed = 0  # of initialisation, data order, dropout and latent noise
    steps: PositiveInt = 3000  # optimiser steps
    batch_size: PositiveInt = 128  # per process and micro-batch
    grad_accum: PositiveInt = 1  # micro-batches per optimiser step
    lr: PositiveFloat = 1e-3  # peak learning rate (AdamW)
    weight_decay: NonNegativeFloat = 0.0  # AdamW's decoupled weight decay
    adam_betas: list[FractionBelowOne] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's two betas
    warmup_steps: NonNegativeInt = 100  # linear learning-rate warm-up
    schedule: Literal["cosine", "constant"] = "cosine"  # after warm-up
    min_lr_ratio: Fraction = 0.0  # the cosine ends at lr * min_lr_ratio
    max_grad_norm: NonNegativeFloat = 1.0  # 0 turns clipping off
    # auto: what `accelerate launch --mixed_precision` (or `accelerate config`) says, else "no".
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    ema_decay: FractionBelowOne = 0.0  # > 0 keeps an exponential moving average of the weights and exports it
    num_workers: NonNegativeInt = 0  # DataLoader worker processes; 0 loads in the training process
    log_every: PositiveInt = 50  # steps between logged (averaged) losses
    checkpoint_every: NonNegativeInt = 1000  # 0: only the final checkpoint
    keep_checkpoints: PositiveInt = 3  # the newest this many are kept
    eval_every: NonNegativeInt = 1000  # validation loss and sample grid; 0 turns it off
    eval_batches: PositiveInt = 10  # validation batches per evaluation
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient
    # Accelerate's trackers (tensorboard, wandb, mlflow, aim, comet_ml, clearml, dvclive, ...);
    # checked against those installed when training starts.
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    cpu: bool = False  # force the CPU even where a GPU is available
    progress_bar: bool = True  # a tqdm bar on stderr
    # Target name -> perceptual and adversarial terms for an image target
    # (training/losses.py); none by default.
    sharpen: dict[str, SharpenConfig] = field(default_factory=dict)
    # Fine-tuning (training/finetune.py).
    init_from: str | None = None  # a model folder whose weights the run starts from
    init_strict: bool = True  # every tensor must match; false: new or resized ones start fresh
    freeze: list[str] = field(default_factory=list)  # module-name globs kept as loaded
    lr_multipliers: dict[str, NonNegativeFloat] = field(default_factory=dict)  # glob -> learning-rate factor
    lora: LoRAConfig | None = None  # adapters instead of full fine-tuning

    def __post_init__(self) -> None:
        # Each value's range is checked when parsed (the annotations); here only their number.
        if len(self.adam_betas) != 2:
            raise ConfigError(f"adam_betas must hold two numbers, got {brief_repr(self.adam_betas)}")


@dataclass
class EvalConfig:
    split: Literal["train", "val", "test"] = "test"  # the data split evaluated
    # Which metrics `cvae-bridge eval` computes (those that do not apply to a model are skipped
    # with a note in the table): faithfulness, nll, fid, diversity, diagnostics (of the latent
    # space: KL per dimension, active units, mutual information; diagnostics.py).
    metrics: list[Literal["faithfulness", "nll", "fid", "diversity", "diagnostics"]] = field(
        default_factory=lambda: ["faithfulness", "nll", "fid", "diversity"]
    )
    nll_samples: PositiveInt = 1000  # K of the importance-weighted bound
    nll_examples: PositiveInt = 1000  # test examples it is averaged over
    samples_per_prompt: PositiveInt = 100  # generated images per held-out prompt (faithfulness, diversity)
    fid_samples: Annotated[int, Range(2)] = 2000  # a covariance needs two
    fid_resolution: PositiveInt = 112  # EfficientNet input size: distances compare only at equal sizes
    # Scales the prior's standard deviation for every generated image (faithfulness, fid,
    # diversity): below 1 trades diversity for fidelity, as Glow's samples at 0.7.
    temperature: PositiveFloat = 1.0
    # Prompts of the sample grids written during training and by `eval` (one row each); empty:
    # the conditions of the first examples of the evaluation split.
    prompts: list[str] = field(default_factory=list)
    grid_columns: PositiveInt = 8  # images per prompt in a sample grid
    classifier_epochs: PositiveInt = 3  # of the classifier trained for faithfulness
    progress_bar: bool = True  # `eval`'s progress, metric by metric, on stderr


@dataclass
class RunConfig:
    model: ModelConfig  # the architecture (saved in config.json)
    data: DatasetConfig  # the training data
    train: TrainConfig = field(default_factory=TrainConfig)  # the optimisation and the run folder
    eval: EvalConfig = field(default_factory=EvalConfig)  # `cvae-bridge eval` and training's sample grids


def load_run_config(path: str | Path | None = None, overrides: list[str] = ()) -> RunConfig:
    """Read a run config (YAML) or, without a path, the embedded default; then apply overrides."""
    if path is None:
        from .defaults import default_run_config

        data, source = to_dict(default_run_config()), "default config"
    else:
        data, source = read_yaml(path), str(path)
    data = drop_removed_modalities(apply_overrides(data, list(overrides)))
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
    if origin is Annotated:
        numeric = range_of(tp)
        if numeric is not None:
            return numeric[1].check(numeric[0], value, path)
        return _convert(args[0], value, path)
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
            raise ConfigError(f"{path}: expected one of {list(args)}, got {brief_repr(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {brief_repr(value)}")
        item = args[0] if args else Any
        converted = [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return converted if origin is list else tuple(converted)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {brief_repr(value)}")
        return {str(k): _convert(args[1], v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        # YAML 1.1's other spellings, which the reader leaves as strings (see _StrictLoader).
        if isinstance(value, str) and value.lower() in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[value.lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {brief_repr(value)}")
        return value
    if tp in (int, float):  # unannotated: any integer, or any finite number
        return Range().check(tp, value, path)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {brief_repr(value)}")
        return value
    raise ConfigError(f"{path}: unsupported config type {_type_name(tp)}")


def from_dict(cls: type[C], data: Any, path: str = "config") -> C:
    """Build dataclass `cls` from a plain mapping, strictly: unknown keys and wrong types raise."""
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping for {cls.__name__}, got {brief_repr(data)}")
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
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = {k: difflib.get_close_matches(str(k), fields, n=1) for k in unknown}
        hints_text = ", ".join(f"{str(k)[:40]!r} -> {m[0]!r}" for k, m in close.items() if m)
        raise ConfigError(
            f"{path}: unknown key(s) {brief_repr(unknown)} for {cls.__name__}"
            + (f" (did you mean {hints_text}?)" if hints_text else "")
            + f"; valid keys: {sorted(fields)}"
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


def explain(config: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, value as YAML writes it, what the field takes and means) for every field of a
    config, nested ones included: what `cvae-bridge config --explain` prints. The meaning comes
    from the comment beside the field in its class (utils/field_docs.py)."""
    from .utils.field_docs import field_descriptions

    rows = []
    hints = typing.get_type_hints(type(config), include_extras=True)
    descriptions = field_descriptions(type(config))
    for f in dataclasses.fields(config):
        if not f.init:
            continue
        key, value = f"{prefix}{f.name}", getattr(config, f.name)
        about = "; ".join(part for part in (describe_type(hints[f.name]), descriptions.get(f.name)) if part)
        if dataclasses.is_dataclass(value):
            rows.append((key, "", about))
            rows += explain(value, f"{key}.")
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            rows.append((key, "", about))
            for name, entry in value.items():
                rows += explain(entry, f"{key}.{name}.")
        else:
            shown = yaml.safe_dump(to_dict(value), default_flow_style=True, width=10**6).strip()
            rows.append((key, shown.removesuffix("\n...").removesuffix(" ..."), about))
    return rows


def describe_type(tp: Any) -> str:
    """A field's type as a user would say it: "an integer >= 1", "one of cosine, constant"."""
    numeric = range_of(tp)
    if numeric is not None:
        return numeric[1].describe(numeric[0])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return describe_type(args[0])
    if origin in (Union, types.UnionType):
        inner = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"a list, each {describe_type(args[0])}" if args else "a list"
    if origin is dict:
        return f"a mapping from names, each value {describe_type(args[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", str: "a string", int: "an integer", float: "a finite number"}.get(
        tp, _type_name(tp)
    )


def drop_removed_modalities(data: dict) -> dict:
    """A condition or target set to null (`--set model.conditions.env_state=null`) leaves the run
    config with every mention of its name: the data's feature for it, model.normalize and the
    posterior's condition list. A model that still needs one of them fails when it is built."""
    model = data.get("model")
    if not isinstance(model, dict):
        return data
    removed = set()
    for section in ("conditions", "targets"):
        entries = model.get(section)
        if isinstance(entries, dict):
            removed |= {name for name, value in entries.items() if value is None}
            model[section] = {name: value for name, value in entries.items() if value is not None}
    if not removed:
        return data
    for holder, key in ((model, "normalize"), (model.get("posterior"), "conditions")):
        if isinstance(holder, dict) and isinstance(holder.get(key), list):
            holder[key] = [name for name in holder[key] if name not in removed]
    features = data.get("data", {}).get("features") if isinstance(data.get("data"), dict) else None
    if isinstance(features, dict):
        data["data"]["features"] = {k: v for k, v in features.items() if k not in removed}
    return data


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
        node[parts[-1]] = parse_yaml(raw, f"override {key}")
    return data


# YAML 1.1's other spellings of booleans, which the strict reader leaves as strings: a boolean
# field takes them.
_BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def write_yaml(config: Any, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None))
