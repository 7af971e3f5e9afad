"""Built-in modalities, one file each; importing this package registers them."""

from . import action, image, image_backbone, text, vector  # noqa: F401
