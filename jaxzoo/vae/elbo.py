"""Evidence lower bound and importance-sampled log-likelihood of latent-variable models (pure
jax.numpy).

Conventions: data `x` is [..., D]; the approximate posterior q(z | x) is a diagonal Gaussian
given by `mean` and `logvar`, each [..., Dz]; latents `z` are [..., Dz]. Every log-density is in
nats and summed over its event (last) axis, so it has the batch shape [...]. Functions broadcast
over leading axes. The decoder enters as a callable `log_px_given_z(z) -> [...]`, so these work
for any observation model.

References: Kingma & Welling, "Auto-Encoding Variational Bayes" (1312.6114), and Burda, Grosse &
Salakhutdinov, "Importance Weighted Autoencoders" (1509.00519), Eq. 8: the importance-sampled
estimate of log p(x) is how a trained VAE is read as a density model.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2.0 * math.pi)


def diag_gaussian_log_prob(x, mean, logvar):
    """log N(x; mean, diag(exp(logvar))), summed over the last axis: [..., D] -> [...]."""
    return -0.5 * jnp.sum(LOG_2PI + logvar + (x - mean) ** 2 * jnp.exp(-logvar), axis=-1)


def standard_normal_log_prob(z):
    """log N(z; 0, I), summed over the last axis: [..., Dz] -> [...]."""
    return -0.5 * jnp.sum(LOG_2PI + z**2, axis=-1)


def bernoulli_log_prob(x, logits):
    """log Bernoulli(x; sigmoid(logits)) summed over the last axis, for x in [0, 1].

    Written as x*log(sigmoid(l)) + (1-x)*log(sigmoid(-l)) = x*l - softplus(l), which is exact and
    finite for any logit magnitude.
    """
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def gaussian_kl_to_standard(mean, logvar):
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) in closed form: [..., Dz] -> [...].

    Kingma & Welling (1312.6114), Appendix B: -1/2 sum(1 + logvar - mean^2 - exp(logvar)).
    """
    return -0.5 * jnp.sum(1.0 + logvar - mean**2 - jnp.exp(logvar), axis=-1)


def reparameterize(key, mean, logvar, num_samples: int | None = None):
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) (Kingma & Welling, Eq. 10 / Sec. 2.4).

    Returns [..., Dz], or [num_samples, ..., Dz] when `num_samples` is given.
    """
    shape = mean.shape if num_samples is None else (num_samples, *mean.shape)
    eps = jax.random.normal(key, shape, mean.dtype)
    return mean + jnp.exp(0.5 * logvar) * eps


def elbo(log_px_given_z, mean, logvar):
    """The ELBO with the analytic KL term (Kingma & Welling, Eq. 10): [...] -> [...].

    Args:
      log_px_given_z: log p(x | z) at a sample z ~ q(z | x), shape [...].
      mean, logvar: q(z | x), [..., Dz].
    """
    return log_px_given_z - gaussian_kl_to_standard(mean, logvar)


def importance_log_likelihood(key, log_px_given_z: Callable, mean, logvar, num_samples: int,
                              chunk_size: int = 500):
    """Importance-sampled estimate of log p(x) with q(z | x) as the proposal.

        log p(x) ~= log (1/k) sum_i p(x, z_i) / q(z_i | x),   z_i ~ q(z | x)

    (Burda et al. 1509.00519, Eq. 8; the bound is exact as k -> inf and never above log p(x) in
    expectation). The k samples are drawn `chunk_size` at a time inside a `lax.scan`, and each
    chunk's log-sum-exp is kept, so memory is O(chunk_size * batch) whatever k is (k = 5000
    fits easily).

    Args:
      key: PRNG key.
      log_px_given_z: `z [chunk, ..., Dz] -> log p(x | z) [chunk, ...]`, x fixed by closure.
      mean, logvar: q(z | x), [..., Dz].
      num_samples: k >= 1.
      chunk_size: samples per chunk; the last chunk's extra samples are masked out.

    Returns:
      [...] the estimate, in nats.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples={num_samples} and chunk_size={chunk_size} must be >= 1")
    chunk_size = min(chunk_size, num_samples)
    num_chunks = -(-num_samples // chunk_size)

    def chunk(_, i):
        z = reparameterize(jax.random.fold_in(key, i), mean, logvar, chunk_size)
        log_w = (log_px_given_z(z) + standard_normal_log_prob(z)
                 - diag_gaussian_log_prob(z, mean, logvar))
        valid = (i * chunk_size + jnp.arange(chunk_size)) < num_samples
        log_w = jnp.where(valid.reshape((-1,) + (1,) * (log_w.ndim - 1)), log_w, -jnp.inf)
        return None, jax.scipy.special.logsumexp(log_w, axis=0)

    _, per_chunk = jax.lax.scan(chunk, None, jnp.arange(num_chunks))
    return jax.scipy.special.logsumexp(per_chunk, axis=0) - math.log(num_samples)
