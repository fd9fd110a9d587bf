"""Tests for jaxzoo.core.sr_losses against float64 NumPy references and the RaGAN symmetries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.core import sr_losses as L

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


def test_ragan_losses_match_esrgan_eq_1_2():
    real, fake = RNG.standard_normal(6), RNG.standard_normal(6) - 0.5
    d_ra_rf = 1 / (1 + np.exp(-(real - fake.mean())))     # D_Ra(x_r, x_f)
    d_ra_fr = 1 / (1 + np.exp(-(fake - real.mean())))     # D_Ra(x_f, x_r)
    want_d = -np.mean(np.log(d_ra_rf)) - np.mean(np.log(1 - d_ra_fr))
    want_g = -np.mean(np.log(1 - d_ra_rf)) - np.mean(np.log(d_ra_fr))
    np.testing.assert_allclose(L.ragan_discriminator_loss(real, fake), want_d, rtol=1e-5)
    np.testing.assert_allclose(L.ragan_generator_loss(real, fake), want_g, rtol=1e-5)


def test_ragan_invariant_to_shift_and_swaps_under_exchange():
    real, fake = RNG.standard_normal((2, 8, 1)).astype(np.float32)
    for loss in (L.ragan_discriminator_loss, L.ragan_generator_loss):
        np.testing.assert_allclose(loss(real + 3.7, fake + 3.7), loss(real, fake), rtol=1e-5)
    # Exchanging the roles of real and fake turns the discriminator loss into the generator's.
    np.testing.assert_allclose(L.ragan_discriminator_loss(fake, real),
                               L.ragan_generator_loss(real, fake), rtol=1e-6)
    np.testing.assert_allclose(L.ragan_generator_loss(fake, real),
                               L.ragan_discriminator_loss(real, fake), rtol=1e-6)
    # A perfect critic (real >> fake) has a vanishing discriminator loss.
    assert float(L.ragan_discriminator_loss(real + 50.0, fake - 50.0)) < 1e-20


def test_srgan_adversarial_losses():
    real, fake = RNG.standard_normal(5), RNG.standard_normal(5)
    np.testing.assert_allclose(L.srgan_generator_loss(fake), np.mean(_neg_log_sigmoid(fake)),
                               rtol=1e-5)
    want = np.mean(_neg_log_sigmoid(real)) + np.mean(_neg_log_sigmoid(-fake))
    np.testing.assert_allclose(L.srgan_discriminator_loss(real, fake), want, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_gan_losses_finite_at_extreme_logits(scale):
    real = jnp.asarray([1.0, -1.0, 0.5], jnp.float32) * scale
    fake = jnp.asarray([-1.0, 1.0, 0.0], jnp.float32) * scale
    for fn in (L.ragan_discriminator_loss, L.ragan_generator_loss, L.srgan_discriminator_loss):
        val, grads = jax.value_and_grad(fn, argnums=(0, 1))(real, fake)
        assert np.isfinite(val) and all(np.all(np.isfinite(g)) for g in grads)
    val, g = jax.value_and_grad(L.srgan_generator_loss)(fake)
    assert np.isfinite(val) and np.all(np.isfinite(g))


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
