"""cvae_bridge: multimodal conditional VAEs for PyTorch and the Hugging Face ecosystem."""

__version__ = "0.1.0"

from . import data, likelihoods, modalities  # noqa: F401  (registers the built-in parts)
from .config import ModelConfig, TargetConfig, KLConfig, component, from_dict, to_dict
from .model import ConditionalVAE
from .modalities.base import Decoder, Encoder, Tokens
from .likelihoods import LikelihoodHead
from .registry import (
    list_datasets, list_decoders, list_encoders, list_likelihoods, list_posteriors, list_priors,
    register_dataset, register_decoder, register_encoder, register_likelihood, register_posterior, register_prior,
)
