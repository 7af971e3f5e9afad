"""Built-in modalities, one file each; importing this package registers them."""

from . import action, image, vector  # noqa: F401
