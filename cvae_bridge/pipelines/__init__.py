"""Inference only: pipelines load a trained model folder and generate."""

from .policy import ActionChunkPolicy
from .text_to_image import TextToImagePipeline

__all__ = ["ActionChunkPolicy", "TextToImagePipeline"]
