"""cvae_bridge: multimodal conditional VAEs for PyTorch and the Hugging Face ecosystem."""

from . import data, likelihoods, modalities  # noqa: F401  (registers the built-in parts)
from .config import (
    KLConfig,
    ModelConfig,
    RunConfig,
    TargetConfig,
    component,
    from_dict,
    load_run_config,
    to_dict,
)
from .data.resolve import resolve_run_config
from .export import ExportConfig, export_onnx
from .likelihoods import LikelihoodHead
from .modalities.base import Decoder, Encoder, Tokens
from .model import ConditionalVAE
from .pipelines import ActionChunkPolicy, TextToImagePipeline
from .registry import (
    list_datasets,
    list_decoders,
    list_encoders,
    list_likelihoods,
    list_posteriors,
    list_priors,
    register_dataset,
    register_decoder,
    register_encoder,
    register_likelihood,
    register_posterior,
    register_prior,
)
from .version import __version__

__all__ = [
    "__version__",
    "ActionChunkPolicy",
    "ConditionalVAE",
    "TextToImagePipeline",
    "Decoder",
    "Encoder",
    "KLConfig",
    "LikelihoodHead",
    "ModelConfig",
    "RunConfig",
    "TargetConfig",
    "Tokens",
    "ExportConfig",
    "export_onnx",
    "component",
    "from_dict",
    "load_run_config",
    "resolve_run_config",
    "to_dict",
    "list_datasets",
    "list_decoders",
    "list_encoders",
    "list_likelihoods",
    "list_posteriors",
    "list_priors",
    "register_dataset",
    "register_decoder",
    "register_encoder",
    "register_likelihood",
    "register_posterior",
    "register_prior",
]
