"""Inference only: pipelines load a trained model folder and generate, each through one `__call__`.

    text_to_image.py   TextToImagePipeline: prompts -> images
    policy.py          ActionChunkPolicy: observations -> actions (ACT's chunking and ensembling)

Imports only the model, the hub, config, errors and utils (tests/test_layering.py): a trained model runs
without the dataset, training or evaluation code.
"""

from .policy import ActionChunkPolicy
from .text_to_image import TextToImagePipeline

__all__ = ["ActionChunkPolicy", "TextToImagePipeline"]
