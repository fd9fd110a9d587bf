"""Tests for jaxzoo.nerf.render against closed forms and NumPy references of nerf_pl's code."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.nerf import render

# Jitted entry points (static Python arguments marked): compiling each function once per
# shape is several times cheaper on CPU than dispatching op by op, and it checks that the
# functions trace. Argument-validation tests call the plain functions.
jr = SimpleNamespace(
    frequency_encoding=jax.jit(
        render.frequency_encoding, static_argnames=("num_freqs", "include_input", "log_sampling")
    ),
    get_ray_directions=jax.jit(render.get_ray_directions, static_argnames=("height", "width")),
    get_rays=jax.jit(render.get_rays),
    get_ndc_rays=jax.jit(render.get_ndc_rays, static_argnames=("height", "width")),
    sample_along_rays=jax.jit(
        render.sample_along_rays, static_argnames=("num_samples", "perturb", "lindisp")
    ),
    volume_render=jax.jit(render.volume_render, static_argnames=("white_background",)),
    sample_pdf=jax.jit(render.sample_pdf, static_argnames=("num_samples", "deterministic")),
)

# ----------------------------------------------------------------------------- helpers


def _np_encoding(x, num_freqs, include_input=True, log_sampling=True):
    """nerf_pl's Embedding.forward, written as explicit loops in float64."""
    if log_sampling:
        bands = [2.0**k for k in range(num_freqs)]
    else:
        bands = list(np.linspace(1.0, 2.0 ** (num_freqs - 1), num_freqs))
    out = [x] if include_input else []
    for f in bands:
        out.append(np.sin(f * x))
        out.append(np.cos(f * x))
    return np.concatenate(out, axis=-1)


def _np_render_one_ray(sigma, rgb, z, d):
    """nerf_pl's compositing for one ray, as a Python loop in float64."""
    s = len(z)
    norm = np.linalg.norm(d)
    w = np.zeros(s)
    trans = 1.0
    for i in range(s):
        delta = (z[i + 1] - z[i] if i + 1 < s else 1e10) * norm
        alpha = 1.0 - np.exp(-delta * max(sigma[i], 0.0))
        w[i] = alpha * trans
        trans *= 1.0 - alpha + 1e-10
    return w @ rgb, w @ z, w.sum(), w


def _np_sample_pdf_one_ray(u, bins, weights, eps=1e-5):
    """nerf_pl's sample_pdf for one ray with NumPy searchsorted."""
    w = weights + eps
    pdf = w / w.sum()
    cdf = np.concatenate([[0.0], np.cumsum(pdf)])
    inds = np.searchsorted(cdf, u, side="right")
    below = np.maximum(inds - 1, 0)
    above = np.minimum(inds, len(weights))
    denom = cdf[above] - cdf[below]
    denom = np.where(denom < eps, 1.0, denom)
    return bins[below] + (u - cdf[below]) / denom * (bins[above] - bins[below])


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _tree_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


# ----------------------------------------------------------------------------- encoding


def test_encoding_dims_of_nerf_defaults():
    assert jr.frequency_encoding(jnp.zeros((5, 3)), 10).shape == (5, 63)
    assert jr.frequency_encoding(jnp.zeros((5, 3)), 4).shape == (5, 27)
    assert jr.frequency_encoding(jnp.zeros((2, 4, 3)), 4, include_input=False).shape == (2, 4, 24)


@pytest.mark.parametrize("log_sampling", [True, False])
@pytest.mark.parametrize("include_input", [True, False])
def test_encoding_matches_seed_loop(log_sampling, include_input):
    x = np.random.default_rng(0).uniform(-1.5, 1.5, size=(2, 4, 3))
    with jax.enable_x64(True):
        got = jr.frequency_encoding(
            jnp.asarray(x), 5, include_input=include_input, log_sampling=log_sampling
        )
        np.testing.assert_allclose(
            np.asarray(got), _np_encoding(x, 5, include_input, log_sampling), rtol=1e-12, atol=1e-12
        )


def test_encoding_order_and_no_pi():
    # One channel, x = 0.3: the k-th pair must be sin/cos of 2^k * 0.3, without pi.
    x = 0.3
    got = np.asarray(jr.frequency_encoding(jnp.array([x]), 3))
    expected = [x, np.sin(x), np.cos(x), np.sin(2 * x), np.cos(2 * x), np.sin(4 * x), np.cos(4 * x)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # Linear bands for N = 4 are 1, 10/3, 17/3, 8 (linspace(1, 2^3, 4)).
    lin = np.asarray(jr.frequency_encoding(jnp.array([x]), 4, log_sampling=False))
    np.testing.assert_allclose(lin[1::2], np.sin(np.array([1, 10 / 3, 17 / 3, 8]) * x), rtol=1e-6)


def test_encoding_finite_with_gradients_at_extremes():
    x = jnp.array([[1e-6, -1e3, 1e6]])
    out, grad = jax.jit(jax.value_and_grad(lambda v: jr.frequency_encoding(v, 10).sum()))(x)
    assert _tree_finite((out, grad))


def test_encoding_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_freqs"):
        render.frequency_encoding(jnp.zeros((2, 3)), -1)
    with pytest.raises(ValueError, match="empty"):
        render.frequency_encoding(jnp.zeros((2, 3)), 0, include_input=False)


# ----------------------------------------------------------------------------- rays


def test_ray_directions_pixel_convention():
    h, w, f = 3, 5, 2.5
    for c in (0.5, 0.0, 0.25):
        dirs = np.asarray(render.get_ray_directions(h, w, f, pixel_center=c))
        assert dirs.shape == (h, w, 3)
        for j in range(h):
            for i in range(w):
                expected = [(i + c - w / 2) / f, -(j + c - h / 2) / f, -1.0]
                np.testing.assert_allclose(dirs[j, i], expected, rtol=1e-6, atol=1e-7)
    # Pixel centres (the default): on an odd grid the middle pixel looks down the optical axis,
    # and on an even grid the axis passes between the four middle pixels.
    odd = np.asarray(jr.get_ray_directions(h, w, f))
    np.testing.assert_array_equal(odd[1, 2], [0.0, 0.0, -1.0])
    even = np.asarray(jr.get_ray_directions(4, 6, 3.0))
    np.testing.assert_allclose(even[1:3, 2:4].mean((0, 1)), [0.0, 0.0, -1.0], atol=1e-7)
    # pixel_center=0 (the official NeRF code, nerf_pl): pixel (H/2, W/2) of an even grid is the axis.
    corner = np.asarray(render.get_ray_directions(4, 6, 3.0, pixel_center=0.0))
    np.testing.assert_array_equal(corner[2, 3], [0.0, 0.0, -1.0])


def test_get_rays_rotation_unit_norm_and_origin():
    rng = np.random.default_rng(1)
    rot, trans = _random_rotation(rng), rng.normal(size=3)
    c2w = np.concatenate([rot, trans[:, None]], axis=1)
    dirs = jr.get_ray_directions(4, 5, 3.0)
    rays_o, rays_d = jr.get_rays(dirs, jnp.asarray(c2w, jnp.float32))
    assert rays_o.shape == rays_d.shape == (4, 5, 3)
    np.testing.assert_allclose(np.linalg.norm(rays_d, axis=-1), 1.0, rtol=1e-6)
    ref = np.asarray(dirs, np.float64) @ rot.T
    ref /= np.linalg.norm(ref, axis=-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(rays_d), ref, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rays_o), np.broadcast_to(trans, (4, 5, 3)), rtol=1e-6)
    # A [4, 4] pose gives the same rays.
    c2w44 = np.concatenate([c2w, [[0, 0, 0, 1]]], axis=0)
    rays_o4, rays_d4 = jr.get_rays(dirs, jnp.asarray(c2w44, jnp.float32))
    np.testing.assert_array_equal(np.asarray(rays_d4), np.asarray(rays_d))
    np.testing.assert_array_equal(np.asarray(rays_o4), np.asarray(rays_o))


def test_get_rays_batched_poses_equal_loop():
    rng = np.random.default_rng(2)
    c2ws = np.stack(
        [np.concatenate([_random_rotation(rng), rng.normal(size=(3, 1))], axis=1) for _ in range(3)]
    ).astype(np.float32)
    dirs = jr.get_ray_directions(2, 3, 2.0)
    batch_dirs = jnp.broadcast_to(dirs, (3, 2, 3, 3))
    rays_o, rays_d = jr.get_rays(batch_dirs, jnp.asarray(c2ws)[:, None, None])
    for b in range(3):
        o, d = jr.get_rays(dirs, jnp.asarray(c2ws[b]))
        np.testing.assert_allclose(np.asarray(rays_o[b]), np.asarray(o), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(rays_d[b]), np.asarray(d), rtol=1e-6, atol=1e-7)


def test_get_rays_rejects_bad_shapes():
    with pytest.raises(ValueError, match="c2w"):
        render.get_rays(jnp.zeros((2, 3)), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="directions"):
        render.get_rays(jnp.zeros((2, 2)), jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="height"):
        render.get_ray_directions(0, 4, 1.0)


def _forward_rays(rng, n):
    """Rays from points near the camera, looking into -z (forward-facing scene)."""
    o = rng.uniform(-0.3, 0.3, size=(n, 3))
    d_xy, d_z = rng.uniform(-0.4, 0.4, size=(n, 2)), -rng.uniform(0.5, 1.5, size=(n, 1))
    d = np.concatenate([d_xy, d_z], axis=-1)
    return o, d


def test_ndc_origin_on_near_plane_and_direction_z():
    h, w, f, near = 6, 8, 5.0, 1.0
    rng = np.random.default_rng(3)
    o, d = _forward_rays(rng, 7)
    with jax.enable_x64(True):
        o_ndc, d_ndc = jr.get_ndc_rays(h, w, f, near, jnp.asarray(o), jnp.asarray(d))
        o_ndc, d_ndc = np.asarray(o_ndc), np.asarray(d_ndc)
    t = -(near + o[:, 2]) / d[:, 2]
    o_shift = o + t[:, None] * d
    np.testing.assert_allclose(o_shift[:, 2], -near, rtol=1e-12)
    # Appendix C: o'_z = 1 + 2 n / o_z = -1 and d'_z = -2 n / o_z = 2 after the shift.
    np.testing.assert_allclose(o_ndc[:, 2], -1.0, rtol=1e-12)
    np.testing.assert_allclose(d_ndc[:, 2], -2.0 * near / o_shift[:, 2], rtol=1e-12)
    np.testing.assert_allclose(d_ndc[:, 2], 2.0, rtol=1e-12)
    # o'_x, o'_y are the projection of the shifted origin.
    ax, ay = -f / (w / 2), -f / (h / 2)
    np.testing.assert_allclose(o_ndc[:, 0], ax * o_shift[:, 0] / o_shift[:, 2], rtol=1e-12)
    np.testing.assert_allclose(o_ndc[:, 1], ay * o_shift[:, 1] / o_shift[:, 2], rtol=1e-12)


def test_ndc_maps_ray_points_onto_the_ndc_line():
    h, w, f, near = 6, 8, 5.0, 0.7
    rng = np.random.default_rng(4)
    o, d = _forward_rays(rng, 5)
    with jax.enable_x64(True):
        o_ndc, d_ndc = jr.get_ndc_rays(h, w, f, near, jnp.asarray(o), jnp.asarray(d))
        o_ndc, d_ndc = np.asarray(o_ndc), np.asarray(d_ndc)
    t_near = -(near + o[:, 2]) / d[:, 2]
    ax, ay = -f / (w / 2), -f / (h / 2)
    for k in range(len(o)):
        for extra in [0.0, 0.3, 2.0, 10.0, 1e3]:
            p = o[k] + (t_near[k] + extra) * d[k]  # a world point on the ray beyond the near plane
            proj = np.array([ax * p[0] / p[2], ay * p[1] / p[2], 1 + 2 * near / p[2]])
            # Collinear with the NDC ray ...
            np.testing.assert_allclose(np.cross(proj - o_ndc[k], d_ndc[k]), 0.0, atol=1e-12)
            # ... at t' = 1 - o_z / (o_z + t d_z) with the shifted origin o_z = -near.
            t_ndc = 1.0 + near / p[2]
            assert 0.0 <= t_ndc < 1.0
            np.testing.assert_allclose(proj, o_ndc[k] + t_ndc * d_ndc[k], atol=1e-12)


# ----------------------------------------------------------------------------- stratified sampling


def test_stratified_samples_lie_in_their_strata_and_are_sorted():
    near = jnp.array([0.5, 1.0, 2.0])
    far = jnp.array([1.5, 4.0, 2.5])
    s = 8
    z = np.asarray(jr.sample_along_rays(jax.random.key(0), near, far, s, perturb=True))
    assert z.shape == (3, s)
    anchors = np.linspace(np.asarray(near), np.asarray(far), s, axis=-1)
    mids = 0.5 * (anchors[:, 1:] + anchors[:, :-1])
    lower = np.concatenate([anchors[:, :1], mids], -1)
    upper = np.concatenate([mids, anchors[:, -1:]], -1)
    assert np.all(z >= lower - 1e-6) and np.all(z <= upper + 1e-6)
    assert np.all(np.diff(z, axis=-1) >= 0)
    # The jitter is real: samples are not the anchors.
    assert np.abs(z - anchors).max() > 1e-3
    # perturb=False gives the anchors and needs no key.
    z_det = np.asarray(jr.sample_along_rays(None, near, far, s, perturb=False))
    np.testing.assert_allclose(z_det, anchors, rtol=1e-6)


def test_lindisp_is_linear_in_inverse_depth():
    near, far, s = np.array([1.0, 2.0, 0.5]), np.array([10.0, 100.0, 3.0]), 8
    with jax.enable_x64(True):
        bounds = jnp.asarray(near), jnp.asarray(far)
        z = np.asarray(jr.sample_along_rays(None, *bounds, s, perturb=False, lindisp=True))
    assert z.dtype == np.float64
    inv = 1.0 / z
    np.testing.assert_allclose(inv[:, 0], 1.0 / near, rtol=1e-12)
    np.testing.assert_allclose(inv[:, -1], 1.0 / far, rtol=1e-12)
    step = (1.0 / far - 1.0 / near) / (s - 1)
    np.testing.assert_allclose(np.diff(inv, axis=-1), np.tile(step[:, None], s - 1), rtol=1e-10)
    # ... and not linear in z.
    assert np.ptp(np.diff(z, axis=-1), axis=-1).min() > 1.0
    bounds = jnp.asarray(near, jnp.float32), jnp.asarray(far, jnp.float32)
    zp = np.asarray(jr.sample_along_rays(jax.random.key(1), *bounds, s, lindisp=True))
    assert np.all(np.diff(zp, axis=-1) >= 0)
    assert np.all(zp >= near[:, None] * (1 - 1e-6)) and np.all(zp <= far[:, None] * (1 + 1e-6))


def test_sample_along_rays_bound_shapes():
    key = jax.random.key(2)
    assert jr.sample_along_rays(None, 1.0, 2.0, 4, perturb=False).shape == (4,)
    assert jr.sample_along_rays(key, jnp.ones((3,)), 2.0, 8).shape == (3, 8)
    col = jr.sample_along_rays(None, jnp.ones((5, 1)), 2 * jnp.ones((5, 1)), 4, perturb=False)
    flat = jr.sample_along_rays(None, jnp.ones((5,)), 2 * jnp.ones((5,)), 4, perturb=False)
    np.testing.assert_array_equal(np.asarray(col), np.asarray(flat))
    with pytest.raises(ValueError, match="key"):
        render.sample_along_rays(None, 1.0, 2.0, 4, perturb=True)
    with pytest.raises(ValueError, match="num_samples"):
        render.sample_along_rays(key, 1.0, 2.0, 0)


# ----------------------------------------------------------------------------- volume rendering


@pytest.mark.parametrize("spacing", ["uniform_fine", "uniform_coarse", "irregular"])
def test_constant_density_slab_closed_form(spacing):
    rng = np.random.default_rng(5)
    if spacing == "uniform_fine":
        z_slab = np.linspace(2.0, 3.0, 33)
    elif spacing == "uniform_coarse":
        z_slab = np.linspace(2.0, 3.0, 3)
    else:
        z_slab = np.sort(np.concatenate([[2.0, 3.0], rng.uniform(2.0, 3.0, 10)]))
    # Samples z_0..z_{k-1} sit in the slab [2, 3] with density s; z_k = 3 and beyond have
    # sigma = 0, so the 1e10 last delta falls outside the slab.
    z = np.concatenate([z_slab, [3.5, 4.0]])
    k = len(z_slab) - 1
    sig, colour = 1.7, np.array([0.2, 0.5, 0.9])
    sigma = np.where(np.arange(len(z)) < k, sig, 0.0)
    rgb = rng.uniform(size=(len(z), 3))
    rgb[:k] = colour
    d = np.array([0.3, -0.4, -1.2])  # non-unit: path length is (z_k - z_0) * |d|
    length = (z_slab[-1] - z_slab[0]) * np.linalg.norm(d)
    expected_acc = 1 - np.exp(-sig * length)
    with jax.enable_x64(True):
        out = jr.volume_render(*(jnp.asarray(a) for a in (sigma, rgb, z, d)))
        np.testing.assert_allclose(np.asarray(out.rgb), colour * expected_acc, rtol=1e-8)
        np.testing.assert_allclose(float(out.acc), expected_acc, rtol=1e-8)
    out32 = jr.volume_render(*(jnp.asarray(a, jnp.float32) for a in (sigma, rgb, z, d)))
    np.testing.assert_allclose(np.asarray(out32.rgb), colour * expected_acc, rtol=2e-5)


def test_zero_density_gives_zero_weights_and_white_background():
    rng = np.random.default_rng(6)
    z = jnp.asarray(np.sort(rng.uniform(1, 5, size=(2, 7))), jnp.float32)
    rgb = jnp.asarray(rng.uniform(size=(2, 7, 3)), jnp.float32)
    dirs = jnp.ones((2, 3))
    for sigma in (jnp.zeros((2, 7)), -jnp.ones((2, 7))):  # negative density is cut by the ReLU
        out = jr.volume_render(sigma, rgb, z, dirs)
        np.testing.assert_array_equal(np.asarray(out.weights), 0.0)
        np.testing.assert_array_equal(np.asarray(out.rgb), 0.0)
        np.testing.assert_array_equal(np.asarray(out.depth), 0.0)
        white = jr.volume_render(sigma, rgb, z, dirs, white_background=True)
        np.testing.assert_array_equal(np.asarray(white.rgb), 1.0)


def test_white_background_adds_remaining_transmittance():
    rng = np.random.default_rng(7)
    # Zero density on the last sample, so its 1e10 delta does not make every ray opaque.
    sigma = jnp.asarray(rng.uniform(0, 0.3, size=(4, 6)) * (np.arange(6) < 5), jnp.float32)
    z = jnp.asarray(np.sort(rng.uniform(1, 3, size=(4, 6))), jnp.float32)
    rgb = jnp.asarray(rng.uniform(size=(4, 6, 3)), jnp.float32)
    dirs = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    black = jr.volume_render(sigma, rgb, z, dirs)
    white = jr.volume_render(sigma, rgb, z, dirs, white_background=True)
    assert float(black.acc.min()) < 0.99  # some light gets through, so the test bites
    np.testing.assert_allclose(
        np.asarray(white.rgb), np.asarray(black.rgb + (1 - black.acc)[:, None]), rtol=1e-6
    )


def test_one_opaque_sample_gives_its_colour_and_depth():
    z = jnp.array([1.0, 1.5, 2.0, 2.5, 3.0])
    rgb = jnp.asarray(np.random.default_rng(8).uniform(size=(5, 3)), jnp.float32)
    sigma = jnp.array([0.0, 0.0, 1e4, 0.0, 5.0])  # sample 2 is opaque; 4 is hidden behind it
    out = jr.volume_render(sigma, rgb, z, jnp.array([0.0, 0.0, -1.0]))
    np.testing.assert_allclose(np.asarray(out.rgb), np.asarray(rgb[2]), rtol=1e-6)
    np.testing.assert_allclose(float(out.depth), 2.0, rtol=1e-6)
    np.testing.assert_allclose(float(out.acc), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.weights), [0, 0, 1, 0, 0], atol=1e-6)


def test_weights_match_seed_loop_and_acc_identity():
    rng = np.random.default_rng(9)
    n, s = 5, 9
    sigma = rng.uniform(-1, 4, size=(n, s))
    z = np.sort(rng.uniform(0.5, 4, size=(n, s)), axis=-1)
    rgb = rng.uniform(size=(n, s, 3))
    dirs = rng.normal(size=(n, 3))
    with jax.enable_x64(True):
        out = jr.volume_render(*(jnp.asarray(a) for a in (sigma, rgb, z, dirs)))
        out = jax.tree_util.tree_map(np.asarray, out)
    for r in range(n):
        ref_rgb, ref_depth, ref_acc, ref_w = _np_render_one_ray(sigma[r], rgb[r], z[r], dirs[r])
        np.testing.assert_allclose(out.weights[r], ref_w, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(out.rgb[r], ref_rgb, rtol=1e-10)
        np.testing.assert_allclose(out.depth[r], ref_depth, rtol=1e-10)
        np.testing.assert_allclose(out.acc[r], ref_acc, rtol=1e-10)
    # acc = 1 - prod(1 - alpha_i), up to nerf_pl's 1e-10 terms.
    deltas = np.concatenate([np.diff(z, axis=-1), np.full((n, 1), 1e10)], -1)
    deltas = deltas * np.linalg.norm(dirs, axis=-1, keepdims=True)
    alpha = 1 - np.exp(-deltas * np.maximum(sigma, 0))
    np.testing.assert_allclose(out.acc, 1 - np.prod(1 - alpha, axis=-1), atol=1e-8)


def test_volume_render_batched_equals_loop():
    rng = np.random.default_rng(10)
    shape, s = (2, 3), 6
    sigma = jnp.asarray(rng.uniform(0, 3, size=shape + (s,)), jnp.float32)
    z = jnp.asarray(np.sort(rng.uniform(1, 4, size=shape + (s,)), axis=-1), jnp.float32)
    rgb = jnp.asarray(rng.uniform(size=shape + (s, 3)), jnp.float32)
    dirs = jnp.asarray(rng.normal(size=shape + (3,)), jnp.float32)
    out = jr.volume_render(sigma, rgb, z, dirs, white_background=True)
    assert out.rgb.shape == shape + (3,) and out.depth.shape == out.acc.shape == shape
    assert out.weights.shape == shape + (s,)
    for idx in np.ndindex(*shape):
        one = jr.volume_render(sigma[idx], rgb[idx], z[idx], dirs[idx], white_background=True)
        for got, ref in zip(out, one):
            np.testing.assert_allclose(np.asarray(got[idx]), np.asarray(ref), rtol=1e-6, atol=1e-7)


def test_density_noise_uses_the_key():
    rng = np.random.default_rng(11)
    sigma = jnp.asarray(rng.uniform(0, 2, size=(3, 5)), jnp.float32)
    z = jnp.asarray(np.sort(rng.uniform(1, 3, size=(3, 5))), jnp.float32)
    rgb = jnp.asarray(rng.uniform(size=(3, 5, 3)), jnp.float32)
    dirs = jnp.ones((3, 3))
    key = jax.random.key(3)
    noisy = jr.volume_render(sigma, rgb, z, dirs, noise_std=0.5, key=key)
    manual = jr.volume_render(sigma + 0.5 * jax.random.normal(key, sigma.shape), rgb, z, dirs)
    np.testing.assert_allclose(np.asarray(noisy.weights), np.asarray(manual.weights), rtol=1e-6)
    clean = jr.volume_render(sigma, rgb, z, dirs)
    assert np.abs(np.asarray(noisy.weights - clean.weights)).max() > 1e-3
    with pytest.raises(ValueError, match="key"):
        render.volume_render(sigma, rgb, z, dirs, noise_std=0.5)
    with pytest.raises(ValueError, match="rgb"):
        render.volume_render(sigma, rgb[:, :4], z, dirs)


@pytest.mark.parametrize("white_background", [False, True])
def test_volume_render_finite_values_and_gradients_at_extremes(white_background):
    s = 13
    sigma = jnp.logspace(-6, 6, s).reshape(1, s) * jnp.ones((3, 1))
    sigma = sigma.at[1].set(sigma[1, ::-1])  # dense first, then thin
    sigma = sigma.at[2].set(1e6)  # everything opaque
    z = jnp.linspace(1e-3, 10.0, s) * jnp.ones((3, 1))
    rgb = jnp.full((3, s, 3), 0.5)
    dirs = jnp.array([[0.0, 0.0, -1.0], [1e-3, 0.0, -1e-3], [3.0, 4.0, -12.0]])

    def loss(sigma, rgb, z, dirs):
        out = jr.volume_render(sigma, rgb, z, dirs, white_background=white_background)
        return out.rgb.sum() + out.depth.sum() + out.acc.sum()

    out = jr.volume_render(sigma, rgb, z, dirs, white_background=white_background)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(sigma, rgb, z, dirs)
    assert _tree_finite(out) and _tree_finite(grads)
    assert float(jnp.abs(grads[0]).max()) > 0  # gradients are not all vanishing


# ----------------------------------------------------------------------------- sample_pdf


def test_sample_pdf_uniform_weights_deterministic_is_linspace():
    bins = jnp.array([[0.0, 0.5, 1.0, 1.5, 2.0], [2.0, 2.25, 2.5, 2.75, 3.0]])
    out = jr.sample_pdf(None, bins, jnp.ones((2, 4)), 9, deterministic=True)
    np.testing.assert_allclose(np.asarray(out[0]), np.linspace(0.0, 2.0, 9), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out[1]), np.linspace(2.0, 3.0, 9), atol=1e-5)


def test_sample_pdf_one_hot_stays_in_its_bin():
    bins = np.array([0.0, 1.0, 1.5, 3.0, 3.2, 4.0])
    hot = np.array([0, 2, 4])  # one ray per hot bin
    weights = np.eye(5)[hot]
    lo, hi = bins[hot][:, None] - 1e-6, bins[hot + 1][:, None] + 1e-6
    jb, jw = jnp.asarray(bins), jnp.asarray(weights)
    det = np.asarray(jr.sample_pdf(None, jb, jw, 33, deterministic=True))
    # u = 0 and u = 1 hit the ends of the range (nerf_pl's 1e-5 floor gives every bin a
    # sliver of mass); every interior u lands in the hot bin.
    assert np.all((det[:, 1:-1] >= lo) & (det[:, 1:-1] <= hi))
    np.testing.assert_allclose(det[:, [0, -1]], [[0.0, 4.0]] * 3, atol=1e-6)
    rnd = np.asarray(jr.sample_pdf(jax.random.key(6), jb, jw, 8))
    assert np.all((rnd >= lo) & (rnd <= hi))


def test_sample_pdf_histogram_follows_weights():
    bins = np.array([0.0, 0.3, 1.0, 1.2, 2.0, 3.5])
    weights = np.array([0.1, 0.4, 0.0, 0.3, 0.2])
    n = 40_000
    out = np.asarray(jr.sample_pdf(jax.random.key(7), jnp.asarray(bins), jnp.asarray(weights), n))
    assert out.min() >= bins[0] and out.max() <= bins[-1]
    counts = np.histogram(out, bins=bins)[0]
    p = (weights + 1e-5) / (weights + 1e-5).sum()
    sd = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(counts - n * p) <= 5 * sd + 1), (counts, n * p)
    # Within a bin samples are uniform: the mean position in bin 1 is its midpoint, 5 sigma.
    in_bin = out[(out >= bins[1]) & (out < bins[2])]
    frac = (in_bin - bins[1]) / (bins[2] - bins[1])
    assert abs(frac.mean() - 0.5) <= 5 * np.sqrt(1 / 12 / len(frac))


def test_sample_pdf_matches_seed_reference_and_per_ray_loop():
    rng = np.random.default_rng(12)
    shape, b, k = (2, 3), 6, 10
    bins = np.sort(rng.uniform(0, 5, size=shape + (b + 1,)), axis=-1)
    weights = rng.uniform(size=shape + (b,)) * (rng.uniform(size=shape + (b,)) > 0.3)
    key = jax.random.key(4)
    with jax.enable_x64(True):
        jb, jw = jnp.asarray(bins), jnp.asarray(weights)
        rnd = np.asarray(jr.sample_pdf(key, jb, jw, k))
        u = np.asarray(jax.random.uniform(key, shape + (k,), dtype=jnp.float64))  # documented draw
        det = np.asarray(jr.sample_pdf(None, jb, jw, k, deterministic=True))
        for idx in np.ndindex(*shape):
            ref = _np_sample_pdf_one_ray(u[idx], bins[idx], weights[idx])
            np.testing.assert_allclose(rnd[idx], ref, rtol=1e-12)
            ref_det = _np_sample_pdf_one_ray(np.linspace(0, 1, k), bins[idx], weights[idx])
            np.testing.assert_allclose(det[idx], ref_det, rtol=1e-12)
            one = jr.sample_pdf(None, jb[idx], jw[idx], k, deterministic=True)
            np.testing.assert_array_equal(np.asarray(one), det[idx])
    # Shared bins broadcast against per-ray weights.
    shared = jr.sample_pdf(None, *map(jnp.asarray, (bins[0, 0], weights)), k, deterministic=True)
    assert shared.shape == shape + (k,)


def _np_sample_pdf_bin_grad(u, bins, weights, coef, eps=1e-5):
    """Closed-form d/d bins of sum_k coef_k * sample_k for one ray: sample_k = (1 - t) b_lo + t b_hi
    with t = (u - cdf_lo) / (cdf_hi - cdf_lo) independent of the bins."""
    w = weights + eps
    cdf = np.concatenate([[0.0], np.cumsum(w / w.sum())])
    inds = np.searchsorted(cdf, u, side="right")
    below, above = np.maximum(inds - 1, 0), np.minimum(inds, len(weights))
    t = (u - cdf[below]) / (cdf[above] - cdf[below])
    g = np.zeros_like(bins)
    np.add.at(g, below, coef * (1 - t))
    np.add.at(g, above, coef * t)
    return g


def test_sample_pdf_gradients_flow_and_match_finite_differences():
    # sample_pdf does not stop gradients itself (its docstring leaves that to the caller): the
    # samples are piecewise smooth in bins and weights. Check jax.grad against the closed-form
    # bin derivative and against central differences of the NumPy reference, in float64.
    rng = np.random.default_rng(13)
    n, b, k = 2, 5, 7
    bins = np.sort(rng.uniform(1.0, 4.0, size=(n, b + 1)), axis=-1)
    weights = rng.uniform(0.2, 1.0, size=(n, b))
    coef = rng.normal(size=(n, k))
    key = jax.random.key(14)
    with jax.enable_x64(True):
        u = np.asarray(jax.random.uniform(key, (n, k), dtype=jnp.float64))  # the documented draw

        def loss(bb, ww):
            return jnp.sum(jnp.asarray(coef) * render.sample_pdf(key, bb, ww, k))

        gb, gw = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(bins), jnp.asarray(weights))
        gb_stop = jax.jit(jax.grad(lambda bb, ww: loss(bb, jax.lax.stop_gradient(ww))))(
            jnp.asarray(bins), jnp.asarray(weights))
    gb, gw, gb_stop = map(np.asarray, (gb, gw, gb_stop))
    h = 1e-6
    for r in range(n):
        w1 = (weights[r] + 1e-5) / (weights[r] + 1e-5).sum()
        cdf = np.concatenate([[0.0], np.cumsum(w1)])
        # No u sits within 1e-4 of a CDF knot, so a step of h keeps every sample in its bin.
        assert np.abs(u[r][:, None] - cdf[None]).min() > 1e-4
        f = lambda ww: coef[r] @ _np_sample_pdf_one_ray(u[r], bins[r], ww)
        fd = np.array([(f(weights[r] + h * e) - f(weights[r] - h * e)) / (2 * h) for e in np.eye(b)])
        np.testing.assert_allclose(gw[r], fd, rtol=1e-6, atol=1e-8)
        assert np.abs(gw[r]).max() > 1e-2  # the weights really do move the samples
        # The PDF depends on (w + 1e-5) only up to scale: the directional derivative along it is 0.
        assert abs(gw[r] @ (weights[r] + 1e-5)) <= 1e-10 * np.abs(gw[r]).sum() * weights[r].max()
        ref_gb = _np_sample_pdf_bin_grad(u[r], bins[r], weights[r], coef[r])
        np.testing.assert_allclose(gb[r], ref_gb, rtol=1e-10, atol=1e-12)
        # Stopping the weights' gradient (as nerf_pl's detach()) leaves the bins' gradient alone.
        np.testing.assert_allclose(gb_stop[r], ref_gb, rtol=1e-10, atol=1e-12)


def test_sample_pdf_extreme_weights_are_finite():
    bins = jnp.linspace(1.0, 3.0, 9) * jnp.ones((3, 1))
    weights = jnp.stack([jnp.full(8, 1e-30), jnp.logspace(-6, 6, 8), jnp.full(8, 1e30)])
    key = jax.random.key(5)
    out = jr.sample_pdf(key, bins, weights, 16)
    assert _tree_finite(out)
    assert float(out.min()) >= 1.0 and float(out.max()) <= 3.0

    def loss(b, w, stop):
        w = jax.lax.stop_gradient(w) if stop else w
        return jr.sample_pdf(key, b, w, 16).sum()

    grad_fn = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    gb, gw = grad_fn(bins, weights, True)
    assert _tree_finite((gb, gw))
    assert float(jnp.abs(gb).sum()) > 0  # samples still move with the bins
    assert _tree_finite(grad_fn(bins, weights, False))


def test_sample_pdf_rejects_bad_arguments():
    with pytest.raises(ValueError, match="bins"):
        render.sample_pdf(None, jnp.zeros(5), jnp.ones(5), 4, deterministic=True)
    with pytest.raises(ValueError, match="key"):
        render.sample_pdf(None, jnp.arange(6.0), jnp.ones(5), 4)
    with pytest.raises(ValueError, match="num_samples"):
        render.sample_pdf(None, jnp.arange(6.0), jnp.ones(5), 0, deterministic=True)
