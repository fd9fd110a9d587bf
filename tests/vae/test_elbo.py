"""jaxzoo.vae.elbo against closed forms: probabilistic PCA has an exact marginal likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxzoo.vae import elbo as vae

D, DZ, NOISE_STD = 5, 2, 0.5


@pytest.fixture(scope="module")
def ppca():
    """x = W z + mu + e, z ~ N(0, I), e ~ N(0, s^2 I): p(x) = N(mu, W W^T + s^2 I)."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(D, DZ))
    mu = rng.normal(size=D)
    z = rng.normal(size=(6, DZ))
    x = z @ w.T + mu + NOISE_STD * rng.normal(size=(6, D))
    exact = stats.multivariate_normal(mu, w @ w.T + NOISE_STD**2 * np.eye(D)).logpdf(x)
    # Exact posterior q*(z|x) = N(S W^T (x - mu) / s^2, S), S = (I + W^T W / s^2)^-1.
    cov = np.linalg.inv(np.eye(DZ) + w.T @ w / NOISE_STD**2)
    post_mean = (x - mu) @ w @ cov.T / NOISE_STD**2
    return dict(w=w, mu=mu, x=x, exact=exact, cov=cov, post_mean=post_mean)


def _log_px_given_z(p):
    w, mu, x = (jnp.asarray(p[k], jnp.float32) for k in ("w", "mu", "x"))
    logvar = jnp.full(D, 2 * np.log(NOISE_STD), jnp.float32)
    return lambda z: vae.diag_gaussian_log_prob(x, z @ w.T + mu, logvar)


def test_importance_sampled_likelihood_is_within_005_nats_of_exact(ppca):
    # A deliberately imperfect diagonal proposal: shifted mean, inflated variance, no correlation.
    mean = jnp.asarray(ppca["post_mean"] + 0.1, jnp.float32)
    logvar = jnp.asarray(np.log(1.5 * np.diag(ppca["cov"])) * np.ones((6, 1)), jnp.float32)
    est = vae.importance_log_likelihood(jax.random.key(0), _log_px_given_z(ppca), mean, logvar,
                                        num_samples=5000, chunk_size=500)
    np.testing.assert_array_less(np.abs(np.asarray(est) - ppca["exact"]), 0.05)
    # The single-sample ELBO is a strictly looser bound with this proposal.
    z = vae.reparameterize(jax.random.key(1), mean, logvar, 2000)
    elbo = np.mean(vae.elbo(_log_px_given_z(ppca)(z), mean, logvar), axis=0)
    assert np.all(elbo < ppca["exact"] - 0.05)


@pytest.mark.parametrize("k,chunk", [(1, 1), (10, 3), (7, 500), (12, 4)])
def test_exact_posterior_gives_exact_likelihood_for_any_chunking(ppca, k, chunk):
    # With q = the exact posterior every weight equals p(x), so any error is bookkeeping
    # (e.g. counting masked samples of the last chunk).
    # Rotate the latent space so that W^T W, hence the exact posterior covariance, is diagonal.
    u, s, _ = np.linalg.svd(ppca["w"], full_matrices=False)
    w = u * s  # W' = U S: W'^T W' = S^2 is diagonal and W' W'^T = W W^T, so p(x) is unchanged
    p = dict(ppca, w=w)
    var = 1.0 / (1.0 + s**2 / NOISE_STD**2)
    mean = (ppca["x"] - ppca["mu"]) @ w * var / NOISE_STD**2
    est = vae.importance_log_likelihood(
        jax.random.key(3), _log_px_given_z(p), jnp.asarray(mean, jnp.float32),
        jnp.asarray(np.log(var) * np.ones((6, 1)), jnp.float32), num_samples=k, chunk_size=chunk)
    np.testing.assert_allclose(est, ppca["exact"], atol=2e-4)


def test_batched_equals_loop_for_exact_posterior(ppca):
    u, s, _ = np.linalg.svd(ppca["w"], full_matrices=False)
    w = u * s
    var = 1.0 / (1.0 + s**2 / NOISE_STD**2)
    mean = (ppca["x"] - ppca["mu"]) @ w * var / NOISE_STD**2
    logvar = np.log(var) * np.ones((6, 1))
    batched = vae.importance_log_likelihood(jax.random.key(0), _log_px_given_z(dict(ppca, w=w)),
                                            jnp.asarray(mean), jnp.asarray(logvar), 9, 4)
    for i in range(6):
        one = vae.importance_log_likelihood(
            jax.random.key(i), _log_px_given_z(dict(ppca, w=w, x=ppca["x"][i])),
            jnp.asarray(mean[i]), jnp.asarray(logvar[i]), 9, 4)
        np.testing.assert_allclose(one, batched[i], atol=2e-4)


def test_densities_match_scipy():
    rng = np.random.default_rng(1)
    x, mean, logvar = rng.normal(size=(3, 4, 3))
    ref = np.array([stats.multivariate_normal(m, np.diag(np.exp(lv))).logpdf(xx)
                    for xx, m, lv in zip(x, mean, logvar)])
    np.testing.assert_allclose(vae.diag_gaussian_log_prob(x, mean, logvar), ref, rtol=1e-5)
    np.testing.assert_allclose(vae.standard_normal_log_prob(x),
                               stats.multivariate_normal(np.zeros(3)).logpdf(x), rtol=1e-5)
    xb = (rng.random((4, 3)) < 0.5).astype(np.float32)
    logits = rng.normal(size=(4, 3)) * 3
    p = 1 / (1 + np.exp(-logits))
    ref_b = np.sum(xb * np.log(p) + (1 - xb) * np.log(1 - p), -1)
    np.testing.assert_allclose(vae.bernoulli_log_prob(xb, logits), ref_b, rtol=1e-5)


def test_kl_matches_closed_form_per_dimension():
    mean = np.array([[0.0, 1.0, -2.0]])
    logvar = np.array([[0.0, np.log(0.25), np.log(4.0)]])
    sd = np.exp(logvar / 2)
    ref = np.sum(-np.log(sd) + (sd**2 + mean**2) / 2 - 0.5, axis=-1)
    np.testing.assert_allclose(vae.gaussian_kl_to_standard(mean, logvar), ref, rtol=1e-6)
    assert float(vae.gaussian_kl_to_standard(jnp.zeros(3), jnp.zeros(3))) == 0.0


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e3, 1e6])
def test_finite_values_and_gradients_at_extreme_magnitudes(scale):
    x = jnp.array([0.0, 1.0, 1.0])

    def f(logits, mean, logvar):
        return (vae.bernoulli_log_prob(x, logits)
                - vae.gaussian_kl_to_standard(mean, logvar)
                + vae.diag_gaussian_log_prob(x, mean, jnp.clip(logvar, -30, 30)))

    args = (jnp.array([scale, -scale, scale]), jnp.full(3, min(scale, 1e3)), jnp.full(3, np.log(scale) / 2))
    val, grads = jax.value_and_grad(f, argnums=(0, 1, 2))(*args)
    assert np.isfinite(val)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_bad_sample_counts_are_rejected():
    with pytest.raises(ValueError, match="num_samples=0"):
        vae.importance_log_likelihood(jax.random.key(0), lambda z: z[..., 0], jnp.zeros(2),
                                      jnp.zeros(2), 0)
