"""Inference only: pipelines load a trained model folder and generate."""

from .text_to_image import TextToImagePipeline

__all__ = ["TextToImagePipeline"]
