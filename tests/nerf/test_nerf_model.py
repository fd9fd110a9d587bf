import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxzoo.nerf.model import NeRF, NeRFMLP, final, render_image

TINY = dict(depth=2, width=16, skips=(1,), xyz_freqs=3, dir_freqs=2, num_coarse=8, num_fine=8)


def _rays(n, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3)) * 0.2 + np.array([0.0, 0.0, -1.0])
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.tile([0.0, 0.0, 4.0], (n, 1)) + 0.1 * rng.normal(size=(n, 3))
    return jnp.asarray(o, jnp.float32), jnp.asarray(d, jnp.float32)


def test_seed_mlp_has_595844_parameters_and_seed_layer_names():
    shapes = jax.eval_shape(NeRFMLP().init, jax.random.key(0), jnp.zeros((1, 3)), jnp.zeros((1, 3)))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes)) == 595_844
    params = shapes["params"]
    assert params["xyz_encoding_1"]["kernel"].shape == (63, 256)
    assert params["xyz_encoding_5"]["kernel"].shape == (256 + 63, 256)  # skip before index 4
    assert params["dir_encoding"]["kernel"].shape == (256 + 27, 128)
    assert params["sigma"]["kernel"].shape == (256, 1) and params["rgb"]["kernel"].shape == (128, 3)


def test_sigma_does_not_depend_on_view_direction():
    mlp = NeRFMLP(**{k: TINY[k] for k in ("depth", "width", "skips", "xyz_freqs", "dir_freqs")})
    xyz, dirs = jnp.array([[0.3, -0.2, 0.5]]), jnp.array([[0.0, 0.6, -0.8]])
    params = mlp.init(jax.random.key(0), xyz, dirs)
    jac_sigma = jax.jacobian(lambda d: mlp.apply(params, xyz, d)[1])(dirs)
    jac_rgb = jax.jacobian(lambda d: mlp.apply(params, xyz, d)[0])(dirs)
    assert np.all(np.asarray(jac_sigma) == 0.0)
    assert np.any(np.abs(np.asarray(jac_rgb)) > 0)  # colour does depend on it


def test_fine_pass_renders_all_sorted_samples_and_eval_is_deterministic():
    model = NeRF(**TINY)
    o, d = _rays(5)
    params = model.init(jax.random.key(0), o, d, 2.0, 6.0)
    out = model.apply(params, o, d, 2.0, 6.0, jax.random.key(1))
    assert out["coarse"].weights.shape == (5, 8) and out["fine"].weights.shape == (5, 16)
    a, b = (final(model.apply(params, o, d, 2.0, 6.0)) for _ in range(2))
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert final(out) is out["fine"]
    coarse_only = NeRF(**dict(TINY, num_fine=0))
    assert set(coarse_only.apply(coarse_only.init(jax.random.key(0), o, d, 2.0, 6.0), o, d, 2.0, 6.0)) == {"coarse"}


def test_render_image_in_chunks_equals_one_pass():
    model = NeRF(**TINY)
    o, d = _rays(7 * 5)
    params = model.init(jax.random.key(0), o, d, 2.0, 6.0)
    whole = final(model.apply(params, o, d, 2.0, 6.0))
    chunked = jax.jit(lambda p, o, d: render_image(model, p, o, d, 2.0, 6.0, chunk=8))(
        params, o.reshape(7, 5, 3), d.reshape(7, 5, 3))
    assert chunked.rgb.shape == (7, 5, 3) and chunked.depth.shape == (7, 5)
    np.testing.assert_allclose(chunked.rgb.reshape(-1, 3), whole.rgb, atol=1e-6)
    np.testing.assert_allclose(chunked.depth.reshape(-1), whole.depth, atol=1e-5)


def test_training_gradients_are_finite():
    model = NeRF(**dict(TINY, noise_std=1.0))
    o, d = _rays(6)
    params = model.init(jax.random.key(0), o, d, 2.0, 6.0)

    def loss(p):
        out = model.apply(p, o, d, 2.0, 6.0, jax.random.key(2))
        return sum(jnp.mean(r.rgb**2) for r in out.values())

    grads = jax.grad(loss)(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert any(np.any(g != 0) for g in jax.tree.leaves(grads["params"]["coarse"]))


def _apply_recording_depths(model, params, o, d, *args):
    """model.apply, also returning the sample depths z each NeRFMLP ("coarse", "fine") was
    evaluated at, recovered from its input points o + z d (d has unit length)."""
    depths = {}

    def record(next_fun, args_, kwargs, context):
        if isinstance(context.module, NeRFMLP) and context.method_name == "__call__":
            points = np.asarray(args_[0], np.float64)
            depths[context.module.name] = np.einsum("rsc,rc->rs", points - np.asarray(o)[:, None],
                                                    np.asarray(d, np.float64))
        return next_fun(*args_, **kwargs)

    with nn.intercept_methods(record):
        out = model.apply(params, o, d, *args)
    return out, depths


def _split_coarse(z_all, z_coarse, tol=1e-5):
    """Removes one depth matching each coarse sample from the fine pass's depths: returns the
    new (fine) samples, in ascending order."""
    is_coarse = np.zeros(len(z_all), bool)
    for zc in z_coarse:
        is_coarse[np.flatnonzero((np.abs(z_all - zc) < tol) & ~is_coarse)[0]] = True
    return z_all[~is_coarse]


def _np_inverse_cdf(u, bins, weights, eps=1e-5):
    """NeRF Eq. 5 hierarchical sampling for one ray in float64, written from the definition
    (nerf_pl's +1e-5 on the weights): the piecewise-linear inverse of the CDF of the PDF
    (w_i + eps) / sum_j (w_j + eps) on [bins_i, bins_{i+1}]. Returns (samples, float32 error
    bound: the ~1e-6 absolute error of a float32 CDF, divided by the CDF step of the bin and
    scaled by its width; none at u = 0, where the sample is bins_0 exactly)."""
    w = weights + eps
    cdf = np.concatenate([[0.0], np.cumsum(w / w.sum())])
    i = np.clip(np.searchsorted(cdf, u, side="right") - 1, 0, len(w) - 1)
    step = cdf[i + 1] - cdf[i]
    width = bins[i + 1] - bins[i]
    err = np.where(u > 0, 4e-6 / step * width, 0.0)
    return bins[i] + (u - cdf[i]) / step * width, err


def test_fine_samples_are_the_inverse_cdf_of_the_coarse_weights():
    model = NeRF(**TINY)
    n, near, far = 5, 2.0, 6.0
    nc, nf = TINY["num_coarse"], TINY["num_fine"]
    o, d = _rays(n)
    params = model.init(jax.random.key(0), o, d, near, far)
    out, z = _apply_recording_depths(model, params, o, d, near, far)  # eval: deterministic
    w = np.asarray(out["coarse"].weights, np.float64)
    assert w[:, -1].min() > 0.3 and w[:, 1:-1].max() > 0.1  # dropping the end weights matters
    z_coarse = np.linspace(near, far, nc)
    np.testing.assert_allclose(z["coarse"], np.tile(z_coarse, (n, 1)), atol=1e-5)
    bins = 0.5 * (z_coarse[1:] + z_coarse[:-1])
    assert z["fine"].shape == (n, nc + nf)
    for r in range(n):
        assert np.all(np.diff(z["fine"][r]) >= 0)
        new = _split_coarse(z["fine"][r], z_coarse)
        # Seed (nerf_pl): bins are the coarse midpoints, weights drop the two end samples, and
        # deterministic u = linspace(0, 1, num_fine) (increasing u gives increasing samples).
        expected, err = _np_inverse_cdf(np.linspace(0, 1, nf), bins, w[r, 1:-1])
        assert err.max() < 1e-3
        assert np.all(np.abs(new - expected) <= 1e-5 + err), (r, new, expected)

    # Training path: random stratified coarse samples and random u. The fine pass evaluates the
    # coarse samples plus num_fine new ones, sorted; the new ones lie between the outer
    # midpoints (so inside [near, far]), and every one not at an end of that range falls in a
    # bin whose coarse weight is not (numerically) zero.
    out, z = _apply_recording_depths(model, params, o, d, near, far, jax.random.key(3))
    w = np.asarray(out["coarse"].weights, np.float64)
    checked_empty_bins = 0
    for r in range(n):
        zc, za = z["coarse"][r], z["fine"][r]
        assert np.all(np.diff(za) >= 0)
        assert np.all((zc >= near - 1e-5) & (zc <= far + 1e-5))
        new = _split_coarse(za, zc)
        assert len(new) == nf
        mids = 0.5 * (zc[1:] + zc[:-1])
        assert np.all((new >= mids[0] - 1e-5) & (new <= mids[-1] + 1e-5))
        inner = new[(new > mids[0] + 1e-5) & (new < mids[-1] - 1e-5)]
        bin_of = np.searchsorted(mids, inner) - 1
        assert np.all(w[r, 1:-1][bin_of] > 1e-3), (r, inner, w[r])
        checked_empty_bins += int((w[r, 1:-1] < 1e-3).sum())
        # Map the new samples back through the coarse CDF: u must be in [0, 1] and random, not
        # the evaluation grid linspace(0, 1, num_fine).
        wp = w[r, 1:-1] + 1e-5
        cdf = np.concatenate([[0.0], np.cumsum(wp / wp.sum())])
        u = np.interp(new, mids, cdf)
        assert np.all((u >= -1e-5) & (u <= 1 + 1e-5))
        assert np.abs(np.sort(u) - np.linspace(0, 1, nf)).max() > 0.02
    assert checked_empty_bins > 0  # some coarse bins really are empty, so the check bites
