"""Loader for Blender-format NeRF scenes (the NeRF synthetic release and `nerf_scene`).

A scene root holds `transforms_<split>.json` with `camera_angle_x` (horizontal field of view,
radians) and `frames`, each with `file_path` (relative to the root, usually without the
".png" extension, e.g. "./train/r_0") and `transform_matrix` (4x4 camera-to-world, camera
looking down -z with y up). Images are RGBA PNGs with straight alpha.

Returned arrays: images [N, H, W, 3] float32 in [0, 1], alphas [N, H, W] float32,
poses [N, 3, 4] float32 c2w (the top three rows of transform_matrix), focal in pixels
= 0.5 * W / tan(0.5 * camera_angle_x) for the returned width W.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

DEFAULT_NEAR, DEFAULT_FAR = 2.0, 6.0  # the bounds NeRF uses for every Blender scene


class BlenderData(NamedTuple):
    images: np.ndarray  # [N, H, W, 3] float32, composited on the background
    alphas: np.ndarray  # [N, H, W] float32
    poses: np.ndarray  # [N, 3, 4] float32 camera-to-world
    height: int
    width: int
    focal: float
    near: float
    far: float
    file_paths: tuple[str, ...]


def _image_path(root: Path, file_path: str) -> Path:
    path = root / file_path
    return path if path.suffix else path.with_suffix(".png")


def read_rgba(path) -> np.ndarray:
    """One image as float32 [H, W, 4] in [0, 1]; images without alpha get alpha 1."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I"):
            raise ValueError(f"{path}: 16-bit image mode {img.mode!r} is not supported; "
                             "expected 8-bit RGB or RGBA")
        return np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    h, w = x.shape[:2]
    return x.reshape(h // factor, factor, w // factor, factor, *x.shape[2:]).mean((1, 3))


def load_blender(root, split, *, downscale=1, white_background=True) -> BlenderData:
    """Load one split of a Blender scene.

    Args:
      root: directory holding transforms_<split>.json.
      split: "train", "val", "test" or any name with a transforms_<split>.json.
      downscale: integer factor; each output pixel is the mean of a downscale x downscale block
        of the composited full-resolution image (area averaging), and H, W must be divisible.
      white_background: composite as rgb * a + (1 - a); otherwise on black, rgb * a.
    Returns:
      BlenderData; near and far come from the json when it has them, else 2 and 6.
    """
    root = Path(root)
    if not isinstance(downscale, (int, np.integer)) or isinstance(downscale, bool) \
        or downscale < 1:
        raise ValueError(f"downscale must be a positive int, got {downscale!r}")
    meta_path = root / f"transforms_{split}.json"
    if not meta_path.is_file():
        found = sorted(p.name for p in root.glob("transforms_*.json")) if root.is_dir() else []
        raise FileNotFoundError(f"{meta_path} not found (split {split!r}); "
                                f"found {found or 'no transforms_*.json'} in {root}")
    meta = json.loads(meta_path.read_text())
    for key in ("camera_angle_x", "frames"):
        if key not in meta:
            raise ValueError(f"{meta_path} has no {key!r} key")
    if not meta["frames"]:
        raise ValueError(f"{meta_path} lists no frames")

    images, alphas, poses, paths = [], [], [], []
    for k, frame in enumerate(meta["frames"]):
        path = _image_path(root, frame["file_path"])
        if not path.is_file():
            raise FileNotFoundError(f"image of frame {k} in {meta_path} not found: {path}")
        rgba = read_rgba(path)
        h, w = rgba.shape[:2]
        if k == 0:
            full_size = (h, w)
        elif (h, w) != full_size:
            raise ValueError(f"{path} is {w}x{h} but the first frame is "
                             f"{full_size[1]}x{full_size[0]}")
        if h % downscale or w % downscale:
            raise ValueError(f"downscale={downscale} does not divide the image size {w}x{h}")
        rgb, a = rgba[..., :3], rgba[..., 3:]
        rgb = rgb * a + (1.0 - a) if white_background else rgb * a
        if downscale > 1:
            rgb, a = _block_mean(rgb, downscale), _block_mean(a, downscale)
        images.append(rgb.astype(np.float32))
        alphas.append(a[..., 0].astype(np.float32))
        pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
        if pose.shape != (4, 4):
            raise ValueError(f"frame {k} of {meta_path}: transform_matrix has shape {pose.shape}, "
                             "expected (4, 4)")
        poses.append(pose[:3, :4])
        paths.append(frame["file_path"])

    height, width = images[0].shape[:2]
    focal = 0.5 * width / np.tan(0.5 * float(meta["camera_angle_x"]))
    return BlenderData(
        images=np.stack(images), alphas=np.stack(alphas),
        poses=np.stack(poses).astype(np.float32), height=int(height), width=int(width),
        focal=float(focal), near=float(meta.get("near", DEFAULT_NEAR)),
        far=float(meta.get("far", DEFAULT_FAR)), file_paths=tuple(paths))
