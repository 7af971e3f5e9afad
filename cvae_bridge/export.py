"""`cvae-bridge export --format onnx`: a trained model's inference graph as ONNX, batch size dynamic.

Two kinds of model are exported (pipelines/onnx.py describes the folder written):

- an action-chunk policy: its conditions -> the (B, k, d) action chunk, z = the prior mean (ACT's
  z = 0), the model's normalisation of states and un-normalisation of actions included. Images
  enter as float (B, 3, H, W) in [0, 1] at the run's image size: ActionChunkPolicy converts
  observations before the graph, and keeps its chunks and ensembling after it
  (`ActionChunkPolicy.from_pretrained(folder, backend="onnxruntime")`).
- a text-to-image model's decoder path: caption features and noise (B, latent_dim) -> the image
  (the likelihood's mean; TextToImagePipeline clamps it to [0, 1]), z = prior mean + prior std *
  noise, so zero noise gives the mean and noise times a temperature the pipeline's draws.

Text stays outside the graph: a text condition enters as the frozen text encoder's features
(`TextEncoder.features`: "<name>.hidden" (B, N, H) and "<name>.mask" (B, N)), since the tokenizer
is no tensor program. A language-conditioned policy is exported with the instructions it will be
given; their features are computed here and stored beside the graph, so that the exported policy
runs without the text encoder (and refuses an instruction it was not exported with).

Export goes through torch.export (torch.onnx.export(dynamo=True)) at ONNX opset OPSET; the graph
is then run by ONNX Runtime on random inputs and compared with the PyTorch model's public API
(`sample`, `decode`) before the folder is written.
"""

from __future__ import annotations

import importlib.util
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from torch import nn

from .errors import CheckpointError, ConfigError, DependencyError
from .hub import CONFIG_NAME, RUN_CONFIG_NAME, read_config, read_run_config, resolve_folder, write_run_config
from .model import ConditionalVAE
from .pipelines.onnx import (
    DECODER,
    GRAPH_FORMAT,
    GRAPH_NAME,
    NOISE,
    ONNX_EXTRA,
    ONNX_NAME,
    OPSET,
    POLICY,
    TEXT_FEATURES_NAME,
    import_onnxruntime,
    text_feeds,
    text_input_names,
)
from .pipelines.policy import ActionChunkPolicy, robot_data_of
from .pipelines.text_to_image import TextToImagePipeline
from .utils.files import atomic_directory
from .version import __version__

CHECK_BATCH = 2  # examples the graph is traced and checked at (1 would fix the batch size)
CHECK_CAPTIONS = ["an example caption", "a second, longer example caption"]
# Largest |ONNX Runtime - PyTorch| accepted at export, relative to the output's scale: far above
# float32 rounding (about 1e-6), far below a wrong graph.
CHECK_TOLERANCE = 1e-3


@dataclass
class ExportConfig:
    """What `cvae-bridge export` writes."""

    model: str  # a model folder (written by training or save_pretrained) or a Hub repo id
    out: str  # the folder to write (replaced if it exists)
    format: Literal["onnx"] = "onnx"
    # A language-conditioned policy: the instructions it will be given. Their text-encoder features
    # are stored with the graph; the exported policy takes these and no others.
    instructions: list[str] = field(default_factory=list)


class InferenceGraph(nn.Module):
    """ConditionalVAE.sample as one function of tensors, for tracing: condition inputs (a text
    condition as its encoder's features) -> `target`'s likelihood mean, z = the prior mean (+ the
    prior's std times the NOISE input with `noise`), normalisation included. Written from the
    model's parts because `sample` checks the values of its inputs, which tracing cannot follow."""

    def __init__(self, model: ConditionalVAE, target: str, noise: bool):
        super().__init__()
        self.model, self.target, self.noise = model, target, noise

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        model = self.model
        batch = next(iter(inputs.values())).shape[0]
        encoded = {}
        for name, encoder in model.condition_encoders.items():
            if encoder.input_kind == "text":
                hidden, mask = text_input_names(name)
                tokens = encoder.project_features(inputs[hidden], inputs[mask])
            else:
                value = inputs[name]
                tokens = encoder(model.normalizers[name](value) if name in model.normalizers else value)
            encoded[name] = model._typed(name, tokens)
        mu, logvar = model._prior(encoded, batch)
        z = mu + torch.exp(0.5 * logvar) * inputs[NOISE] if self.noise else mu
        params = model._decode(z, model._condition_sequence(encoded, batch))
        return model._outputs(params, "mean", None)[self.target]


@dataclass
class _Export:
    """A graph ready to export: its inputs at CHECK_BATCH, and the PyTorch model's output for them."""

    kind: str
    graph: InferenceGraph
    inputs: dict[str, torch.Tensor]  # graph input name -> example
    kinds: dict[str, tuple[str | None, str]]  # graph input name -> (modality, what it reads)
    reference: torch.Tensor
    instructions: dict[str, torch.Tensor] = field(default_factory=dict)  # text -> its features (N, H)


def export_onnx(config: ExportConfig) -> dict[str, Any]:
    """Write the exported folder (pipelines/onnx.py lists its files); returns its onnx.json."""
    missing = [
        name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise DependencyError(f"export --format onnx needs {', '.join(missing)}: {ONNX_EXTRA}")
    ort = import_onnxruntime()
    folder, out = resolve_folder(config.model), Path(config.out)
    if folder.resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"out: {config.out} holds the model folder {config.model}, which it would replace")
    model = ConditionalVAE.from_pretrained(folder)
    with torch.random.fork_rng():  # the check's random inputs; the caller's generator is left as it was
        torch.manual_seed(0)
        export = _prepare(model, folder, config)

    target = export.graph.target
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    shapes = {
        name: {0: batch, 1: tokens} if _dynamic_tokens(model, export.kinds[name]) else {0: batch}
        for name in export.inputs
    }
    with atomic_directory(out) as temporary:
        with warnings.catch_warnings():
            # torch's own notes to its developers (a deprecated pytree class, axis renaming)
            for note in ("`isinstance(treespec, LeafSpec)`", "# The axis name"):
                warnings.filterwarnings("ignore", message=re.escape(note))
            torch.onnx.export(
                export.graph.eval(),
                (),
                str(temporary / ONNX_NAME),
                kwargs={"inputs": export.inputs},
                input_names=list(export.inputs),
                output_names=[target],
                dynamic_shapes={"inputs": shapes},
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        session = ort.InferenceSession(str(temporary / ONNX_NAME), providers=["CPUExecutionProvider"])
        (output,) = session.run([target], {k: v.numpy() for k, v in export.inputs.items()})
        difference = float((torch.from_numpy(output) - export.reference).abs().max())
        scale = 1.0 + float(export.reference.abs().max())
        if not difference <= CHECK_TOLERANCE * scale:
            raise CheckpointError(
                f"{out / ONNX_NAME}: ONNX Runtime's output differs from PyTorch's by up to {difference:.3g} "
                f"(more than {CHECK_TOLERANCE} x {scale:.3g}) on random inputs; nothing was written"
            )
        description = {
            "format_version": GRAPH_FORMAT,
            "kind": export.kind,
            "opset": OPSET,
            "exported_by": f"cvae_bridge {__version__}, torch {torch.__version__}",
            "inputs": [
                {
                    "name": name,
                    "modality": export.kinds[name][0],
                    "kind": export.kinds[name][1],
                    "dtype": str(value.dtype).removeprefix("torch."),
                    "shape": _shape(value, shapes[name]),
                }
                for name, value in export.inputs.items()
            ],
            "outputs": [
                {"name": target, "dtype": "float32", "shape": ["batch", *export.reference.shape[1:]]}
            ],
            "latent": "prior mean + prior std * latent.noise" if export.graph.noise else "prior mean",
            "instructions": list(export.instructions),
            "check": {"batch": CHECK_BATCH, "max_abs_difference": difference, "against": "PyTorch"},
        }
        (temporary / GRAPH_NAME).write_text(json.dumps(description, indent=2))
        if export.instructions:
            features = {str(i): f.contiguous() for i, f in enumerate(export.instructions.values())}
            save_file(features, str(temporary / TEXT_FEATURES_NAME))
        (temporary / CONFIG_NAME).write_text(json.dumps(read_config(folder), indent=2))
        if (folder / RUN_CONFIG_NAME).is_file():
            write_run_config(read_run_config(folder), temporary)
    return description


def _prepare(model: ConditionalVAE, folder: Path, config: ExportConfig) -> _Export:
    """The graph of the model's kind, with its check inputs and PyTorch's output for them."""
    if len(model.decoders) == 1 and next(iter(model.decoders.values())).output_kind == "action":
        return _policy(model, folder, config.instructions)
    try:
        pipe = TextToImagePipeline(model)
    except ConfigError as error:
        raise ConfigError(
            f"export: {config.model} is neither an action-chunk policy (one action-chunk target) nor a "
            f"text-to-image model: {error}"
        ) from error
    if config.instructions:
        raise ConfigError(
            "instructions: a text-to-image graph takes caption features as an input; "
            "instructions are for a language-conditioned policy"
        )
    return _decoder(model, pipe)


def _policy(model: ConditionalVAE, folder: Path, instructions: list[str]) -> _Export:
    data = robot_data_of(folder, "exporting a policy needs it (observation keys, image size)")
    policy = ActionChunkPolicy(model, data.features, data.image_size, data.instruction_key)
    inputs: dict[str, torch.Tensor] = {}
    kinds: dict[str, tuple[str | None, str]] = {}
    for name in policy.inputs:
        encoder = model.condition_encoders[name]
        if name in policy.images:
            size = policy.image_size or getattr(encoder.config, "size", None)
            if size is None:
                raise ConfigError(
                    f"data.image_size: the policy's camera input {name!r} has no fixed size ({folder / RUN_CONFIG_NAME} "
                    "sets none, nor does its encoder); the graph needs one: retrain with data.image_size"
                )
            inputs[name] = torch.rand(CHECK_BATCH, 3, *size)
        else:
            shape = getattr(encoder.config, "shape", None)
            if shape is None:
                raise ConfigError(
                    f"model.conditions.{name}: a {encoder.config.type!r} input without `shape`; the graph needs its size"
                )
            inputs[name] = torch.randn(CHECK_BATCH, *shape)
        kinds[name] = (name, encoder.input_kind)
    batch: dict[str, Any] = dict(inputs)
    stored: dict[str, torch.Tensor] = {}
    key = policy.instruction_key
    if key is None and instructions:
        raise ConfigError(
            f"instructions: the model takes no instruction (its inputs: {sorted(policy.inputs)})"
        )
    if key is not None:
        if not instructions:
            raise ConfigError(
                f"instructions: the policy is conditioned on text ({key!r}); list the instructions it will be "
                "given (--instruction TEXT, repeatable): their text-encoder features are stored with the graph"
            )
        stored = _text_features(model, key, list(dict.fromkeys(instructions)))
        texts = [list(stored)[i % len(stored)] for i in range(CHECK_BATCH)]
        feeds = text_feeds(key, [stored[text] for text in texts])
        inputs.update(feeds)
        kinds.update({name: (key, "text") for name in feeds})
        batch[key] = texts
    reference = policy.network(batch)
    return _Export(
        POLICY, InferenceGraph(model, policy.action_key, noise=False), inputs, kinds, reference, stored
    )


def _decoder(model: ConditionalVAE, pipe: TextToImagePipeline) -> _Export:
    noise = torch.randn(CHECK_BATCH, model.config.latent_dim)
    conditions: dict[str, Any] = {}
    inputs: dict[str, torch.Tensor] = {}
    kinds: dict[str, tuple[str | None, str]] = {}
    key = pipe.caption_key
    if key is not None:
        conditions[key] = CHECK_CAPTIONS
        features = _text_features(model, key, CHECK_CAPTIONS)
        feeds = text_feeds(key, list(features.values()))
        inputs.update(feeds)
        kinds.update({name: (key, "text") for name in feeds})
    inputs[NOISE] = noise
    kinds[NOISE] = (None, "noise")
    mu, logvar = model.prior_params(conditions)
    reference = model.decode(mu + torch.exp(0.5 * logvar) * noise, conditions)[pipe.image_key]
    return _Export(DECODER, InferenceGraph(model, pipe.image_key, noise=True), inputs, kinds, reference)


def _text_features(model: ConditionalVAE, name: str, texts: list[str]) -> dict[str, torch.Tensor]:
    """Text -> its encoder's features (N, H), the padding cut off."""
    encoder = model.condition_encoders[name]
    if not hasattr(encoder, "features"):
        raise ConfigError(
            f"model.conditions.{name}: a {encoder.config.type!r} text encoder has no `features` (the outputs "
            "its projection reads); only such an encoder can be exported"
        )
    with torch.no_grad():  # not inference_mode: its tensors cannot be traced
        hidden, valid = encoder.features(texts)
    return {text: h[: int(v.sum())].clone() for text, h, v in zip(texts, hidden, valid)}


def _dynamic_tokens(model: ConditionalVAE, kind: tuple[str | None, str]) -> bool:
    """Whether a graph input has a dynamic token axis: a text condition's, unless it is one pooled token."""
    modality, what = kind
    return what == "text" and getattr(model.condition_encoders[modality].config, "output", None) != "pooled"


def _shape(value: torch.Tensor, dynamic: dict[int, Any]) -> list[int | str]:
    names = {0: "batch", 1: "tokens"}
    return [names[axis] if axis in dynamic else size for axis, size in enumerate(value.shape)]
