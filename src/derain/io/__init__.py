"""Image files in, image files out: derain's tensors (float32 ``(1, 3, H, W)`` RGB in [0, 1]) <-> files."""

from derain.io.image import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    IMAGE_EXTENSIONS,
    LoadedImage,
    from_tensor,
    read_image,
    to_tensor,
    write_image,
)
from derain.io.listing import list_images, natural_key

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "from_tensor",
    "list_images",
    "natural_key",
    "read_image",
    "to_tensor",
    "write_image",
]
