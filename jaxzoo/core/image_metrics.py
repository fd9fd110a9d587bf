"""Image quality metrics in jax.numpy: PSNR and SSIM, matching scikit-image's reference settings.

Images are [..., H, W, C] arrays (any leading batch axes); each metric reduces H, W and C and
returns shape [...]. Both functions are pure and work under jit and vmap.

  psnr(a, b)  == skimage.metrics.peak_signal_noise_ratio(a, b, data_range=max_val)
  ssim(a, b)  == skimage.metrics.structural_similarity(a, b, channel_axis=-1,
                     data_range=max_val, gaussian_weights=True, sigma=1.5,
                     use_sample_covariance=False)
The SSIM settings are those of Wang et al. 2004 ("Image quality assessment: from error
visibility to structural similarity", IEEE TIP 13(4), Eq. 13 with C1 = (K1 L)^2,
C2 = (K2 L)^2, K1 = 0.01, K2 = 0.03, an 11-tap Gaussian window of sigma 1.5 and population
(co)variances), as scikit-image documents them.

How the windowed statistics match scikit-image: skimage filters the whole image (scipy.ndimage,
mode 'reflect', Gaussian truncated at 3.5 sigma, i.e. radius r = int(3.5 sigma + 0.5) = 5, or a
uniform win_size window) and then averages the SSIM map after cropping r = (win_size - 1) // 2
pixels from every side. The cropped pixels are exactly those whose window lies inside the
image, so the padding mode never reaches them, and a 'valid' separable filtering (no padding)
gives the same cropped map. The per-channel means are then averaged, which equals the mean
over all cropped H, W, C values.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np


def _float_dtype(*xs):
    dtype = jnp.result_type(*xs)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32


def _check_pair(a, b, name):
    if a.shape != b.shape:
        raise ValueError(f"{name}: images must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim < 3:
        raise ValueError(f"{name}: images must be [..., H, W, C], got shape {a.shape}")


def _check_max_val(max_val, name):
    if isinstance(max_val, numbers.Real) and not max_val > 0:
        raise ValueError(f"{name}: max_val must be > 0, got {max_val!r}")


def mse_to_psnr(mse, max_val=1.0):
    """PSNR in dB from a mean squared error: 10 log10(max_val^2 / mse); +inf when mse = 0."""
    _check_max_val(max_val, "mse_to_psnr")
    mse = jnp.asarray(mse)
    return 10.0 * jnp.log10(jnp.asarray(max_val, _float_dtype(mse)) ** 2 / mse)


def psnr(a, b, max_val=1.0):
    """Peak signal-to-noise ratio of [..., H, W, C] images -> [...], in dB.

    10 log10(max_val^2 / mean((a - b)^2)), the mean over H, W and C, as skimage's
    peak_signal_noise_ratio with data_range=max_val. Identical images give +inf (no cap),
    as in skimage.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    _check_pair(a, b, "psnr")
    dtype = _float_dtype(a, b)
    mse = jnp.mean((a.astype(dtype) - b.astype(dtype)) ** 2, axis=(-3, -2, -1))
    return mse_to_psnr(mse, max_val)


def gaussian_window(sigma=1.5, truncate=3.5) -> np.ndarray:
    """Normalised 1-D Gaussian taps exp(-x^2 / (2 sigma^2)), x = -r..r, r = int(truncate*sigma
    + 0.5): the kernel of scipy.ndimage.gaussian_filter. Shape [2r + 1]."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * x**2 / sigma**2)
    return w / w.sum()


def _valid_filter(x, taps, axis):
    """Correlate x with 1-D `taps` along `axis` without padding: length n - len(taps) + 1."""
    out_len = x.shape[axis] - len(taps) + 1
    terms = [float(w) * jax.lax.slice_in_dim(x, k, k + out_len, axis=axis)
             for k, w in enumerate(taps)]
    return sum(terms[1:], terms[0])


def ssim(a, b, max_val=1.0, *, sigma=1.5, k1=0.01, k2=0.03, gaussian_weights=True,
         win_size=None, use_sample_covariance=False, return_map=False):
    """Mean structural similarity of [..., H, W, C] images -> [...] (Wang et al. 2004, Eq. 13).

    SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)) per
    pixel and channel, with windowed means and (co)variances, averaged over the pixels whose
    window lies inside the image and over channels. The defaults are Wang et al.'s and equal
    skimage's structural_similarity(..., channel_axis=-1, data_range=max_val,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False).

    Args:
      a, b: images [..., H, W, C]; H and W must be at least the window size (11 by default).
      max_val: the data range L (1 for images in [0, 1], 255 for uint8).
      sigma: Gaussian window width (truncated at 3.5 sigma, as skimage).
      k1, k2: the stabilising constants.
      gaussian_weights: False uses a uniform win_size x win_size window (skimage's default
        mode, default win_size 7, and then use_sample_covariance=True matches skimage defaults).
      win_size: only for the uniform window; the Gaussian window size is fixed by sigma.
      use_sample_covariance: scale (co)variances by NP / (NP - 1), NP = win_size^2.
      return_map: also return the cropped SSIM map [..., H - 2r, W - 2r, C].
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    _check_pair(a, b, "ssim")
    _check_max_val(max_val, "ssim")
    if k1 < 0 or k2 < 0:
        raise ValueError(f"ssim: k1 and k2 must be >= 0, got k1={k1!r}, k2={k2!r}")
    if gaussian_weights:
        taps = gaussian_window(sigma)
        if win_size is not None and win_size != len(taps):
            raise ValueError(f"ssim: with gaussian_weights the window size is set by sigma "
                             f"({len(taps)} for sigma={sigma}); got win_size={win_size!r}")
    else:
        win_size = 7 if win_size is None else win_size
        if not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
            raise ValueError(f"ssim: win_size must be a positive odd int, got {win_size!r}")
        taps = np.full(win_size, 1.0 / win_size)
    win = len(taps)
    height, width = a.shape[-3], a.shape[-2]
    if height < win or width < win:
        raise ValueError(f"ssim: images of {height}x{width} are smaller than the {win}x{win} "
                         "window")

    dtype = _float_dtype(a, b)
    cov_norm = win**2 / (win**2 - 1.0) if use_sample_covariance else 1.0
    mean, ssim_map = _ssim_map(a.astype(dtype), b.astype(dtype), jnp.asarray(max_val, dtype),
                               taps=tuple(float(w) for w in taps), k1=float(k1), k2=float(k2),
                               cov_norm=float(cov_norm))
    return (mean, ssim_map) if return_map else mean


@functools.partial(jax.jit, static_argnames=("taps", "k1", "k2", "cov_norm"))
def _ssim_map(a, b, max_val, *, taps, k1, k2, cov_norm):
    """(mean SSIM [...], cropped SSIM map) for float images; jitted so eager calls compile once."""

    def filt(x):
        return _valid_filter(_valid_filter(x, taps, -3), taps, -2)

    # Same quantities as Eq. 13, arranged for round-off: the (co)variances are taken about a
    # common per-channel offset (they are shift-invariant), which avoids cancelling large
    # E[x^2] - E[x]^2 terms on flat images, and the denominators are written as
    # B1 = A1 + (mu_a - mu_b)^2, B2 = A2 + var(a - b), so identical images give exactly 1.
    shift = jax.lax.stop_gradient(0.5 * jnp.mean(a + b, axis=(-3, -2), keepdims=True))
    a_c, b_c = a - shift, b - shift
    mu_ac, mu_bc = filt(a_c), filt(b_c)
    mu_a, mu_b = mu_ac + shift, mu_bc + shift
    cov_ab = cov_norm * (filt(a_c * b_c) - mu_ac * mu_bc)
    var_diff = cov_norm * (filt((a - b) ** 2) - (mu_ac - mu_bc) ** 2)  # var_a + var_b - 2 cov
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    num_l = 2.0 * mu_a * mu_b + c1
    num_cs = 2.0 * cov_ab + c2
    ssim_map = (num_l * num_cs) / ((num_l + (mu_a - mu_b) ** 2) * (num_cs + var_diff))
    return jnp.mean(ssim_map, axis=(-3, -2, -1)), ssim_map
