"""jaxzoo.core.frechet against scipy.linalg.sqrtm, closed forms and NumPy moments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from jaxzoo.core import frechet


def _random_spd(rng, d, scale=1.0, rank=None):
    a = rng.normal(size=(d, rank or d))
    return scale * (a @ a.T / (rank or d) + (0.0 if rank else 0.1) * np.eye(d))


def _scipy_fd(mu1, cov1, mu2, cov2):
    """The usual FID evaluation: general (Schur) square root of the non-symmetric S1 S2."""
    covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2)
                 - 2.0 * np.trace(np.real(covmean)))


@pytest.mark.parametrize("d", [1, 3, 16])
def test_matches_scipy_sqrtm(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    cov1, cov2 = _random_spd(rng, d), _random_spd(rng, d, scale=3.0)
    with jax.enable_x64(True):
        got = float(frechet.frechet_distance(mu1, cov1, mu2, cov2))
    assert got == pytest.approx(_scipy_fd(mu1, cov1, mu2, cov2), rel=1e-10, abs=1e-10)


def test_sqrtm_psd_matches_scipy_and_squares_back():
    rng = np.random.default_rng(0)
    a = _random_spd(rng, 8)
    with jax.enable_x64(True):
        root = np.asarray(frechet.sqrtm_psd(a))
    np.testing.assert_allclose(root, np.real(scipy.linalg.sqrtm(a)), atol=1e-12)
    np.testing.assert_allclose(root @ root, a, atol=1e-12)


def test_closed_forms():
    """Commuting (diagonal) covariances: sum (sqrt(a) - sqrt(b))^2; identical Gaussians: 0;
    pure mean shift: ||mu1 - mu2||^2."""
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 4.0, size=5), rng.uniform(0.1, 4.0, size=5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    cov = _random_spd(rng, 5)
    with jax.enable_x64(True):
        diag = float(frechet.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)))
        same = float(frechet.frechet_distance(mu1, cov, mu1, cov))
        shift = float(frechet.frechet_distance(mu1, cov, mu2, cov))
    assert diag == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2),
                                 rel=1e-12)
    assert abs(same) < 1e-10
    assert shift == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-9)


def test_moments_match_numpy_and_features_path():
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(50, 4)), rng.normal(1.0, 2.0, size=(30, 4))
    with jax.enable_x64(True):
        mu, cov = frechet.gaussian_moments(f1)
        np.testing.assert_allclose(mu, f1.mean(0), atol=1e-12)
        np.testing.assert_allclose(cov, np.cov(f1, rowvar=False), atol=1e-12)
        got = float(frechet.frechet_distance_from_features(f1, f2))
    want = _scipy_fd(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert got == pytest.approx(want, rel=1e-9)


def test_batched_equals_loop():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
    cov1 = np.stack([[_random_spd(rng, 4) for _ in range(3)] for _ in range(2)])
    cov2 = np.stack([[_random_spd(rng, 4) for _ in range(3)] for _ in range(2)])
    with jax.enable_x64(True):
        batched = np.asarray(frechet.frechet_distance(mu1, cov1, mu2, cov2))
        loop = np.array([[float(frechet.frechet_distance(mu1[i, j], cov1[i, j], mu2[i, j], cov2[i, j]))
                          for j in range(3)] for i in range(2)])
    assert batched.shape == (2, 3)
    np.testing.assert_allclose(batched, loop, rtol=1e-12)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # scipy on the singular S1 S2
@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_extreme_magnitudes_and_singular_covariances(scale):
    """Finite, non-negative up to rounding, and finite gradients, at tiny and huge scales and
    for rank-deficient covariances (dead features)."""
    rng = np.random.default_rng(4)
    d = 6
    mu1, mu2 = scale ** 0.5 * rng.normal(size=d), scale ** 0.5 * rng.normal(size=d)
    cov1, cov2 = _random_spd(rng, d, scale), _random_spd(rng, d, scale, rank=2)
    with jax.enable_x64(True):
        value = float(frechet.frechet_distance(mu1, cov1, mu2, cov2))
        assert value == pytest.approx(_scipy_fd(mu1, cov1, mu2, cov2), rel=1e-6)
        grads = jax.grad(frechet.frechet_distance, argnums=(0, 1, 2))(mu1, cov1, mu2, cov2)
    assert np.isfinite(value) and value > 0
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_float32_is_close_to_float64():
    rng = np.random.default_rng(5)
    f1, f2 = rng.normal(size=(200, 8)), rng.normal(0.3, 1.2, size=(200, 8))
    got = float(frechet.frechet_distance_from_features(jnp.asarray(f1, jnp.float32),
                                                       jnp.asarray(f2, jnp.float32)))
    want = _scipy_fd(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    assert got == pytest.approx(want, rel=1e-3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least 2"):
        frechet.gaussian_moments(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"\[\.\.\., n, d\]"):
        frechet.gaussian_moments(np.ones(3))
    with pytest.raises(ValueError, match="cov2 must be"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="mu2 must be"):
        frechet.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3))
