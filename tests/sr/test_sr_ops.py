"""Tests for jaxzoo.sr.ops: PixelShuffle against the NCHW formula, MATLAB imresize against
hand-derived values and an independent float64 reference, the Y channel and shaving."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.sr import ops as sr

RNG = np.random.default_rng(0)

# ----------------------------------------------------------------------------- pixel shuffle


def _shuffle_nchw_reference(x, r):
    """PyTorch's definition, element by element:
    out[c, h*r + i, w*r + j] = in[c*r*r + i*r + j, h, w]."""
    n, crr, h, w = x.shape
    c = crr // (r * r)
    out = np.zeros((n, c, h * r, w * r), x.dtype)
    for b in range(n):
        for ch in range(c):
            for y in range(h):
                for xx in range(w):
                    for i in range(r):
                        for j in range(r):
                            out[b, ch, y * r + i, xx * r + j] = x[b, ch * r * r + i * r + j, y, xx]
    return out


@pytest.mark.parametrize("r,c", [(2, 3), (3, 2)])
def test_pixel_shuffle_matches_pytorch_formula(r, c):
    x_nchw = RNG.standard_normal((2, c * r * r, 3, 4)).astype(np.float32)
    want = _shuffle_nchw_reference(x_nchw, r).transpose(0, 2, 3, 1)
    got = sr.pixel_shuffle(jnp.asarray(x_nchw.transpose(0, 2, 3, 1)), r)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_pixel_unshuffle_is_the_inverse_and_matches_formula():
    r = 2
    y = RNG.standard_normal((2, 6, 4, 3)).astype(np.float32)          # NHWC, H and W divisible by r
    u = np.asarray(sr.pixel_unshuffle(jnp.asarray(y), r))
    assert u.shape == (2, 3, 2, 12)
    # out[..., h, w, c*r*r + i*r + j] = y[..., h*r + i, w*r + j, c]
    for h, w, c, i, j in [(0, 0, 0, 0, 0), (2, 1, 2, 1, 0), (1, 1, 1, 1, 1)]:
        assert u[1, h, w, c * r * r + i * r + j] == y[1, h * r + i, w * r + j, c]
    np.testing.assert_array_equal(np.asarray(sr.pixel_shuffle(u, r)), y)
    x = RNG.standard_normal((3, 2, 2, 8)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(sr.pixel_unshuffle(sr.pixel_shuffle(x, 2), 2)), x)


def test_pixel_shuffle_leading_axes_and_errors():
    x = RNG.standard_normal((2, 3, 2, 2, 8)).astype(np.float32)
    got = sr.pixel_shuffle(x, 2)
    for a in range(2):
        np.testing.assert_array_equal(got[a], sr.pixel_shuffle(x[a], 2))
    with pytest.raises(ValueError, match="divisible by r"):
        sr.pixel_shuffle(np.zeros((1, 2, 2, 6)), 2)
    with pytest.raises(ValueError, match="divisible"):
        sr.pixel_unshuffle(np.zeros((1, 3, 2, 1)), 2)
    with pytest.raises(ValueError, match="positive int"):
        sr.pixel_shuffle(np.zeros((1, 2, 2, 4)), 0)


# ----------------------------------------------------------------------------- Y channel, shave


def test_rgb_to_y_known_values():
    img = jnp.asarray([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = np.asarray(sr.rgb_to_y(img))[:, 0] * 255.0
    np.testing.assert_allclose(y, [235.0, 16.0, 16.0 + 65.481, 16.0 + 128.553], rtol=1e-6)
    assert sr.rgb_to_y(jnp.zeros((2, 5, 4, 3))).shape == (2, 5, 4, 1)
    with pytest.raises(ValueError, match="3 channels"):
        sr.rgb_to_y(jnp.zeros((4, 4, 1)))


def test_shave():
    img = jnp.arange(2 * 10 * 12 * 3.0).reshape(2, 10, 12, 3)
    out = sr.shave(img, 4)
    assert out.shape == (2, 2, 4, 3)
    np.testing.assert_array_equal(out, img[:, 4:6, 4:8])
    assert sr.shave(img, 0) is not None and sr.shave(img, 0).shape == img.shape
    with pytest.raises(ValueError, match="leaves nothing"):
        sr.shave(img, 5)
    with pytest.raises(ValueError, match="non-negative"):
        sr.shave(img, -1)


# ----------------------------------------------------------------------------- imresize

# Keys' cubic (a = -0.5) at the offsets a x2 resize uses, from the kernel's polynomial by hand:
# cubic(0.25) = 1.5/64 - 2.5/16 + 1 = 0.8671875,
# cubic(0.75) = 1.5*27/64 - 2.5*9/16 + 1 = 0.2265625,
# cubic(1.25) = -0.5*125/64 + 2.5*25/16 - 5 + 2 = -0.0703125,
# cubic(1.75) = -0.5*343/64 + 2.5*49/16 - 7 + 2 = -0.0234375.


def _resize_1d(signal, scale=None, output_shape=None):
    """imresize along H only (W = 1 with scale 1 is the identity: taps at integer offsets)."""
    x = jnp.asarray(np.asarray(signal, np.float32)[:, None, None])
    if output_shape is not None:
        return np.asarray(sr.imresize(x, output_shape=(output_shape, 1)))[:, 0, 0]
    return np.asarray(sr.imresize(x, scale=(scale, 1.0)))[:, 0, 0]


def test_imresize_x2_upscale_hand_derived():
    # Output x (1-based) sits at u = x/2 + 1/4: 0.75, 1.25, ..., 4.25. Mirrored input s(0) = s(1),
    # s(-1) = s(2). For the impulse [1, 0, 0, 0]:
    # y1 (u=.75): taps s(-1..2) weights (-.0234375, .2265625, .8671875, -.0703125)
    #             -> .2265625 + .8671875
    # y2 (u=1.25): s(0..3) (-.0703125, .8671875, .2265625, -.0234375) -> -.0703125 + .8671875
    # y3 (u=1.75): s(0..3) (-.0234375, .2265625, .8671875, -.0703125) -> -.0234375 + .2265625
    # y4 (u=2.25): s(1..4) first weight -.0703125; y5 (u=2.75): s(1..4) first weight -.0234375.
    want = [1.09375, 0.796875, 0.203125, -0.0703125, -0.0234375, 0.0, 0.0, 0.0]
    np.testing.assert_array_equal(_resize_1d([1.0, 0.0, 0.0, 0.0], 2.0), np.float32(want))


def test_imresize_half_downscale_hand_derived():
    # scale 1/2 with antialiasing: h(t) = cubic(t/2)/2, width 8, u = 2x - 1/2. Interior taps at
    # |u - k| = .5, 1.5, 2.5, 3.5: cubic(.25)/2 = .43359375, cubic(.75)/2 = .11328125,
    # cubic(1.25)/2 = -.03515625, cubic(1.75)/2 = -.01171875 (rows already sum to 1).
    # An impulse at k = 8 (1-based) of 16 samples: x=3 (u=5.5, dist -2.5), x=4 (u=7.5, -0.5),
    # x=5 (u=9.5, 1.5), x=6 (u=11.5, 3.5).
    signal = np.zeros(16)
    signal[7] = 1.0
    want = [0.0, 0.0, -0.03515625, 0.43359375, 0.11328125, -0.01171875, 0.0, 0.0]
    np.testing.assert_array_equal(_resize_1d(signal, 0.5), np.float32(want))


def _reference_resize_1d(signal, out_len, scale, antialias=True):
    """Direct float64 sum over every input sample of the MATLAB kernel, mirrored boundary."""
    n = len(signal)
    out = np.zeros(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)
        s = scale if (scale < 1 and antialias) else 1.0
        ks = np.arange(math.floor(u - 2 / s) - 1, math.ceil(u + 2 / s) + 2)    # 1-based taps
        t = np.abs(s * (u - ks))
        w = s * np.where(t <= 1, 1.5 * t**3 - 2.5 * t**2 + 1,
                         np.where(t <= 2, -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2, 0.0))
        m = (ks - 1) % (2 * n)                    # mirror: ... 2 1 | 1 2 ... n | n n-1 ...
        m = np.where(m < n, m, 2 * n - 1 - m)
        out[x - 1] = np.sum(w * signal[m]) / np.sum(w)
    return out


@pytest.mark.parametrize("n,scale", [(13, 1 / 3), (10, 0.25), (7, 3.0), (9, 0.7)])
def test_imresize_matches_independent_reference_1d(n, scale):
    signal = RNG.standard_normal(n)
    out_len = math.ceil(scale * n)
    got = _resize_1d(signal, scale)
    np.testing.assert_allclose(got, _reference_resize_1d(signal, out_len, scale), atol=2e-6)


def test_imresize_2d_equals_separable_reference():
    img = RNG.random((2, 11, 9, 3))
    with jax.enable_x64(True):
        got = np.asarray(sr.imresize(jnp.asarray(img), scale=(0.5, 2.0)))
    assert got.shape == (2, 6, 18, 3)
    rows = lambda a: _reference_resize_1d(a, 6, 0.5)    # noqa: E731
    cols = lambda a: _reference_resize_1d(a, 18, 2.0)   # noqa: E731
    want = np.apply_along_axis(cols, 2, np.apply_along_axis(rows, 1, img))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [dict(scale=0.25), dict(scale=1 / 3), dict(scale=2.0),
                                dict(scale=4.0), dict(output_shape=(5, 7))])
def test_imresize_constant_image_is_exact(kw):
    # Rows of weights sum to one, so a constant survives up to rounding of the weights.
    with jax.enable_x64(True):
        out64 = np.asarray(sr.imresize(jnp.full((1, 12, 10, 3), 0.37), **kw))
    np.testing.assert_allclose(out64, 0.37, rtol=1e-14)
    out32 = np.asarray(sr.imresize(jnp.full((1, 12, 10, 3), 0.37, jnp.float32), **kw))
    np.testing.assert_allclose(out32, 0.37, rtol=1e-6)


def test_imresize_x4_down_reproduces_linear_ramp_in_the_interior():
    # u = 4x - 1.5 is a half-integer, so the taps are symmetric about u and a linear ramp
    # v(k) = 3k + 1 (k 1-based) maps to v(u) wherever the 16-wide kernel stays inside.
    n = 64
    ramp = 3.0 * np.arange(1, n + 1) + 1.0
    img = jnp.asarray(np.broadcast_to(ramp[:, None, None], (n, n, 1)).astype(np.float32))
    out = np.asarray(sr.imresize(img, 0.25))
    assert out.shape == (16, 16, 1)
    x = np.arange(3, 15)                               # u - 8 >= 1 and u + 8 <= n
    np.testing.assert_allclose(out[x - 1, 5, 0], 3.0 * (4 * x - 1.5) + 1.0, rtol=1e-5)


def test_imresize_output_shape_rules():
    def shape(hw, **kw):
        return sr.imresize(jnp.zeros((*hw, 1)), **kw).shape[:2]

    assert shape((7, 5), scale=0.5) == (4, 3)          # ceil(3.5), ceil(2.5)
    assert shape((10, 11), scale=1 / 3) == (4, 4)      # ceil(3.33), ceil(3.67)
    assert shape((5, 3), scale=1.5) == (8, 5)          # ceil(7.5), ceil(4.5)
    assert shape((8, 8), scale=(0.5, 2)) == (4, 16)
    assert shape((8, 6), output_shape=(3, 13)) == (3, 13)


def test_imresize_batched_equals_loop_jit_and_grad():
    img = jnp.asarray(RNG.random((2, 3, 8, 8, 2)), jnp.float32)
    f = jax.jit(lambda x: sr.imresize(x, 0.5))
    out = f(img)
    for a in range(2):
        for b in range(3):
            np.testing.assert_allclose(out[a, b], sr.imresize(img[a, b], 0.5), rtol=1e-6, atol=1e-7)
    big = img * 1e30
    g = jax.grad(lambda x: jnp.sum(sr.imresize(x, 0.5) ** 2) * 1e-60)(big)
    assert np.all(np.isfinite(np.asarray(sr.imresize(big, 0.5)))) and np.all(np.isfinite(g))


def test_imresize_replicate_boundary_differs_only_at_the_border():
    img = jnp.asarray(RNG.random((32, 32, 1)), jnp.float32)
    a = np.asarray(sr.imresize(img, 0.25))
    b = np.asarray(sr.imresize(img, 0.25, boundary="replicate"))
    inner = slice(3, -3)              # taps reach 8 input pixels = 2 output pixels from u
    np.testing.assert_array_equal(a[inner, inner], b[inner, inner])
    assert not np.allclose(a[0], b[0])


def test_imresize_weights_rows_sum_to_one_and_indices_in_range():
    for n, out, s in [(5, 20, 4.0), (20, 5, 0.25), (7, 3, 3 / 7)]:
        w, idx = sr.imresize_weights(n, out, s)
        np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-14)
        assert idx.min() >= 0 and idx.max() < n and w.shape == idx.shape


def test_imresize_errors():
    img = jnp.zeros((4, 4, 1))
    with pytest.raises(ValueError, match="exactly one"):
        sr.imresize(img)
    with pytest.raises(ValueError, match="exactly one"):
        sr.imresize(img, 2.0, (8, 8))
    with pytest.raises(ValueError, match="floating point"):
        sr.imresize(jnp.zeros((4, 4, 1), jnp.uint8), 2.0)
    with pytest.raises(ValueError, match="positive"):
        sr.imresize(img, -1.0)
    with pytest.raises(ValueError, match="output_shape"):
        sr.imresize(img, output_shape=(0, 3))
    with pytest.raises(ValueError, match="boundary"):
        sr.imresize(img, 2.0, boundary="wrap")
