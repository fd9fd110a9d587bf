"""Tests for jaxzoo.core.gan_losses against float64 NumPy references and the RaGAN symmetries."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.core import gan_losses as G

RNG = np.random.default_rng(1)


def _neg_log_sigmoid(z):
    return np.log1p(np.exp(-z))          # -log sigmoid(z), moderate z only


def test_ragan_losses_match_esrgan_eq_1_2():
    real, fake = RNG.standard_normal(6), RNG.standard_normal(6) - 0.5
    d_ra_rf = 1 / (1 + np.exp(-(real - fake.mean())))     # D_Ra(x_r, x_f)
    d_ra_fr = 1 / (1 + np.exp(-(fake - real.mean())))     # D_Ra(x_f, x_r)
    want_d = -np.mean(np.log(d_ra_rf)) - np.mean(np.log(1 - d_ra_fr))
    want_g = -np.mean(np.log(1 - d_ra_rf)) - np.mean(np.log(d_ra_fr))
    np.testing.assert_allclose(G.ragan_discriminator_loss(real, fake), want_d, rtol=1e-5)
    np.testing.assert_allclose(G.ragan_generator_loss(real, fake), want_g, rtol=1e-5)


def test_ragan_invariant_to_shift_and_swaps_under_exchange():
    real, fake = RNG.standard_normal((2, 8, 1)).astype(np.float32)
    for loss in (G.ragan_discriminator_loss, G.ragan_generator_loss):
        np.testing.assert_allclose(loss(real + 3.7, fake + 3.7), loss(real, fake), rtol=1e-5)
    # Exchanging the roles of real and fake turns the discriminator loss into the generator's.
    np.testing.assert_allclose(G.ragan_discriminator_loss(fake, real),
                               G.ragan_generator_loss(real, fake), rtol=1e-6)
    np.testing.assert_allclose(G.ragan_generator_loss(fake, real),
                               G.ragan_discriminator_loss(real, fake), rtol=1e-6)
    # A perfect critic (real >> fake) has a vanishing discriminator loss.
    assert float(G.ragan_discriminator_loss(real + 50.0, fake - 50.0)) < 1e-20


def test_standard_gan_losses_match_goodfellow_bce():
    real, fake = RNG.standard_normal(5), RNG.standard_normal(5)
    np.testing.assert_allclose(G.nonsaturating_generator_loss(fake), np.mean(_neg_log_sigmoid(fake)),
                               rtol=1e-5)
    want = np.mean(_neg_log_sigmoid(real)) + np.mean(_neg_log_sigmoid(-fake))
    np.testing.assert_allclose(G.bce_discriminator_loss(real, fake), want, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_gan_losses_finite_at_extreme_logits(scale):
    real = jnp.asarray([1.0, -1.0, 0.5], jnp.float32) * scale
    fake = jnp.asarray([-1.0, 1.0, 0.0], jnp.float32) * scale
    for fn in (G.ragan_discriminator_loss, G.ragan_generator_loss, G.bce_discriminator_loss):
        val, grads = jax.value_and_grad(fn, argnums=(0, 1))(real, fake)
        assert np.isfinite(val) and all(np.all(np.isfinite(g)) for g in grads)
    val, g = jax.value_and_grad(G.nonsaturating_generator_loss)(fake)
    assert np.isfinite(val) and np.all(np.isfinite(g))
