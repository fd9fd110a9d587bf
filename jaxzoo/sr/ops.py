"""Super-resolution image ops, pure jax.numpy: sub-pixel shuffles, MATLAB-compatible bicubic
resize, Y channel.

References: SRGAN (Ledig et al., 1609.04802), ESRGAN (Wang et al., 1809.00219), the sub-pixel
convolution of Shi et al. (1609.05158), and the MATLAB `imresize` / `rgb2ycbcr` functions that
SR benchmarks use to make low-resolution inputs and to score results.

Conventions:
  images   [..., H, W, C] (NHWC with any number of leading axes), floating point, values in
           [0, 1] unless a function says otherwise.
  r        an integer upscale factor (PixelShuffle / PixelUnshuffle).
  scale    a resize factor, output size / input size; a scalar applies to both H and W.
Every function acts on the trailing (H, W, C) axes and broadcasts over the leading ones.
Resize weights and gather indices depend only on static shapes, so `imresize` builds them
in NumPy (float64) at trace time and the traced computation is a gather and a weighted sum.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

__all__ = [
    "cubic_kernel",
    "imresize",
    "imresize_weights",
    "pixel_shuffle",
    "pixel_unshuffle",
    "rgb_to_y",
    "shave",
]


def _check_image(x, name="x", min_ndim=3):
    x = jnp.asarray(x)
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must be [..., H, W, C], got shape {x.shape}")
    return x


def _check_factor(r):
    if not (isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 1):
        raise ValueError(f"r must be a positive int, got {r!r}")
    return int(r)


# ----------------------------------------------------------------------------- sub-pixel


def pixel_shuffle(x, r: int):
    """Sub-pixel upsampling, PyTorch `nn.PixelShuffle(r)` channel order, in NHWC.

    In PyTorch's NCHW terms out[c, h*r + i, w*r + j] = in[c*r*r + i*r + j, h, w]; here that is
    out[..., h*r + i, w*r + j, c] = x[..., h, w, c*r*r + i*r + j], so weights trained in
    PyTorch carry over with no channel permutation (Shi et al. 1609.05158 Eq. 4; SRGAN Fig. 4).

    x [..., H, W, C*r*r] -> [..., H*r, W*r, C].
    """
    x = _check_image(x)
    r = _check_factor(r)
    *lead, h, w, c = x.shape
    if c % (r * r):
        raise ValueError(f"channels {c} not divisible by r*r = {r * r}")
    n = len(lead)
    x = x.reshape(*lead, h, w, c // (r * r), r, r)          # [..., h, w, c, i, j]
    x = x.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2)  # [..., h, i, w, j, c]
    return x.reshape(*lead, h * r, w * r, c // (r * r))


def pixel_unshuffle(x, r: int):
    """Inverse of `pixel_shuffle` (PyTorch `nn.PixelUnshuffle(r)` order): [..., H, W, C] ->
    [..., H/r, W/r, C*r*r] with out[..., h, w, c*r*r + i*r + j] = x[..., h*r + i, w*r + j, c]."""
    x = _check_image(x)
    r = _check_factor(r)
    *lead, h, w, c = x.shape
    if h % r or w % r:
        raise ValueError(f"H, W = {h}, {w} must be divisible by r = {r}")
    n = len(lead)
    x = x.reshape(*lead, h // r, r, w // r, r, c)            # [..., h, i, w, j, c]
    x = x.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3)  # [..., h, w, c, i, j]
    return x.reshape(*lead, h // r, w // r, c * r * r)


# ----------------------------------------------------------------------------- colour, crop


def rgb_to_y(img):
    """Luma Y of ITU-R BT.601 as MATLAB's `rgb2ycbcr` computes it for [0, 1] input.

    Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255, so black -> 16/255 and white ->
    235/255 (studio swing). SR papers (SRGAN Sec. 3.1, ESRGAN Sec. 4) report PSNR/SSIM on Y.
    img [..., 3] in [0, 1] -> [..., 1] (channel axis kept so NHWC code stays NHWC).
    """
    img = jnp.asarray(img)
    if img.ndim < 1 or img.shape[-1] != 3:
        raise ValueError(f"img must have 3 channels on the last axis, got shape {img.shape}")
    coeffs = jnp.asarray([65.481, 128.553, 24.966], dtype=jnp.result_type(img.dtype, jnp.float32))
    return (16.0 + img @ coeffs)[..., None] / 255.0


def shave(img, border: int):
    """Crop `border` pixels from each side of H and W (SRGAN Sec. 3.1 shaves 4 = the scale
    factor before PSNR/SSIM). img [..., H, W, C] -> [..., H - 2 border, W - 2 border, C]."""
    img = _check_image(img, "img")
    if not (isinstance(border, (int, np.integer)) and border >= 0):
        raise ValueError(f"border must be a non-negative int, got {border!r}")
    h, w = img.shape[-3:-1]
    if 2 * border >= min(h, w):
        raise ValueError(f"border={border} leaves nothing of an image of size {h}x{w}")
    if border == 0:
        return img
    return img[..., border:h - border, border:w - border, :]


# ----------------------------------------------------------------------------- MATLAB imresize


def cubic_kernel(x):
    """Keys' cubic convolution kernel with a = -0.5 (Keys 1981), MATLAB's 'bicubic':
    (1.5|x|^3 - 2.5|x|^2 + 1) on |x| <= 1, (-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2) on 1 < |x| <= 2,
    0 elsewhere. NumPy in, NumPy out (used to build static resize weights)."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    inner = (1.5 * ax - 2.5) * ax * ax + 1.0
    outer = ((-0.5 * ax + 2.5) * ax - 4.0) * ax + 2.0
    return np.where(ax <= 1.0, inner, np.where(ax <= 2.0, outer, 0.0))


def imresize_weights(in_length: int, out_length: int, scale: float, *,
                     antialiasing: bool = True, boundary: str = "symmetric"):
    """MATLAB `imresize`'s `contributions` for one axis: (weights [out, P], indices [out, P]).

    Output pixel x (1-based) sits at input coordinate u = x / scale + (1 - 1/scale) / 2; the
    cubic kernel is stretched to h(t) = scale * cubic(scale * t) and widened to 4 / scale when
    downscaling with antialiasing; P = ceil(width) + 2 taps start at floor(u - width / 2);
    each row is normalised to sum 1. Out-of-range taps are mirrored (boundary="symmetric",
    aux = [1..n, n..1], the current MATLAB code and the usual Python ports) or clamped
    (boundary="replicate", as some older MATLAB releases did: "replicating end-points").
    The two differ only within about 2 / min(scale, 1) pixels of the border.
    Indices are returned 0-based; weights are float64.
    """
    if boundary not in ("symmetric", "replicate"):
        raise ValueError(f"boundary={boundary!r}; allowed: 'symmetric', 'replicate'")
    if in_length < 1 or out_length < 1:
        raise ValueError(f"lengths must be positive, got in={in_length}, out={out_length}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    width = 4.0
    if scale < 1 and antialiasing:
        kernel = lambda t: scale * cubic_kernel(scale * t)  # noqa: E731
        width = width / scale
    else:
        kernel = cubic_kernel
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]                 # 1-based, may be out of range
    weights = kernel(u[:, None] - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)
    idx = idx.astype(np.int64) - 1                                # 0-based
    if boundary == "symmetric":
        period = 2 * in_length
        idx = np.mod(idx, period)
        idx = np.where(idx < in_length, idx, period - 1 - idx)
    else:
        idx = np.clip(idx, 0, in_length - 1)
    keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero tap columns; harmless here
    return weights[:, keep], idx[:, keep]


def _resize_axis(x, axis, out_length, scale, antialiasing, boundary):
    weights, idx = imresize_weights(x.shape[axis], out_length, scale,
                                    antialiasing=antialiasing, boundary=boundary)
    gathered = jnp.take(x, jnp.asarray(idx.reshape(-1)), axis=axis)
    shape = list(x.shape)
    shape[axis:axis + 1] = list(idx.shape)
    gathered = gathered.reshape(shape)                     # [..., out, P, ...] at `axis`
    w = jnp.asarray(weights, dtype=x.dtype).reshape(idx.shape + (1,) * (x.ndim - 1 - axis))
    return jnp.sum(gathered * w, axis=axis + 1)


def imresize(img, scale=None, output_shape=None, *, antialiasing: bool = True,
             boundary: str = "symmetric"):
    """MATLAB-compatible bicubic `imresize(img, scale)` / `imresize(img, [rows cols])`.

    The LR inputs of SRGAN (Sec. 3.2) and ESRGAN (Sec. 4.1, "MATLAB bicubic kernel") are made
    this way. Given `scale` (a float or (scale_h, scale_w)) the output is ceil(scale * size)
    per axis; given `output_shape` (out_h, out_w) the scale per axis is out / in. The resize
    is separable and, like MATLAB (`dimensionOrder`: sort(scale), stable), is applied first
    along the axis with the smaller scale, H first on ties (for float input the order only
    changes rounding; MATLAB's uint8 path rounds in between). Kernel and taps are those of
    `imresize_weights`. Unlike MATLAB on uint8 images the result is neither rounded nor
    clipped: pass floats, and quantise afterwards if you need MATLAB's uint8 output.

    img [..., H, W, C] float -> [..., out_h, out_w, C] of the same dtype.
    """
    img = _check_image(img, "img")
    if not jnp.issubdtype(img.dtype, jnp.floating):
        raise ValueError(f"img must be floating point, got dtype {img.dtype}; convert first")
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    in_hw = img.shape[-3:-1]
    if scale is not None:
        scales = tuple(float(s) for s in np.broadcast_to(np.asarray(scale, dtype=np.float64), (2,)))
        if not all(s > 0 and math.isfinite(s) for s in scales):
            raise ValueError(f"scale must be positive and finite, got {scale!r}")
        out_hw = tuple(int(math.ceil(s * n)) for s, n in zip(scales, in_hw))
    else:
        out_hw = tuple(output_shape)
        if len(out_hw) != 2 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in out_hw):
            raise ValueError(f"output_shape must be two positive ints, got {output_shape!r}")
        out_hw = tuple(int(n) for n in out_hw)
        scales = tuple(o / i for o, i in zip(out_hw, in_hw))
    out = img
    for axis_hw in sorted(range(2), key=lambda k: scales[k]):  # stable: H first on ties
        axis = img.ndim - 3 + axis_hw
        out = _resize_axis(out, axis, out_hw[axis_hw], scales[axis_hw], antialiasing, boundary)
    return out
