"""Super-resolution image data: HR/LR pairs, random training patches, whole test images.

Conventions: images are NumPy [H, W, 3] arrays; `hr` are float32 in [0, 1] (or uint8 from TFDS,
converted per patch), `lr` the x`scale` downsampled images with H/scale, W/scale pixels. Every
HR image is first cropped to a multiple of `scale` (top-left kept, `mod_crop`), and its LR
image is `jaxzoo.sr.ops.imresize(hr, 1/scale)`: MATLAB's antialiased bicubic, as SRGAN
(1609.04802 Sec. 3.2) and ESRGAN (1809.00219 Sec. 4.1) make their inputs.

Sources:
  embedded   the colour photographs that ship inside the scikit-image package (read from its
             data directory; never downloaded), split by image:
               train: EMBEDDED_TRAIN (7 images), test: EMBEDDED_TEST (chelsea, coffee).
  div2k      TFDS `div2k/bicubic_x4` (train split for training, validation split for testing),
             opened with `jaxzoo.data.tfds_utils.data_source`; its LR images are the released
             MATLAB-bicubic ones.
  dir        a directory of HR images (Set5, Set14, BSD100, ...), LR made with `imresize`.

Training batches come from `jaxzoo.data.pipeline.StepIndexedLoader` over image indices with a
`PatchSampler` as its transform: for each index it picks a random LR patch position, the
matching HR patch, and one of the 8 flip/90-degree-rotation symmetries, all drawn from the
loader's per-step generator, so batches are a pure function of (seed, step).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import jax
import numpy as np
from PIL import Image

from jaxzoo.errors import ConfigError, DataError, MissingFileError
from jaxzoo.sr.ops import imresize

# File of each embedded image in scikit-image's data directory.
EMBEDDED_FILES = {
    "astronaut": "astronaut.png", "rocket": "rocket.jpg", "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png", "retina": "retina.jpg", "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png", "chelsea": "chelsea.png", "coffee": "coffee.png",
}
EMBEDDED_TRAIN = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                  "motorcycle_left", "motorcycle_right")
EMBEDDED_TEST = ("chelsea", "coffee")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DIV2K = "div2k/bicubic_x4"


def skimage_data_dir() -> pathlib.Path:
    import skimage

    return pathlib.Path(skimage.__file__).parent / "data"


def read_image(path) -> np.ndarray:
    """An image file as float32 RGB [H, W, 3] in [0, 1] (grey is repeated, alpha dropped)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32) / 255.0


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """The top-left [H - H % scale, W - W % scale] of img [H, W, C]."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def downsample(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-compatible bicubic `imresize(hr, 1 / scale)` of a float [H, W, 3] image whose sides
    are multiples of `scale` -> float32 [H / scale, W / scale, 3] (not clipped or rounded)."""
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not a multiple of scale={scale}; mod_crop first")
    out = jax.jit(lambda x: imresize(x, output_shape=(h // scale, w // scale)))(np.asarray(hr, np.float32))
    return np.asarray(out, np.float32)


def upsample_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: MATLAB `imresize(lr, scale)`, clipped to [0, 1]."""
    h, w = lr.shape[:2]
    out = jax.jit(lambda x: imresize(x, output_shape=(h * scale, w * scale)))(np.asarray(lr, np.float32))
    return np.clip(np.asarray(out, np.float32), 0.0, 1.0)


@dataclasses.dataclass
class Pair:
    """One named HR image and its LR counterpart (HR sides = scale x LR sides)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


def make_pair(name: str, hr: np.ndarray, scale: int) -> Pair:
    hr = mod_crop(np.asarray(hr, np.float32), scale)
    return Pair(name, hr, downsample(hr, scale))


def embedded_pairs(split: str, scale: int = 4, limit: int = 0) -> list[Pair]:
    """The scikit-image photographs of `split` ("train" or "test") as HR/LR pairs (the first
    `limit` of them if limit > 0)."""
    names = {"train": EMBEDDED_TRAIN, "test": EMBEDDED_TEST}.get(split)
    if names is None:
        raise ValueError(f"split={split!r}; allowed: 'train', 'test'")
    names = names[:limit] if limit > 0 else names
    root = skimage_data_dir()
    missing = [EMBEDDED_FILES[n] for n in names if not (root / EMBEDDED_FILES[n]).is_file()]
    if missing:
        raise MissingFileError(f"scikit-image's data directory {root} lacks {missing}")
    return [make_pair(n, read_image(root / EMBEDDED_FILES[n]), scale) for n in names]


def directory_pairs(root, scale: int = 4, limit: int = 0) -> list[Pair]:
    """Every image file in `root` (sorted by name; Set5 / Set14 / BSD100 HR images), or the
    first `limit` if limit > 0."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise MissingFileError(f"image directory {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    files = files[:limit] if limit > 0 else files
    return [make_pair(p.stem, read_image(p), scale) for p in files]


class TFDSPairs:
    """`div2k/bicubic_x4` as a lazy sequence of Pairs (uint8 images, decoded on access)."""

    def __init__(self, split: str, data_dir=None, scale: int = 4):
        from jaxzoo.data import tfds_utils

        if scale != 4:
            raise ConfigError(f"{DIV2K} holds x4 pairs; scale={scale} is not available")
        self.source = tfds_utils.data_source(DIV2K, split, data_dir)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i) -> Pair:
        r = self.source[int(i)]
        return Pair(str(i), np.asarray(r["hr"]), np.asarray(r["lr"]))


def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]; float images are cast to float32 unchanged."""
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def augment(lr: np.ndarray, hr: np.ndarray, k: int, flip: bool):
    """One of the 8 dihedral symmetries, the same on both: optional left-right flip, then k
    counter-clockwise 90-degree rotations. [h, w, C] -> [h, w, C] (square patches)."""
    if flip:
        lr, hr = lr[:, ::-1], hr[:, ::-1]
    return np.rot90(lr, k, axes=(0, 1)), np.rot90(hr, k, axes=(0, 1))


class PatchSampler:
    """`transform(batch, rng)` for StepIndexedLoader: {"index": [B]} -> {"lr", "hr"} patches.

    pairs: a sequence of Pairs (list or lazy, e.g. TFDSPairs).
    patch_size: HR patch side (a multiple of `scale`); the LR patch is patch_size / scale.
    Output: "lr" float32 [B, p/scale, p/scale, 3], "hr" float32 [B, p, p, 3]; patch corners are
    uniform over the LR image and aligned (HR corner = scale x LR corner); with `augment` each
    example gets a uniform random flip and rotation.
    """

    def __init__(self, pairs: Sequence[Pair], patch_size: int, scale: int = 4, augment: bool = True):
        if patch_size % scale:
            raise ConfigError(f"patch_size={patch_size} must be a multiple of scale={scale}")
        self.pairs, self.patch_size, self.scale, self.augment = pairs, patch_size, scale, augment

    def __call__(self, batch, rng: np.random.Generator):
        p, s = self.patch_size // self.scale, self.scale
        lrs, hrs = [], []
        for i in np.asarray(batch["index"]):
            pair = self.pairs[int(i)]
            h, w = pair.lr.shape[:2]
            if h < p or w < p:
                raise DataError(f"image {pair.name!r} (LR {h}x{w}) is smaller than the LR patch {p}; "
                                f"lower data.patch_size (now {self.patch_size})")
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            lr = to_float(pair.lr[y:y + p, x:x + p])
            hr = to_float(pair.hr[s * y:s * (y + p), s * x:s * (x + p)])
            k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
            if self.augment:
                lr, hr = augment(lr, hr, k, flip)
            lrs.append(lr)
            hrs.append(hr)
        return {"lr": np.ascontiguousarray(np.stack(lrs)), "hr": np.ascontiguousarray(np.stack(hrs))}


def training_loader(pairs: Sequence[Pair], batch_size: int, patch_size: int, seed: int,
                    scale: int = 4, augment: bool = True):
    """A StepIndexedLoader drawing one random patch per sampled image index."""
    from jaxzoo.data import pipeline

    index = {"index": np.arange(len(pairs), dtype=np.int64)}
    return pipeline.StepIndexedLoader(index, batch_size, seed=seed,
                                      transform=PatchSampler(pairs, patch_size, scale, augment))


SOURCES = ("embedded", "div2k", "dir")


def load_pairs(source: str, split: str, *, scale: int = 4, root: str = "", data_dir: str = "",
               limit: int = 0):
    """Pairs of `source` ("embedded" | "div2k" | "dir") for `split` ("train" | "test"); the first
    `limit` images only if limit > 0 (embedded, dir).

    "dir" needs `root`; "div2k" maps test to the TFDS validation split.
    """
    if source == "embedded":
        return embedded_pairs(split, scale, limit)
    if source == "div2k":
        return TFDSPairs({"train": "train", "test": "validation"}[split], data_dir or None, scale)
    if source == "dir":
        if not root:
            raise ConfigError("data source 'dir' needs a directory of HR images (e.g. Set5/HR)")
        return directory_pairs(root, scale, limit)
    raise ConfigError(f"data source {source!r}; allowed: {SOURCES}")
