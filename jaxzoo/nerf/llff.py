"""Loader for LLFF forward-facing scenes (`poses_bounds.npy` + `images*/`), NeRF preprocessing.

`poses_bounds.npy` is [N, 17]: per image a 3x5 matrix flattened row-major, [R | t | hwf] with
R's columns in LLFF's [down, right, back] order, t the camera centre and hwf = (H, W, focal) of
the full-resolution images, followed by the near and far scene depths of that view.

Preprocessing (the official NeRF code's load_llff.py, as nerf_pl's datasets/llff.py does it):
  1. focal *= image_width / W_hwf (the images may be a downsampled copy);
  2. axes [down, right, back] -> [right, up, back]: new columns (R1, -R0, R2, t);
  3. `center_poses`: express every pose relative to the average pose (mean centre, mean
     viewing axis, mean up), so the average pose becomes the identity;
  4. `recenter_scale`: divide bounds and translations by 0.75 * min(near), so the nearest
     depth is 1 / 0.75 (the NDC construction assumes near = 1).
Poses are [N, 3, 4] camera-to-world with columns [right, up, back, centre]; vectors are
float64 in the pure helpers and float32 in the returned data.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from jaxzoo.errors import DataError, MissingFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class LLFFData(NamedTuple):
    images: np.ndarray  # [N, H, W, 3] float32 in [0, 1]
    poses: np.ndarray  # [N, 3, 4] float32 camera-to-world, [right, up, back, centre]
    bounds: np.ndarray  # [N, 2] float32 (near, far) after scaling
    height: int
    width: int
    focal: float
    pose_avg: np.ndarray  # [3, 4] average of the converted poses (removed when recenter)
    scale: float  # translations and bounds were divided by this
    image_paths: tuple[str, ...]


def normalize(v: np.ndarray) -> np.ndarray:
    """v / ||v|| along the last axis."""
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def llff_to_right_up_back(poses: np.ndarray) -> np.ndarray:
    """[..., 3, >=4] poses with [down, right, back, t, ...] columns -> [..., 3, 4] [right, up,
    back, t]: concat(R[:, 1], -R[:, 0], R[:, 2:4]) as in nerf_pl."""
    poses = np.asarray(poses, dtype=np.float64)
    return np.concatenate([poses[..., 1:2], -poses[..., 0:1], poses[..., 2:4]], -1)


def average_pose(poses: np.ndarray) -> np.ndarray:
    """[N, 3, 4] -> [3, 4]: centre = mean t, z = normalize(mean z axis), y' = mean y axis,
    x = normalize(y' x z), y = z x x (the LLFF `poses_avg`)."""
    poses = np.asarray(poses, dtype=np.float64)
    center = poses[:, :, 3].mean(0)
    z = normalize(poses[:, :, 2].mean(0))
    y_mean = poses[:, :, 1].mean(0)
    x = normalize(np.cross(y_mean, z))
    y = np.cross(z, x)
    return np.stack([x, y, z, center], 1)


def center_poses(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the inverse of the average pose: returns (inv(avg) @ poses [N, 3, 4], avg [3, 4])."""
    poses = np.asarray(poses, dtype=np.float64)
    avg = average_pose(poses)
    bottom = np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(poses), 1, 4))
    homo = np.concatenate([poses[:, :, :4], bottom], 1)
    avg_homo = np.concatenate([avg, [[0.0, 0.0, 0.0, 1.0]]], 0)
    return (np.linalg.inv(avg_homo) @ homo)[:, :3], avg


def recenter_scale(poses: np.ndarray, bounds: np.ndarray, bd_factor: float = 0.75,
                   recenter: bool = True):
    """Steps 3-4: `center_poses` (when `recenter`), then divide translations and bounds by
    s = bd_factor * min(bounds), so the nearest depth becomes 1 / bd_factor.

    Centring and scaling commute (the average centre scales with the translations), so this
    equals the original NeRF code's scale-then-recentre order.
    Returns (poses [N, 3, 4], bounds [N, 2], pose_avg [3, 4] (unscaled), s).
    """
    bounds = np.asarray(bounds, dtype=np.float64)
    if not bd_factor > 0:
        raise ValueError(f"bd_factor must be > 0, got {bd_factor!r}")
    if not np.all(np.isfinite(bounds)) or bounds.min() <= 0:
        raise ValueError(f"bounds must be finite and > 0, got min {bounds.min()}")
    poses = np.asarray(poses, dtype=np.float64)[..., :4]
    if recenter:
        poses, pose_avg = center_poses(poses)
    else:
        pose_avg = average_pose(poses)
    scale = float(bd_factor * bounds.min())
    poses = poses.copy()
    poses[..., 3] /= scale
    return poses, bounds / scale, pose_avg, scale


def _list_images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_rgb(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != size:
                img = img.resize(size, Image.Resampling.LANCZOS)
            return np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, SyntaxError, ValueError) as e:  # PIL's errors for truncated/invalid files
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None


def load_llff(root, *, factor=None, bd_factor=0.75, recenter=True) -> LLFFData:
    """Load an LLFF scene with NeRF's preprocessing (see the module docstring).

    Args:
      root: directory holding poses_bounds.npy and images/ (and maybe images_<factor>/).
      factor: integer downsampling; reads images_<factor>/ when it exists, else resizes the
        images/ files in memory (Lanczos) to (W // factor, H // factor) of the first image.
      bd_factor: nearest depth after scaling is 1 / bd_factor.
      recenter: apply `center_poses` (nerf_pl always does).
    """
    root = Path(root)
    pb_path = root / "poses_bounds.npy"
    if not pb_path.is_file():
        raise MissingFileError(f"poses_bounds.npy not found: {pb_path}")
    try:
        pb = np.load(pb_path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{pb_path}: cannot read it as a .npy array ({e})") from None
    if pb.ndim != 2 or pb.shape[1] != 17 or not len(pb):
        raise DataError(f"{pb_path} has shape {pb.shape}, expected [N, 17] with N >= 1")
    raw = pb[:, :15].reshape(-1, 3, 5).astype(np.float64)
    bounds = pb[:, 15:17].astype(np.float64)
    for k in range(len(pb)):
        if not np.all(np.isfinite(pb[k])):
            raise DataError(f"{pb_path}: row {k} (image {k}) has non-finite values: {pb[k].tolist()}")
        if not 0 < bounds[k, 0] < bounds[k, 1]:
            raise DataError(f"{pb_path}: row {k}: near={bounds[k, 0]:g}, far={bounds[k, 1]:g}; "
                            "expected 0 < near < far")
    if not np.all(raw[:, :, 4] > 0):
        k = int(np.argmax(~np.all(raw[:, :, 4] > 0, axis=1)))
        raise DataError(f"{pb_path}: row {k}: hwf={raw[k, :, 4].tolist()}; height, width and "
                        "focal must be > 0")

    if factor is not None and (not isinstance(factor, (int, np.integer)) or factor < 1):
        raise ValueError(f"factor must be None or a positive int, got {factor!r}")
    resize = None
    img_dir = root / "images"
    if factor is not None and factor > 1:
        if (root / f"images_{factor}").is_dir():
            img_dir = root / f"images_{factor}"
        else:
            resize = factor
    if not img_dir.is_dir():
        raise MissingFileError(f"image directory not found: {img_dir}")
    files = _list_images(img_dir)
    if len(files) != len(raw):
        raise DataError(f"{img_dir} holds {len(files)} images ({', '.join(IMAGE_SUFFIXES)}) but "
                         f"{pb_path} has {len(raw)} poses")
    size = None
    if resize is not None:
        with Image.open(files[0]) as first:
            size = (first.width // resize, first.height // resize)
    images = [_read_rgb(f, size) for f in files]
    for f, im in zip(files, images):
        if im.shape != images[0].shape:
            raise DataError(f"{f} has shape {im.shape[:2]}, the first image {images[0].shape[:2]}")
    height, width = images[0].shape[:2]

    # Step 1: intrinsics of the full-resolution images, rescaled to the loaded width.
    h_full, w_full, focal_full = raw[0, :, 4]
    if abs(h_full * width / w_full - height) > 1.0:
        raise DataError(f"images are {width}x{height} but poses_bounds.npy says "
                         f"{w_full:g}x{h_full:g}: the aspect ratios differ")
    focal = float(focal_full * width / w_full)

    # Step 2: [down, right, back] -> [right, up, back]; then centre and scale.
    poses = llff_to_right_up_back(raw)
    poses, bounds, pose_avg, scale = recenter_scale(poses, bounds, bd_factor, recenter)
    return LLFFData(images=np.stack(images), poses=poses.astype(np.float32),
                    bounds=bounds.astype(np.float32), height=int(height), width=int(width),
                    focal=focal, pose_avg=pose_avg, scale=scale,
                    image_paths=tuple(str(f) for f in files))
