"""PSNR / SSIM against scikit-image's reference implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from jaxzoo.core.image_metrics import gaussian_window, mse_to_psnr, psnr, ssim


def sk_ssim(a, b, data_range=1.0):
    return structural_similarity(a, b, channel_axis=-1, data_range=data_range,
                                 gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def image_pairs():
    rng = np.random.default_rng(0)
    pairs = []
    # random noise, non-square, 3 channels
    a = rng.random((19, 27, 3))
    pairs.append((a, np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)))
    # unrelated random images, 1 channel
    pairs.append((rng.random((16, 12, 1)), rng.random((16, 12, 1))))
    # structured: smooth gradients vs a shifted / darkened copy
    y, x = np.mgrid[0:24, 0:20] / 20.0
    grad = np.stack([x, y, 0.5 * (x + y)], -1).clip(0, 1)
    pairs.append((grad, 0.8 * np.roll(grad, 2, axis=1)))
    # checkerboard vs blurred checkerboard (edges), and a nearly flat pair (low variance)
    checker = ((np.indices((22, 22)).sum(0) // 3) % 2).astype(np.float64)[..., None]
    blurred = (checker + np.roll(checker, 1, 0) + np.roll(checker, 1, 1)) / 3.0
    pairs.append((np.repeat(checker, 2, -1), np.repeat(blurred, 2, -1)))
    flat = np.full((13, 15, 3), 0.5)
    pairs.append((flat, flat + 1e-3 * rng.standard_normal(flat.shape)))
    return pairs


@pytest.mark.parametrize("k", range(5))
def test_matches_skimage_float32(k):
    a, b = image_pairs()[k]
    assert abs(float(psnr(a, b)) - peak_signal_noise_ratio(a, b, data_range=1)) < 1e-4
    assert abs(float(ssim(a, b)) - sk_ssim(a, b)) < 1e-5


@pytest.mark.parametrize("k", range(5))
def test_matches_skimage_float64_exactly(k):
    a, b = image_pairs()[k]
    with jax.enable_x64(True):
        assert float(psnr(a, b)) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1),
                                                  rel=1e-12)
        assert float(ssim(a, b)) == pytest.approx(sk_ssim(a, b), abs=1e-10)


def test_uint8_and_uniform_window_and_max_val():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (20, 18, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    assert abs(float(psnr(a, b, 255.0)) - peak_signal_noise_ratio(a, b, data_range=255)) < 1e-4
    assert abs(float(ssim(a, b, 255.0)) - sk_ssim(a, b, 255)) < 1e-5
    # skimage's own defaults: 7x7 uniform window, sample covariance
    af, bf = a / 255.0, b / 255.0
    ref = structural_similarity(af, bf, channel_axis=-1, data_range=1)
    ours = ssim(af, bf, gaussian_weights=False, use_sample_covariance=True)
    assert abs(float(ours) - ref) < 1e-5


def test_gaussian_window_is_ndimage_kernel():
    from scipy.ndimage import gaussian_filter1d
    impulse = np.zeros(31)
    impulse[15] = 1.0
    ref = gaussian_filter1d(impulse, 1.5, truncate=3.5)
    w = gaussian_window(1.5)
    assert len(w) == 11
    np.testing.assert_allclose(ref[10:21], w, atol=1e-15)
    assert np.all(ref[:10] == 0) and np.all(ref[21:] == 0)


def test_batched_equals_loop_and_jit():
    rng = np.random.default_rng(2)
    a = rng.random((2, 3, 14, 16, 3)).astype(np.float32)
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1).astype(np.float32)
    s, p = jax.jit(ssim)(a, b), jax.jit(psnr)(a, b)
    assert s.shape == p.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(s[i, j], ssim(a[i, j], b[i, j]), rtol=1e-6)
            np.testing.assert_allclose(p[i, j], psnr(a[i, j], b[i, j]), rtol=1e-6)
            assert abs(float(s[i, j]) - sk_ssim(a[i, j], b[i, j])) < 1e-5


def test_identical_images():
    a = np.random.default_rng(3).random((12, 12, 3))
    assert float(ssim(a, a)) == 1.0
    assert float(psnr(a, a)) == np.inf  # no cap, as skimage
    zeros = np.zeros((11, 11, 1))
    assert float(ssim(zeros, zeros)) == 1.0


def test_psnr_closed_form():
    a = np.zeros((4, 4, 3))
    b = np.full((4, 4, 3), 0.1)  # mse = 0.01 -> 20 dB
    assert float(psnr(a, b)) == pytest.approx(20.0, abs=1e-5)
    assert float(mse_to_psnr(0.01)) == pytest.approx(20.0, abs=1e-5)
    assert float(psnr(a, b, max_val=2.0)) == pytest.approx(20.0 + 20 * np.log10(2), abs=1e-5)


def test_gradients_finite_at_extremes():
    rng = np.random.default_rng(4)
    for a in (np.zeros((12, 12, 3)), np.ones((12, 12, 3)), rng.random((12, 12, 3))):
        a = jnp.asarray(a, jnp.float32)
        b = jnp.asarray(rng.random((12, 12, 3)), jnp.float32)
        g = jax.grad(lambda x: 1.0 - ssim(x, b))(a)
        assert np.all(np.isfinite(g)) and np.any(g != 0)
        gp = jax.grad(lambda x: psnr(x, b))(a)
        assert np.all(np.isfinite(gp))


def test_bad_inputs():
    a = np.zeros((12, 12, 3))
    with pytest.raises(ValueError, match="same shape"):
        ssim(a, np.zeros((12, 13, 3)))
    with pytest.raises(ValueError, match="smaller than the 11x11"):
        ssim(np.zeros((10, 12, 3)), np.zeros((10, 12, 3)))
    with pytest.raises(ValueError, match="max_val"):
        psnr(a, a, max_val=0.0)
    with pytest.raises(ValueError, match="win_size"):
        ssim(a, a, win_size=7)
    with pytest.raises(ValueError, match=r"\[..., H, W, C\]"):
        psnr(np.zeros((4, 4)), np.zeros((4, 4)))
