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
