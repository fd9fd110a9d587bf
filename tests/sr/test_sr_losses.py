"""Tests for jaxzoo.sr.losses against float64 NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.sr import losses as L

RNG = np.random.default_rng(1)


def _neg_log_sigmoid(z):
    return np.log1p(np.exp(-z))          # -log sigmoid(z), moderate z only


def test_pixel_and_perceptual_losses():
    a, b = RNG.standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(L.l1_loss(a, b), np.mean(np.abs(a - b)), rtol=1e-6)
    np.testing.assert_allclose(L.l2_loss(a, b), np.mean((a - b) ** 2), rtol=1e-6)
    np.testing.assert_allclose(L.perceptual_loss(a, b), np.mean(np.abs(a - b)), rtol=1e-6)
    np.testing.assert_allclose(L.perceptual_loss(a, b, "l2"), np.mean((a - b) ** 2), rtol=1e-6)
    with pytest.raises(ValueError, match="criterion"):
        L.perceptual_loss(a, b, "cosine")
    with pytest.raises(ValueError, match="shapes differ"):
        L.l1_loss(a, b[:2])


def _tree():
    return {"conv": {"kernel": RNG.standard_normal((3, 3, 2, 4)).astype(np.float32),
                     "bias": RNG.standard_normal(4).astype(np.float32)},
            "dense": [RNG.standard_normal((4, 2)).astype(np.float32)]}


def test_interpolate_params_endpoints_exact_and_midpoint():
    a, b = _tree(), _tree()
    for alpha, want in ((0.0, a), (1.0, b), (0, a), (1, b)):
        out = L.interpolate_params(a, b, alpha)
        for x, y in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(want)):
            np.testing.assert_array_equal(np.asarray(x), y)
    mid = L.interpolate_params(a, b, 0.25)
    np.testing.assert_allclose(mid["conv"]["kernel"], 0.75 * a["conv"]["kernel"]
                               + 0.25 * b["conv"]["kernel"], rtol=1e-6)
    assert mid["conv"]["kernel"].dtype == np.float32
    traced = jax.jit(L.interpolate_params)(a, b, jnp.float32(0.5))
    np.testing.assert_allclose(traced["dense"][0], (a["dense"][0] + b["dense"][0]) / 2, rtol=1e-6)


def test_interpolate_params_errors_name_the_key():
    a = _tree()
    b = _tree()
    b["conv"]["kernel"] = b["conv"]["kernel"][:, :, :, :3]
    with pytest.raises(ValueError, match=r"conv/kernel.*\(3, 3, 2, 4\) vs \(3, 3, 2, 3\)"):
        L.interpolate_params(a, b, 0.5)
    c = _tree()
    del c["conv"]["bias"]
    with pytest.raises(ValueError, match="params_b lacks key 'conv/bias'"):
        L.interpolate_params(a, c, 0.5)
    with pytest.raises(ValueError, match="params_a lacks key 'conv/bias'"):
        L.interpolate_params(c, a, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        L.interpolate_params(a, a, 1.5)
    with pytest.raises(ValueError, match="not floating point"):
        L.interpolate_params({"step": np.int32(3)}, {"step": np.int32(4)}, 0.5)
