"""The variational autoencoder as a density model (Kingma & Welling 1312.6114; Burda et al. 1509.00519).

MLP encoder q(z | x) = N(mean(x), diag(exp(logvar(x)))), standard-normal prior, MLP decoder with
a Bernoulli (binary data) or diagonal Gaussian (continuous data; learned per-dimension variance)
observation model. Data are flat vectors [..., D]; images are flattened by the caller.
The maths lives in `jaxzoo.vae.elbo`; this file only holds the networks and wires them to it.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxzoo.vae import elbo as vae_core

LIKELIHOODS = ("bernoulli", "gaussian")
ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu, "softplus": nn.softplus, "gelu": nn.gelu}


class MLP(nn.Module):
    """Dense layers of the given widths, `activation` after each."""

    features: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x):
        for width in self.features:
            x = ACTIVATIONS[self.activation](nn.Dense(width)(x))
        return x


class VAE(nn.Module):
    """Encoder, decoder and observation model.

    Attributes:
      data_dim: D, the size of a flattened example.
      latent_dim: Dz.
      hidden: widths of the encoder's hidden layers (the decoder mirrors them).
      likelihood: "bernoulli" (x in [0, 1]) or "gaussian".
      activation: one of ACTIVATIONS.
    """

    data_dim: int
    latent_dim: int
    hidden: Sequence[int] = (200, 200)
    likelihood: str = "bernoulli"
    activation: str = "tanh"

    def setup(self):
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood={self.likelihood!r}; allowed: {LIKELIHOODS}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; allowed: {sorted(ACTIVATIONS)}")
        self.encoder = MLP(tuple(self.hidden), self.activation)
        self.to_mean = nn.Dense(self.latent_dim)
        self.to_logvar = nn.Dense(self.latent_dim)
        self.decoder = MLP(tuple(reversed(self.hidden)), self.activation)
        self.to_output = nn.Dense(self.data_dim)
        if self.likelihood == "gaussian":
            self.output_logvar = self.param("output_logvar", nn.initializers.zeros, (self.data_dim,))

    def encode(self, x):
        """x [..., D] -> (mean, logvar) [..., Dz]."""
        h = self.encoder(x)
        return self.to_mean(h), self.to_logvar(h)

    def decode(self, z):
        """z [..., Dz] -> Bernoulli logits or Gaussian mean [..., D]."""
        return self.to_output(self.decoder(z))

    def log_px_given_z(self, x, z):
        """log p(x | z): x [..., D] broadcast against z [..., Dz] -> [...]."""
        out = self.decode(z)
        if self.likelihood == "bernoulli":
            return vae_core.bernoulli_log_prob(x, out)
        return vae_core.diag_gaussian_log_prob(x, out, self.output_logvar)

    def mean_output(self, z):
        """E[x | z] [..., D]: sigmoid(logits) or the Gaussian mean."""
        out = self.decode(z)
        return jax.nn.sigmoid(out) if self.likelihood == "bernoulli" else out

    def __call__(self, x, key):
        """Single-sample ELBO terms: returns (log p(x|z), KL) each [...]."""
        mean, logvar = self.encode(x)
        z = vae_core.reparameterize(key, mean, logvar)
        return self.log_px_given_z(x, z), vae_core.gaussian_kl_to_standard(mean, logvar)


def negative_elbo(model: VAE, params, x, key):
    """Mean over the batch of -ELBO, with its terms: (loss, {"recon", "kl"})."""
    log_px, kl = model.apply(params, x, key)
    recon = -jnp.mean(log_px)
    kl = jnp.mean(kl)
    return recon + kl, {"recon": recon, "kl": kl}


def importance_nll(model: VAE, params, x, key, num_samples: int, chunk_size: int = 500):
    """-log p(x) estimated with `num_samples` importance samples: x [B, D] -> [B]."""
    mean, logvar = model.apply(params, x, method=VAE.encode)

    def log_px_given_z(z):
        return model.apply(params, x, z, method=VAE.log_px_given_z)

    return -vae_core.importance_log_likelihood(key, log_px_given_z, mean, logvar, num_samples,
                                               chunk_size)
