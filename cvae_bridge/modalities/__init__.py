"""Built-in modalities, one file each; importing this package registers them.

    base.py             Encoder / Decoder base classes, Tokens, their registry contracts
    image.py            a small CNN, both ways; image_backbone.py: ImageNet-pretrained CNNs
    text.py             a pretrained Hugging Face transformer (local files only)
    action.py           ACT's action-chunk encoder and transformer decoder
    vector.py           flat vectors and class labels

Imports the core only (config, errors, registry, layers, imagenet, utils).
"""

from . import action, image, image_backbone, text, vector  # noqa: F401
