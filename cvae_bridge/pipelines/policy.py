"""ACT-style action-chunk policy: a trained model folder driving one environment or a batch of them.

    policy = ActionChunkPolicy.from_pretrained("runs/act_aloha_state/model", temporal_ensemble=0.01)
    policy.reset()
    observation = env.reset()
    while not done:
        action = policy.select_action(observation)          # (action_dim,) float32 numpy
        observation, success, done = env.step(action)

At a query step the model predicts the k actions t .. t+k-1 from the observation at t, with z = 0
(the prior mean), as ACT does at inference. Between queries the stored chunk runs open loop
(`query_period`); with temporal ensembling the policy queries every step and averages every stored
prediction for the current step (ACT, Zhao et al. 2023, section IV).

Observations are dicts keyed by feature name, as in the dataset the model was trained on
("observation.state", "observation.images.top", ...): 1-D arrays and (H, W, 3) uint8 images for one
environment, or the same with a leading batch axis for several. The run config saved with the
model (`run_config.json`: its `data`) tells which feature feeds which model input and the image
size; the policy converts images to float (3, H, W) in [0, 1] exactly as training did, and the
model normalises states and un-normalises actions itself.

LeRobot's convention works too: a batch of torch tensors, images float (B, 3, H, W) in [0, 1],
the instruction as `batch["task"]` (a list of strings); the action then comes back as a torch
tensor (B, d), and `predict_action_chunk(batch)` gives the whole (B, k, d) chunk, as LeRobot's
policies name it.

The network call is the policy's only use of the model (`ChunkNetwork`): PyTorch's by default, or
an exported ONNX graph run by ONNX Runtime (`from_pretrained(folder, backend="onnxruntime")`, see
pipelines/onnx.py) with the same chunking, ensembling and query period.

`dtype="bfloat16"` runs PyTorch's network under bf16 autocast: matrix products and convolutions in
bf16, element-wise work (normalising the inputs, un-normalising the actions) in float32; the chunk
comes back in float32. It pays only where the hardware computes in bf16 (x86 AVX512-BF16 or AMX,
Arm BF16, most GPUs); elsewhere PyTorch emulates it, several times slower than float32, and the
policy warns.

Replaying recorded episodes through a policy is evaluation's (`evaluation/replay.py`).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from einops import einsum

from ..errors import CheckpointError, ConfigError, InputError
from ..hub import RUN_CONFIG_NAME, read_run_config, resolve_folder
from ..model import ConditionalVAE
from ..utils.pixels import frame_tensor, resize_images
from ..utils.runtime import keep_freed_memory

LEROBOT_TASK = "task"  # where a LeRobot batch carries the instruction
Backend = Literal["torch", "onnxruntime"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # the policy's inference precisions


class ChunkNetwork(Protocol):
    """What the policy runs at a query step: model inputs -> the (B, k, d) action chunk on the CPU,
    z = the prior mean, in the actions' units."""

    action_key: str  # the model's action target
    chunk_shape: tuple[int, int]  # (k, d)
    input_kinds: dict[str, str]  # model input -> what it reads ("image", "text", "vector", ...)
    device: torch.device  # where the policy puts input tensors

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor: ...


class TorchChunkNetwork:
    """The PyTorch model as the policy's network: `model.sample(batch, latent="mean")`, in float32
    or under bf16 autocast (`dtype`)."""

    def __init__(self, model: ConditionalVAE, dtype: torch.dtype = torch.float32):
        if len(model.decoders) != 1 or next(iter(model.decoders.values())).output_kind != "action":
            kinds = {n: d.output_kind for n, d in model.decoders.items()}
            raise ConfigError(
                f"ActionChunkPolicy needs a model with one action-chunk target (k, d); its targets are {kinds}"
            )
        self.model = model.eval()
        # Every call allocates the same activations again: keep freed ones for the next call
        # rather than give them back to the OS and fault their pages in again.
        keep_freed_memory()
        self.action_key, decoder = next(iter(model.decoders.items()))
        self.chunk_shape = decoder.event_shape
        self.input_kinds = {n: e.input_kind for n, e in model.condition_encoders.items()}
        self.dtype = dtype
        if dtype == torch.bfloat16 and not native_bf16(self.device):
            warnings.warn(
                f"dtype='bfloat16': this {self.device.type} device has no bf16 arithmetic (AVX512-BF16 or AMX "
                "on x86, BF16 on Arm, or a GPU that has it); PyTorch emulates it, several times slower than "
                "float32. Use dtype='float32' here.",
                RuntimeWarning,
                stacklevel=3,
            )

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.inference_mode()
    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        # Autocast leaves the model as it was given (float32 weights, its input checks and
        # normalisation in float32) at the price of casting the weights at every call.
        with torch.autocast(self.device.type, self.dtype, enabled=self.dtype != torch.float32):
            chunk = self.model.sample(batch or None, latent="mean")[self.action_key]
        return chunk.float().cpu()


def inference_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """torch.float32 or torch.bfloat16, from its name or itself; anything else is a ConfigError."""
    found = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if not isinstance(found, torch.dtype) or found not in DTYPES.values():
        raise ConfigError(
            f"dtype: expected one of {sorted(DTYPES)} (or torch.float32, torch.bfloat16), got {dtype!r}"
        )
    return found


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 itself rather than PyTorch emulating it in float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        capabilities = torch.cpu.get_capabilities()
        return any(capabilities.get(flag, False) for flag in ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16"))
    return True  # other devices: whatever their PyTorch backend does


def robot_data_of(directory: str | Path, without: str) -> Any:
    """The robot-episode data config a model folder was trained on (its observation keys, image
    size, instruction key); `without`: what to do when the folder has no run config."""
    try:
        data = read_run_config(directory).data
    except CheckpointError as error:
        raise CheckpointError(f"{error}; {without}") from error
    if not hasattr(data, "features"):
        raise CheckpointError(
            f"{Path(directory) / RUN_CONFIG_NAME}: the model was trained on {data.type!r} data, not robot episodes"
        )
    return data


class ActionChunkPolicy:
    """Wraps a ConditionalVAE with one action-chunk target (k, d) into a step-by-step policy.

    Args:
        model: the trained model; its single target is the action chunk. Or another network
            that computes the chunk (ChunkNetwork: an exported graph); `self.model` is then None.
        features: model input name -> observation key (a dataset config's `features`; entries for
            the action target or for inputs the model lacks are ignored).
        image_size: [H, W] every image is resized to before the model sees it; None keeps it.
        instruction_key: the model's text input, fed by `select_action(..., instruction)`.
        query_period: re-plan every n steps and run the stored chunk open loop in between; 1
            re-plans every step. Default: the chunk size k without ensembling (ACT), else 1.
        temporal_ensemble: m of ACT's temporal ensembling, or None for none. The policy then
            queries every step and returns the average of all stored predictions for the current
            step, weighted exp(-m * i) with i = 0 the oldest (ACT's default m = 0.01).
        dtype: "float32" (default) or "bfloat16" (or the torch dtype): the precision of the
            network's matrix products and convolutions, by bf16 autocast (see the module's
            docstring); the actions come back in float32 either way. Only for a ConditionalVAE.
    """

    def __init__(
        self,
        model: ConditionalVAE | ChunkNetwork,
        features: Mapping[str, str],
        image_size: Sequence[int] | None = None,
        instruction_key: str | None = None,
        query_period: int | None = None,
        temporal_ensemble: float | None = None,
        dtype: str | torch.dtype = "float32",
    ):
        self.model = model if isinstance(model, ConditionalVAE) else None
        self.dtype = inference_dtype(dtype)
        if self.model is None and self.dtype != torch.float32:
            raise ConfigError(
                f"dtype: {dtype!r} applies to a ConditionalVAE (the torch backend); "
                f"{type(model).__name__} runs in its own precision, use dtype='float32'"
            )
        self.network = TorchChunkNetwork(model, self.dtype) if self.model is not None else model
        self.action_key = self.network.action_key
        self.chunk_size, self.action_dim = self.network.chunk_shape
        self.image_size = tuple(image_size) if image_size is not None else None
        kinds = self.network.input_kinds
        self.instruction_key = instruction_key if instruction_key in kinds else None
        # model input -> observation key, and whether that input is a camera image
        self.inputs: dict[str, str] = {}
        for name in kinds:
            if name == self.instruction_key:
                continue
            if name not in features:
                raise ConfigError(
                    f"features: the model input {name!r} has no observation key; features: {dict(features)}"
                )
            self.inputs[name] = features[name]
        self.images = {n for n in self.inputs if kinds[n] == "image"}

        if temporal_ensemble is not None:
            if not (math.isfinite(temporal_ensemble) and temporal_ensemble >= 0):
                raise ConfigError(
                    f"temporal_ensemble: expected a number m >= 0 (or None), got {temporal_ensemble}"
                )
            if query_period not in (None, 1):
                raise ConfigError(
                    f"query_period: temporal ensembling queries every step; got query_period={query_period}"
                )
            query_period = 1
        query_period = self.chunk_size if query_period is None else query_period
        if not 1 <= query_period <= self.chunk_size:
            raise ConfigError(
                f"query_period: expected 1 .. {self.chunk_size} (the chunk size), got {query_period}"
            )
        self.query_period = query_period
        self.temporal_ensemble = temporal_ensemble
        self.reset()

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device = "cpu",
        query_period: int | None = None,
        temporal_ensemble: float | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        backend: Backend = "torch",
        dtype: str | torch.dtype = "float32",
    ) -> ActionChunkPolicy:
        """Load a model folder written by training, or a Hub repo id (the local Hugging Face cache
        first): the run config saved with it gives the observation keys, the image size and the
        instruction key. `backend="onnxruntime"`: a folder written by `cvae-bridge export --format
        onnx`, its graph run by ONNX Runtime on the CPU (in float32). `dtype="bfloat16"`: the torch
        network under bf16 autocast (see the class)."""
        if backend not in ("torch", "onnxruntime"):
            raise ConfigError(f"backend: expected 'torch' or 'onnxruntime', got {backend!r}")
        if inference_dtype(dtype) != torch.float32 and backend != "torch":
            raise ConfigError(f"dtype: {dtype!r} needs backend='torch'; the {backend} graph runs in float32")
        directory = resolve_folder(directory, revision, cache_dir)
        data = robot_data_of(
            directory, "build ActionChunkPolicy(model, features, ...) with the observation keys instead"
        )
        if backend == "onnxruntime":
            from .onnx import OnnxChunkNetwork

            model = OnnxChunkNetwork(directory, device)
        else:
            model = ConditionalVAE.from_pretrained(directory, device)
        return cls(
            model,
            data.features,
            data.image_size,
            data.instruction_key,
            query_period,
            temporal_ensemble,
            dtype,
        )

    def reset(self) -> None:
        """Forget stored chunks; call at the start of every episode."""
        self.step = 0
        # (step the chunk was predicted at, (B, k, d) actions); without ensembling only the newest counts.
        self.chunks: deque[tuple[int, torch.Tensor]] = deque(
            maxlen=None if self.temporal_ensemble is not None else 1
        )
        self.layout: tuple[int, bool] | None = None  # (batch size, single environment) of this episode

    @property
    def observation_keys(self) -> list[str]:
        return list(self.inputs.values())

    def __call__(
        self, observation: Mapping[str, Any], instruction: str | list[str] | None = None
    ) -> np.ndarray | torch.Tensor:
        """The action for the current step: (d,) for one environment, (B, d) for a batch; a torch
        tensor when the observation holds torch tensors (LeRobot's batches), else numpy.

        The observation is read only at steps where the policy re-plans. Also reachable as
        `select_action`, LeRobot's name for it.
        """
        if not self.chunks or self.step - self.chunks[-1][0] >= self.query_period:
            self.chunks.append((self.step, self._predict(observation, instruction)))
        # A chunk predicted at step s covers steps s .. s+k-1.
        while self.chunks[0][0] <= self.step - self.chunk_size:
            self.chunks.popleft()
        predictions = torch.stack(
            [chunk[:, self.step - start] for start, chunk in self.chunks]
        )  # (n, B, d), oldest first
        if self.temporal_ensemble is None:
            action = predictions[-1]
        else:
            weights = torch.exp(-self.temporal_ensemble * torch.arange(len(predictions), dtype=torch.float64))
            action = einsum((weights / weights.sum()).float(), predictions, "n, n b d -> b d")
        self.step += 1
        action = action[0] if self.layout[1] else action
        return action if _is_torch_batch(observation) else action.numpy()

    select_action = __call__

    def predict_action_chunk(
        self, observation: Mapping[str, Any], instruction: str | list[str] | None = None
    ) -> torch.Tensor:
        """The (B, k, d) chunk of actions predicted from this observation (z = 0), as a torch
        tensor, without touching the stored chunks of `select_action` (LeRobot's name)."""
        return self.network(self.model_inputs(observation, instruction)[0])

    def _predict(self, observation: Mapping[str, Any], instruction: str | list[str] | None) -> torch.Tensor:
        """(B, k, d) actions from one observation, z = 0, on the CPU."""
        batch, layout = self.model_inputs(observation, instruction)
        if self.layout is None:
            self.layout = layout
        elif layout != self.layout:
            raise InputError(
                f"observation: {_environments(layout)} after {_environments(self.layout)} in this episode; call reset() between episodes"
            )
        return self.network(batch)

    def model_inputs(
        self, observation: Mapping[str, Any], instruction: str | list[str] | None = None
    ) -> tuple[dict[str, Any], tuple[int, bool]]:
        """(model batch, (batch size, whether the observation is of one environment)). States
        become float32 (B, d) tensors, images float (B, 3, H, W) in [0, 1] at `image_size`; the
        model normalises them itself. A LeRobot batch's `task` is the instruction when none is given."""
        if not isinstance(observation, Mapping):
            raise InputError(
                f"observation: expected a dict of observation key -> array, got {type(observation).__name__}"
            )
        if instruction is None and self.instruction_key is not None and _is_torch_batch(observation):
            instruction = observation.get(LEROBOT_TASK)
        batch: dict[str, Any] = {}
        layouts: dict[str, tuple[int, bool]] = {}  # input -> (batch size, single environment)
        for name, key in self.inputs.items():
            if key not in observation:
                raise InputError(
                    f"observation: missing {key!r} (model input {name!r}); the observation has {sorted(observation)}"
                )
            value = observation[key]
            if isinstance(value, torch.Tensor):
                tensor, single = self._lerobot_input(name, key, value)
                batch[name] = tensor.to(self.network.device)
                layouts[name] = (len(tensor), single)
                continue
            value = np.asarray(value)
            if name in self.images:
                if value.dtype != np.uint8 or value.ndim not in (3, 4) or value.shape[-1] != 3:
                    raise InputError(
                        f"observation[{key!r}]: expected a uint8 image (H, W, 3) or (B, H, W, 3), got {value.dtype} {value.shape}"
                    )
                frames = value[None] if value.ndim == 3 else value
                tensor = torch.stack([frame_tensor(frame, self.image_size) for frame in frames])
                single = value.ndim == 3
            else:
                if value.ndim not in (1, 2) or not np.issubdtype(value.dtype, np.number):
                    raise InputError(
                        f"observation[{key!r}]: expected a numeric array (d,) or (B, d), got {value.dtype} {value.shape}"
                    )
                tensor = torch.tensor(value, dtype=torch.float32).reshape(
                    -1, value.shape[-1]
                )  # a copy: inputs may be read-only
                single = value.ndim == 1
            batch[name] = tensor.to(self.network.device)
            layouts[name] = (len(tensor), single)
        if len(set(layouts.values())) > 1:
            raise InputError(
                f"observation: inputs disagree on the number of environments (size, single): {layouts}"
            )
        size, single = next(iter(layouts.values()), (1, True))
        if self.instruction_key is None:
            if instruction is not None:
                raise InputError(
                    f"instruction: this model takes no instruction (its inputs: {sorted(self.network.input_kinds)})"
                )
        else:
            if instruction is None:
                raise InputError(
                    f"instruction: the model is conditioned on {self.instruction_key!r}; pass the task text"
                )
            texts = [instruction] * size if isinstance(instruction, str) else list(instruction)
            if len(texts) != size:
                raise InputError(f"instruction: {len(texts)} texts for {size} environment(s)")
            batch[self.instruction_key] = texts
        return batch, (size, single)

    def _lerobot_input(self, name: str, key: str, value: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """A torch input in LeRobot's convention: images float (B, 3, H, W) or (3, H, W) in [0, 1],
        states (B, d) or (d,). Returns the (B, ...) tensor and whether it was of one environment."""
        value = value.detach().cpu()
        if name in self.images:
            if not value.is_floating_point() or value.ndim not in (3, 4) or value.shape[-3] != 3:
                raise InputError(
                    f"observation[{key!r}]: expected a float image (3, H, W) or (B, 3, H, W) in [0, 1] (LeRobot's "
                    f"convention), got {value.dtype} {tuple(value.shape)}"
                )
            frames = value.float()[None] if value.ndim == 3 else value.float()
            if len(frames) and (frames.min() < 0 or frames.max() > 1):
                raise InputError(
                    f"observation[{key!r}]: image values must lie in [0, 1], got {float(frames.min()):.3g} .. "
                    f"{float(frames.max()):.3g}"
                )
            return resize_images(frames, self.image_size), value.ndim == 3
        if value.ndim not in (1, 2) or value.dtype == torch.bool or value.is_complex():
            raise InputError(
                f"observation[{key!r}]: expected a numeric tensor (d,) or (B, d), got {value.dtype} {tuple(value.shape)}"
            )
        return value.to(torch.float32).reshape(-1, value.shape[-1]).clone(), value.ndim == 1


def _is_torch_batch(observation: Mapping[str, Any]) -> bool:
    return any(isinstance(value, torch.Tensor) for value in observation.values())


def _environments(layout: tuple[int, bool]) -> str:
    size, single = layout
    return "one environment" if single else f"a batch of {size} environments"
