"""save_pretrained / from_pretrained: a folder with `config.json` and `model.safetensors`, and
`run_config.json` (the training run's RunConfig) when training wrote it.

The config is the single source of truth: `from_pretrained` rebuilds the model from it and then
loads the weights strictly. Frozen pretrained parts (a text encoder shipped by a package or kept
in a local folder) are referenced by their config, not copied.

Format 2 (this one) differs from format 1 (cvae_bridge 0.1.0) in two places. Format 1 kept the
perceptual/adversarial terms inside the model (`model.targets.<name>.sharpen`, the discriminator's
weights under `sharpeners.`); they now belong to training (`train.sharpen.<name>`). And it kept the
run config as free-form `extra.run` inside config.json. Format-1 folders still load: the settings
move to the run config's `train.sharpen`, the discriminator is dropped, and `read_run_config`
reads `extra.run`.

A folder may also be named by a Hugging Face Hub repo id (resolve_folder: the local cache first);
push_to_hub uploads one.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .config import ModelConfig, RunConfig, apply_overrides, brief_repr, from_dict, to_dict
from .errors import CheckpointError, ConfigError, DependencyError
from .utils.files import atomic_directory, atomic_write_text, restore_retired
from .utils.runtime import checked_device
from .version import __version__

FORMAT_VERSION = 2
LEGACY_PREFIXES = {1: ("sharpeners.",)}  # format -> saved weights that are no longer the model's
CONFIG_NAME = "config.json"
RUN_CONFIG_NAME = "run_config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"


def saved_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without external (frozen pretrained) modules, contiguous for safetensors."""
    return {k: v.detach().contiguous().cpu() for k, v in saved_entries(model).items()}


def saved_entries(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict entries that are saved (not those of external modules), as they are."""
    skip = tuple(f"{name}." for name in model.external_modules())
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}


def save_pretrained(
    model: torch.nn.Module,
    directory: str | Path,
    run_config: RunConfig | None = None,
    step: int | None = None,
) -> Path:
    """Write the model folder atomically: a crash mid-write leaves any previous folder intact.
    `run_config`: the training run, for tools that need more than the model (the policy reads
    its observation keys, evaluation its dataset); `step`: where a run that stopped early was."""
    with atomic_directory(directory) as temporary:
        write_model_files(model, temporary, run_config, step)
    return Path(directory)


_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def resolve_folder(
    name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None
) -> Path:
    """A model folder: `name_or_path` itself when it is a folder, else a Hugging Face Hub repo id
    ("owner/name") looked up in the local Hugging Face cache (HF_HUB_CACHE, or `cache_dir`) at
    `revision`, and downloaded into it only when it is not there and HF_HUB_OFFLINE is not set."""
    path = Path(name_or_path)
    if path.is_dir() or not _REPO_ID.match(str(name_or_path)) or path.exists():
        if revision is not None:
            raise ConfigError(
                f"revision: {revision!r} is for a Hub repo id; {str(name_or_path)!r} is a local path"
            )
        return path  # loading names what is missing
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as error:
        raise DependencyError(
            f"{name_or_path}: a Hub repo id needs huggingface_hub (pip install huggingface_hub)"
        ) from error
    options = dict(repo_id=str(name_or_path), revision=revision, cache_dir=cache_dir)
    try:
        return Path(snapshot_download(**options, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    cached = f"the Hugging Face cache ({cache_dir or 'HF_HUB_CACHE'})"
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise CheckpointError(
            f"{name_or_path}: not a folder, and not in {cached} at revision {revision or 'main'}; "
            "HF_HUB_OFFLINE is set, so nothing is downloaded"
        )
    try:
        return Path(snapshot_download(**options))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise CheckpointError(
            f"{name_or_path}: not a folder, not in {cached}, and the Hub could not be reached or has no such "
            f"repo ({type(error).__name__}: {str(error)[:200]})"
        ) from error


def push_to_hub(
    model: torch.nn.Module,
    repo_id: str,
    run_config: RunConfig | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload cvae_bridge model",
) -> str:
    """Save the model folder (with its card) and upload it to the Hub repo `repo_id`, created if
    needed; returns the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        folder = save_pretrained(model, Path(temporary) / "model", run_config)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message)
    return str(getattr(info, "commit_url", info))


def write_model_files(
    model: torch.nn.Module, folder: Path, run_config: RunConfig | None = None, step: int | None = None
) -> None:
    """The files of a model folder, written into an existing `folder` that something else makes
    atomic (save_pretrained's temporary folder, a checkpoint's); `step`: the training step the
    weights are from, when the run did not reach its end."""
    config = {
        "format_version": FORMAT_VERSION,
        "cvae_bridge_version": __version__,
        "model": to_dict(model.config),
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    save_file(saved_state(model), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    if run_config is not None:
        write_run_config(run_config, folder)
    (folder / CARD_NAME).write_text(model_card(model, run_config, step))


# The run config's fields that may name local files or folders. A saved folder stores those that
# exist relative to itself (it is written beside where it ends up), so that it holds no absolute
# path of the machine and still finds its data when the project moves; `paths` lists them. A value
# that is no existing path (a Hub dataset name) is kept as written.
PATH_FIELDS = ("data.path", "data.root", "train.output_dir", "train.init_from")
_RELATIVE_PATHS = "paths_relative_to_this_folder"


def write_run_config(run_config: RunConfig, folder: Path) -> None:
    """`folder`/run_config.json, its existing paths relative to `folder`."""
    data, relative = to_dict(run_config), []
    for field in PATH_FIELDS:
        section, key = field.split(".")
        value = data[section].get(key)
        if isinstance(value, str) and value and os.path.exists(value):
            data[section][key] = os.path.relpath(os.path.abspath(value), os.path.abspath(folder))
            relative.append(field)
    data[_RELATIVE_PATHS] = relative
    (folder / RUN_CONFIG_NAME).write_text(json.dumps(data, indent=2))


def model_card(model: torch.nn.Module, run_config: RunConfig | None = None, step: int | None = None) -> str:
    """The folder's README.md in the Hugging Face Hub's model-card layout: metadata (library,
    pipeline tag) in front matter, then what the model is, what it was trained on and how to load
    it. Paths are given by their last part only: a card must not carry a machine's folders."""
    kinds = {name: decoder.output_kind for name, decoder in model.decoders.items()}
    texts = [n for n, e in model.condition_encoders.items() if e.input_kind == "text"]
    if "action" in kinds.values():
        tag, loader = (
            "robotics",
            'from cvae_bridge import ActionChunkPolicy\n\npolicy = ActionChunkPolicy.from_pretrained("path/to/this/folder")',
        )
    elif "image" in kinds.values() and texts:
        tag, loader = (
            "text-to-image",
            'from cvae_bridge.pipelines import TextToImagePipeline\n\npipe = TextToImagePipeline.from_pretrained("path/to/this/folder")',
        )
    else:
        tag, loader = (
            None,
            'from cvae_bridge import ConditionalVAE\n\nmodel = ConditionalVAE.from_pretrained("path/to/this/folder")',
        )
    config = model.config
    saved = sum(t.numel() for t in saved_entries(model).values())
    total = sum(p.numel() for p in model.parameters())
    lines = ["---", "library_name: cvae-bridge", "tags: [cvae-bridge, conditional-vae]"]
    lines += [f"pipeline_tag: {tag}"] if tag else []
    lines += ["---", "", f"# A conditional VAE made with cvae_bridge {__version__}", ""]
    lines += ["| part | what |", "|---|---|"]
    for name, encoder in config.conditions.items():
        lines.append(f"| condition `{name}` | {encoder.type} encoder |")
    for name, target in config.targets.items():
        lines.append(
            f"| target `{name}` | {target.encoder.type} encoder (posterior only), {target.decoder.type} decoder, "
            f"{target.likelihood.type} likelihood |"
        )
    lines.append(
        f"| latent | {config.latent_dim} dimensions, {config.posterior.type} posterior, {config.prior.type} prior |"
    )
    lines.append(
        f"| parameters | {total:,} ({saved:,} in {WEIGHTS_NAME}; the rest pretrained, loaded from their packages) |"
    )
    if run_config is not None:
        data, train = run_config.data, run_config.train
        source = next((str(getattr(data, key)) for key in ("path", "root") if getattr(data, key, None)), None)
        where = f", `{Path(source).name}`" if source else ""
        done = (
            f"{train.steps:,} steps" if step in (None, train.steps) else f"step {step:,} of {train.steps:,}"
        )
        lines += [
            "",
            "## Training",
            "",
            f"Data: `{data.type}`{where}. {done} of batch {train.batch_size}, "
            f"learning rate {train.lr:g}; the whole run config is {RUN_CONFIG_NAME}.",
        ]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        loader,
        "```",
        "",
        EVALUATION_HEADING,
        "",
        NO_EVALUATION_YET,
        "",
    ]
    return "\n".join(lines)


EVALUATION_HEADING = "## Evaluation"
NO_EVALUATION_YET = (
    "None measured yet: `cvae-bridge eval --model FOLDER` (text-to-image) and "
    "`cvae-bridge rollout --model FOLDER ...` (simulated robots) add their figures here."
)
_BLOCK = re.compile(r"<!-- evaluation: (.*?) -->\n.*?<!-- end evaluation -->\n", re.S)


def record_evaluation(directory: str | Path, key: str, markdown: str) -> str:
    """Put an evaluation's figures (`markdown`) into the model card of `directory`, as the block
    named `key`: a later evaluation with the same key (the same command and settings) replaces
    it, other blocks stay. Returns what was done, in a sentence, also when the card could not be
    written (the caller has written the figures elsewhere first). A card that is not a plain local
    file (a Hub repo's cached copy, whose files link into the cache's shared blobs) is left alone."""
    card = Path(directory) / CARD_NAME
    if not Path(directory).is_dir():
        return f"model card not updated: {directory} is not a local folder (a Hub repo's cached copy is left as it is)"
    if card.is_symlink():
        return f"model card not updated: {card} is a link (a Hub cache entry's file); copy the folder to keep figures in it"
    text = card.read_text() if card.exists() else ""
    block = f"<!-- evaluation: {key} -->\n\n### {key}\n\n{markdown.strip()}\n\n<!-- end evaluation -->\n"
    blocks = {match.group(1): match.group(0) for match in _BLOCK.finditer(text)}
    if key in blocks:
        text = text.replace(blocks[key], block)
    elif blocks:
        last = list(blocks.values())[-1]
        text = text.replace(last, f"{last}\n{block}")
    else:
        if EVALUATION_HEADING not in text:
            text = text.rstrip("\n") + f"\n\n{EVALUATION_HEADING}\n"
        text = text.replace(NO_EVALUATION_YET + "\n", "").rstrip("\n") + f"\n\n{block}"
    try:
        atomic_write_text(card, text)
    except OSError as error:  # the figures are written elsewhere already: say so, don't fail the evaluation
        return f"model card not updated: {card}: {error.strerror or error}"
    return f"added the figures to the model card {card}"


def read_run_config(directory: str | Path, overrides: list[str] = ()) -> RunConfig:
    """The training run saved with a model folder, with `--set`-style overrides applied."""
    directory = Path(directory)
    path = directory / RUN_CONFIG_NAME
    if path.is_file():
        data, where = read_json(path), str(path)
    else:
        data, where = (
            read_config(directory).get("extra", {}).get("run"),
            f"{directory / CONFIG_NAME}:extra.run",
        )
        if data is None:
            raise CheckpointError(
                f"{path} not found: the folder holds no training run config (it is written by "
                f"`cvae-bridge train`; a model saved by hand has none)"
            )
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected a JSON object (a run config), got {type(data).__name__}")
    relative = data.pop(_RELATIVE_PATHS, [])
    if not isinstance(relative, list):
        raise CheckpointError(
            f"{where}: {_RELATIVE_PATHS}: expected a list of field names, got {brief_repr(relative)}"
        )
    for field in relative:
        section, key = field.split(".") if field in PATH_FIELDS else (None, None)
        value = data.get(section, {}).get(key) if isinstance(data.get(section), dict) else None
        if not isinstance(value, str) or os.path.isabs(value):
            raise CheckpointError(
                f"{where}: {_RELATIVE_PATHS} names {brief_repr(field)}, which holds no relative path"
            )
        data[section][key] = os.path.normpath(directory / value)
    return from_dict(RunConfig, apply_overrides(data, list(overrides)), path=where)


def read_config(directory: str | Path) -> dict[str, Any]:
    """The folder's config.json in the current format (an older one is upgraded, the file is not
    changed)."""
    return _upgrade(_read_json(directory))


def _read_json(directory: str | Path) -> dict[str, Any]:
    restore_retired(directory)
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{path} not found: a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME} (written by save_pretrained)"
        )
    config = read_json(path)
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{path}: expected a JSON object with format_version and model, got {type(config).__name__}"
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION and version not in LEGACY_PREFIXES:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION} or an older "
            f"{sorted(LEGACY_PREFIXES)})"
        )
    return config


def read_json(path: Path) -> Any:
    """A JSON file of a model folder or checkpoint; what cannot be decoded is a CheckpointError
    naming the file."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise CheckpointError(
            f"{path} is not UTF-8 text (byte {error.object[error.start]:#04x} at offset {error.start})"
        ) from None
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path} is not valid JSON: {error}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested more deeply than a config can be") from None


def _upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """Format 1 -> 2: each target's `sharpen` leaves the model config; the enabled ones go to the
    saved run config's `train.sharpen`."""
    if config["format_version"] == FORMAT_VERSION:
        return config
    config = copy.deepcopy(config)
    run = config.get("extra", {}).get("run") if isinstance(config.get("extra"), dict) else None
    moved = {}
    for model in (config.get("model"), run.get("model") if isinstance(run, dict) else None):
        targets = model.get("targets") if isinstance(model, dict) else None
        for name, target in (targets or {}).items():
            sharpen = target.pop("sharpen", None) if isinstance(target, dict) else None
            if isinstance(sharpen, dict) and any(
                sharpen.get(w, 0) > 0 for w in ("perceptual_weight", "adversarial_weight")
            ):
                moved[name] = sharpen
    if moved and isinstance(run, dict):
        run.setdefault("train", {}).setdefault("sharpen", {}).update(moved)
    config["format_version"] = FORMAT_VERSION
    return config


def load_pretrained(cls: type, directory: str | Path, device: str | torch.device = "cpu") -> Any:
    """Rebuild `cls` from the folder's config and load its weights strictly."""
    directory, device = Path(directory), checked_device(device)
    try:
        model_config = from_dict(
            ModelConfig, read_config(directory).get("model"), path=f"{directory / CONFIG_NAME}:model"
        )
    except ConfigError as error:
        raise CheckpointError(str(error)) from error
    check_shapes(cls, model_config, directory)
    model = cls(model_config)
    load_state_strict(model, read_weights(directory), str(directory / WEIGHTS_NAME))
    return model.to(device).eval()


def check_shapes(cls: type, model_config: ModelConfig, directory: Path) -> None:
    """Compare the tensors the config describes with those in the weights file's header before the
    model is built: a config.json edited to a huge architecture must not allocate it. The model is
    built on the meta device (no memory) and the header read without loading a tensor."""
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found")
    try:
        with safe_open(str(weights), framework="pt") as file:
            saved = {name: tuple(file.get_slice(name).get_shape()) for name in file.keys()}
    except Exception as error:  # safetensors raises several types for a damaged header
        raise CheckpointError(f"{weights} is not a readable safetensors file: {str(error)[:200]}") from error
    with torch.device("meta"):
        skeleton = cls(model_config)
    legacy = LEGACY_PREFIXES.get(_read_json(directory)["format_version"], ())
    saved = {k: v for k, v in saved.items() if not k.startswith(legacy)}
    expected = {k: tuple(v.shape) for k, v in saved_entries(skeleton).items()}
    raise_mismatch(expected, saved, str(weights))


def read_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The folder's saved tensors under the current format's names (an older format's training-only
    weights are left out)."""
    weights = Path(directory) / WEIGHTS_NAME
    version = _read_json(directory)["format_version"]
    if not weights.is_file():
        raise CheckpointError(f"{weights} not found")
    try:
        state = load_file(str(weights))
    except Exception as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {error}") from error
    legacy = LEGACY_PREFIXES.get(version, ())
    return {k: v for k, v in state.items() if not k.startswith(legacy)}


def raise_mismatch(expected: dict[str, Any], saved: dict[str, Any], source: str) -> None:
    """A CheckpointError naming the tensors missing from `saved`, unexpected in it, and those whose
    description (shape, or dtype and shape) differs from `expected`; nothing when they agree."""
    missing = sorted(expected.keys() - saved.keys())
    unexpected = sorted(saved.keys() - expected.keys())
    mismatched = [
        f"{k}: saved {_describe(saved[k])}, model {_describe(expected[k])}"
        for k in sorted(expected.keys() & saved.keys())
        if saved[k] != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s), e.g. {missing[:5]}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[:5]}")
    if mismatched:
        problems.append(f"shape or dtype mismatch: {mismatched[:5]}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model built from its config: " + "; ".join(problems)
        )


def _describe(entry: Any) -> str:
    return " ".join(map(str, entry)) if isinstance(entry[0], torch.dtype) else str(entry)


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`: every saved tensor must exist with the same shape, and every
    tensor the model saves must be present. External (frozen pretrained) modules are skipped."""
    expected = saved_state(model)
    raise_mismatch(
        {k: (v.dtype, tuple(v.shape)) for k, v in expected.items()},
        {k: (v.dtype, tuple(v.shape)) for k, v in state.items()},
        source,
    )
    model.load_state_dict(state, strict=False)
