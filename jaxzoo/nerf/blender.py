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

from jaxzoo.errors import DataError, MissingFileError

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
    """One image as float32 [H, W, 4] in [0, 1]; images without alpha get alpha 1. A file that
    is missing, truncated or not an 8-bit image raises MissingFileError / DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            if img.mode in ("I;16", "I;16B", "I"):
                raise DataError(f"{path}: 16-bit image mode {img.mode!r} is not supported; "
                                "expected 8-bit RGB or RGBA")
            return np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for truncated/invalid files
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None


def _block_mean(x: np.ndarray, factor: int) -> np.ndarray:
    h, w = x.shape[:2]
    return x.reshape(h // factor, factor, w // factor, factor, *x.shape[2:]).mean((1, 3))


def _number(meta_path, where: str, key: str, value, allowed: str, ok) -> float:
    """`value` as a float if `ok(float)`, else a DataError naming file, entry, key and value."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(float(value)):
        raise DataError(f"{meta_path}: {where}{key}={value!r}; expected {allowed}")
    return float(value)


def read_transforms(meta_path: Path) -> dict:
    """The checked contents of a transforms_<split>.json: `camera_angle_x` in (0, pi),
    optional `near` < `far` (both > 0), and a non-empty `frames` list whose entries have a
    string `file_path` and a finite 4x4 `transform_matrix` whose last row is (0, 0, 0, 1).
    Any violation is a DataError naming the file, the frame and the key."""
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: not valid JSON (line {e.lineno}, column {e.colno}: "
                        f"{e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{meta_path}: not UTF-8 text ({e.reason})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object with camera_angle_x and frames")
    for key in ("camera_angle_x", "frames"):
        if key not in meta:
            raise DataError(f"{meta_path} has no {key!r} key")
    _number(meta_path, "", "camera_angle_x", meta["camera_angle_x"],
            "the horizontal field of view in radians, a number in (0, pi)",
            lambda v: 0.0 < v < np.pi)
    bounds = {k: _number(meta_path, "", k, meta[k], "a finite number > 0",
                         lambda v: np.isfinite(v) and v > 0) for k in ("near", "far") if k in meta}
    if len(bounds) == 2 and not bounds["near"] < bounds["far"]:
        raise DataError(f"{meta_path}: near={bounds['near']} must be < far={bounds['far']}")
    frames = meta["frames"]
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{meta_path}: frames must be a non-empty list, got {frames!r:.80}")
    for k, frame in enumerate(frames):
        where = f"frame {k}: "
        if not isinstance(frame, dict):
            raise DataError(f"{meta_path}: {where}expected an object, got {frame!r:.80}")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise DataError(f"{meta_path}: {where}no {key!r} key")
        if not isinstance(frame["file_path"], str) or not frame["file_path"]:
            raise DataError(f"{meta_path}: {where}file_path={frame['file_path']!r}; expected a "
                            "path relative to the scene directory")
        try:
            pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError):
            pose = None
        if pose is None or pose.shape != (4, 4):
            raise DataError(f"{meta_path}: {where}transform_matrix must be a 4x4 matrix of "
                            f"numbers, got {frame['transform_matrix']!r:.80}")
        if not np.all(np.isfinite(pose)):
            raise DataError(f"{meta_path}: {where}transform_matrix has non-finite entries "
                            f"(nan or inf): {pose.tolist()}")
        if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-4):
            raise DataError(f"{meta_path}: {where}transform_matrix's last row is {pose[3].tolist()};"
                            " expected [0, 0, 0, 1] (a camera-to-world matrix)")
    return meta


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
    Raises:
      MissingFileError for a missing json or image, DataError (naming the file, frame and key)
      for malformed contents (see `read_transforms`), unreadable images or mismatched sizes.
    """
    root = Path(root)
    if not isinstance(downscale, (int, np.integer)) or isinstance(downscale, bool) \
        or downscale < 1:
        raise ValueError(f"downscale must be a positive int, got {downscale!r}")
    meta_path = root / f"transforms_{split}.json"
    if not meta_path.is_file():
        found = sorted(p.name for p in root.glob("transforms_*.json")) if root.is_dir() else []
        raise MissingFileError(f"{meta_path} not found (split {split!r}); "
                               f"found {found or 'no transforms_*.json'} in {root}")
    meta = read_transforms(meta_path)

    images, alphas, poses, paths = [], [], [], []
    for k, frame in enumerate(meta["frames"]):
        path = _image_path(root, frame["file_path"])
        if not path.is_file():
            raise MissingFileError(f"{meta_path}: frame {k}: image {path} (file_path="
                                   f"{frame['file_path']!r}) not found")
        rgba = read_rgba(path)
        h, w = rgba.shape[:2]
        if k == 0:
            full_size = (h, w)
        elif (h, w) != full_size:
            raise DataError(f"{meta_path}: frame {k}: {path} is {w}x{h} but the first frame is "
                            f"{full_size[1]}x{full_size[0]}")
        if h % downscale or w % downscale:
            raise DataError(f"downscale={downscale} does not divide the image size {w}x{h} of "
                            f"{path}")
        rgb, a = rgba[..., :3], rgba[..., 3:]
        rgb = rgb * a + (1.0 - a) if white_background else rgb * a
        if downscale > 1:
            rgb, a = _block_mean(rgb, downscale), _block_mean(a, downscale)
        images.append(rgb.astype(np.float32))
        alphas.append(a[..., 0].astype(np.float32))
        poses.append(np.asarray(frame["transform_matrix"], dtype=np.float64)[:3, :4])
        paths.append(frame["file_path"])

    height, width = images[0].shape[:2]
    focal = 0.5 * width / np.tan(0.5 * float(meta["camera_angle_x"]))
    return BlenderData(
        images=np.stack(images), alphas=np.stack(alphas),
        poses=np.stack(poses).astype(np.float32), height=int(height), width=int(width),
        focal=float(focal), near=float(meta.get("near", DEFAULT_NEAR)),
        far=float(meta.get("far", DEFAULT_FAR)), file_paths=tuple(paths))
