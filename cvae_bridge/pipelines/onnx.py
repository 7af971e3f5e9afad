"""ONNX Runtime as the network of ActionChunkPolicy, and the layout of an exported folder.

`cvae-bridge export --format onnx` (cvae_bridge/export.py) writes:

    model.onnx                  the inference graph, ONNX opset OPSET, batch size dynamic
    onnx.json                   what the graph is: its kind, inputs and outputs (names, dtypes,
                                shapes; "batch" and "tokens" are dynamic), the opset, a check
    config.json, run_config.json   the model's config and training run (the policy's observation
                                keys, image size and instruction key)
    text_features.safetensors   a language-conditioned policy: the text encoder's features of the
                                instructions exported with it

`ActionChunkPolicy.from_pretrained(folder, backend="onnxruntime")` runs the graph in place of the
PyTorch model's network call (OnnxChunkNetwork); chunking, temporal ensembling, the query period
and the conversion of observations stay the policy's own.

A text condition enters the graph as the text encoder's features, "<name>.hidden" (B, N, H) and
"<name>.mask" (B, N) bool: tokenizer and transformer stay outside it. A policy looks its
instruction up among those stored at export, so it needs no text encoder at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch.nn.utils.rnn import pad_sequence

from ..errors import CheckpointError, ConfigError, DependencyError, InputError
from ..hub import read_json

OPSET = 18  # ONNX Runtime 1.16 and later run it
GRAPH_FORMAT = 1
ONNX_NAME = "model.onnx"
GRAPH_NAME = "onnx.json"
TEXT_FEATURES_NAME = "text_features.safetensors"
POLICY = "action_chunk_policy"  # observations -> action chunk, z = the prior mean
DECODER = "text_to_image_decoder"  # caption features + noise -> image, z = prior mean + std * noise
NOISE = "latent.noise"  # no modality name has a dot
ONNX_EXTRA = 'pip install "cvae-bridge[onnx]"'


def text_input_names(name: str) -> tuple[str, str]:
    """The graph inputs of text condition `name`: its features (B, N, H) and their mask (B, N)."""
    return f"{name}.hidden", f"{name}.mask"


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as error:
        raise DependencyError(f"running an ONNX graph needs onnxruntime: {ONNX_EXTRA}") from error
    return onnxruntime


def read_graph(directory: str | Path) -> dict[str, Any]:
    """onnx.json of an exported folder, checked; a folder without model.onnx is named as such."""
    directory = Path(directory)
    if not (directory / ONNX_NAME).is_file():
        raise CheckpointError(
            f"{directory / ONNX_NAME} not found: write it with `cvae-bridge export --model MODEL_FOLDER "
            f"--format onnx --out {directory}` and load that folder"
        )
    path = directory / GRAPH_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} not found: an exported folder holds {ONNX_NAME} and {GRAPH_NAME}")
    graph = read_json(path)
    if not isinstance(graph, dict) or graph.get("format_version") != GRAPH_FORMAT:
        version = graph.get("format_version") if isinstance(graph, dict) else None
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported (expected {GRAPH_FORMAT})"
        )
    return graph


class OnnxChunkNetwork:
    """ActionChunkPolicy's network from an exported folder: the graph in an ONNX Runtime session."""

    def __init__(self, directory: str | Path, device: str | torch.device = "cpu"):
        ort = import_onnxruntime()
        directory = Path(directory)
        graph = read_graph(directory)
        if graph["kind"] != POLICY:
            raise CheckpointError(
                f"{directory / GRAPH_NAME}: a {graph['kind']!r} graph, not an action-chunk policy ({POLICY!r})"
            )
        if torch.device(device).type != "cpu":
            raise ConfigError(f"device: the onnxruntime backend runs on the CPU, got {str(device)!r}")
        self.device = torch.device("cpu")
        self.inputs = graph["inputs"]
        (output,) = graph["outputs"]
        self.action_key = output["name"]
        self.chunk_shape = tuple(output["shape"][1:])
        self.input_kinds = {entry["modality"]: entry["kind"] for entry in self.inputs}
        # instruction -> its text-encoder features (N, H)
        self.instructions: dict[str, torch.Tensor] = {}
        if graph.get("instructions"):
            stored = load_file(str(directory / TEXT_FEATURES_NAME))
            self.instructions = {text: stored[str(i)] for i, text in enumerate(graph["instructions"])}
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many as PyTorch's operators use
        self.session = ort.InferenceSession(
            str(directory / ONNX_NAME), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        feeds: dict[str, np.ndarray] = {}
        for name, kind in self.input_kinds.items():
            if kind == "text":
                feeds.update(self._text_features(name, batch[name]))
            else:
                feeds[name] = batch[name].numpy()
        for entry in self.inputs:
            value, shape = feeds[entry["name"]], entry["shape"]
            if value.ndim != len(shape) or any(
                isinstance(want, int) and want != got for want, got in zip(shape, value.shape)
            ):
                raise InputError(
                    f"batch[{entry['name']!r}]: the graph takes shape {tuple(shape)}, got {value.shape}"
                )
        (chunk,) = self.session.run([self.action_key], feeds)
        return torch.from_numpy(chunk)

    def _text_features(self, name: str, texts: list[str]) -> dict[str, np.ndarray]:
        unknown = sorted(set(texts) - set(self.instructions))
        if unknown:
            raise InputError(
                f"instruction: {unknown} not exported with this graph; it knows {sorted(self.instructions)} "
                "(export again with --instruction TEXT for each)"
            )
        feeds = text_feeds(name, [self.instructions[text] for text in texts])
        return {key: value.numpy() for key, value in feeds.items()}


def text_feeds(name: str, features: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The graph inputs of text condition `name` for a batch of texts, each given by its features
    (N_i, H): padded to the longest, (B, N, H), and the mask of the real tokens, (B, N)."""
    lengths = torch.tensor([len(f) for f in features])
    hidden, mask = text_input_names(name)
    return {
        hidden: pad_sequence(features, batch_first=True),
        mask: torch.arange(int(lengths.max()))[None, :] < lengths[:, None],
    }
