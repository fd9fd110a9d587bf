"""Image grids saved as PNG (Pillow): what people would rather look at than read."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image


def image_grid(images, ncols: int, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tiles images [N, H, W] or [N, H, W, C] (values in [0, 1]) into one [H', W', C] array."""
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W] or [N, H, W, C], got shape {images.shape}")
    n, h, w, c = images.shape
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, np.float32)
    for i, img in enumerate(images):
        r, q = divmod(i, ncols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = img
    return grid


def save_png(path, image, scale: int = 1) -> pathlib.Path:
    """Saves an [H, W] or [H, W, C] image with values in [0, 1], upscaled by `scale` (nearest)."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    path = pathlib.Path(path)
    pil.save(path)
    return path
