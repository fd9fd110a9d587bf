"""Adversarial losses on critic logits: the standard GAN (Goodfellow et al. 2014, 1406.2661) and
the relativistic average GAN (Jolicoeur-Martineau 2018, 1807.00734) as ESRGAN uses it.

Conventions:
  real, fake   critic outputs C(x) as *logits* (before any sigmoid), any shape [...];
               "E[.]" over the mini-batch is the mean over all elements, as in the official
               ESRGAN code (torch.mean over the critic's output). Every loss returns a scalar.
BCE with logits uses -log sigmoid(z) = softplus(-z) and -log(1 - sigmoid(z)) = softplus(z),
which stays finite for logits of any magnitude. Pure jax.numpy: the caller decides where
gradients stop (e.g. fake = C(stop_gradient(G(z))) in a discriminator loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "bce_discriminator_loss",
    "nonsaturating_generator_loss",
    "ragan_discriminator_loss",
    "ragan_generator_loss",
]


def ragan_discriminator_loss(real, fake):
    """Relativistic average discriminator loss, ESRGAN Eq. 1 (Jolicoeur-Martineau 1807.00734).

    With D_Ra(x_r, x_f) = sigmoid(C(x_r) - E_xf[C(x_f)]):
    L_D^Ra = -E_xr[log D_Ra(x_r, x_f)] - E_xf[log(1 - D_Ra(x_f, x_r))].
    real, fake: critic logits C(x_r) [...], C(x_f) [...] -> scalar. The paper's sum of the two
    terms; ESRGAN's released training code averages them (multiply by 0.5 to match it).
    Gradients to the generator should be stopped by the caller (fake = C(stop_gradient(G(z)))).
    """
    real, fake = jnp.asarray(real), jnp.asarray(fake)
    real_rel = real - jnp.mean(fake)
    fake_rel = fake - jnp.mean(real)
    return jnp.mean(jax.nn.softplus(-real_rel)) + jnp.mean(jax.nn.softplus(fake_rel))


def ragan_generator_loss(real, fake):
    """Relativistic average generator loss, ESRGAN Eq. 2, the symmetric form of Eq. 1:
    L_G^Ra = -E_xr[log(1 - D_Ra(x_r, x_f))] - E_xf[log D_Ra(x_f, x_r)].

    Both real and fake logits carry generator gradients here (the point of ESRGAN Sec. 3.2).
    Equal to `ragan_discriminator_loss(fake, real)`. Sum of the two terms as in the paper
    (the released code averages them: multiply by 0.5 to match its weighting lambda = 5e-3).
    """
    real, fake = jnp.asarray(real), jnp.asarray(fake)
    real_rel = real - jnp.mean(fake)
    fake_rel = fake - jnp.mean(real)
    return jnp.mean(jax.nn.softplus(real_rel)) + jnp.mean(jax.nn.softplus(-fake_rel))


def bce_discriminator_loss(real, fake):
    """Standard GAN discriminator BCE (SRGAN Eq. 2, Goodfellow et al. 1406.2661):
    -E[log D(x_r)] - E[log(1 - D(G(z)))] with D = sigmoid(logits). real, fake [...] -> scalar."""
    real, fake = jnp.asarray(real), jnp.asarray(fake)
    return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def nonsaturating_generator_loss(fake):
    """SRGAN's adversarial loss l_Gen = sum_n -log D(G(I_LR)) (SRGAN Eq. 6), the non-saturating
    form, as a mean over the batch: mean softplus(-logits). fake [...] -> scalar."""
    return jnp.mean(jax.nn.softplus(-jnp.asarray(fake)))
