"""Frechet distance between Gaussians fitted to feature sets (the statistic behind FID).

Names and shapes, fixed for the module:

* ``features`` ``[..., n, d]``: ``n`` feature vectors of dimension ``d`` (e.g. a classifier's
  penultimate activations of ``n`` images); leading axes ``...`` are independent sets.
* ``mu`` ``[..., d]`` and ``cov`` ``[..., d, d]``: the mean and the unbiased (``n - 1``)
  covariance of a set, :func:`gaussian_moments`.
* Every function broadcasts over the leading ``...`` axes. Work in float64 (inside
  ``jax.enable_x64(True)``) when the distances are small against the traces: the result is a
  difference of traces and loses the precision of the larger one.

The distance (Frechet 1957; Dowson & Landau 1982, Eq. 4; used as FID by Heusel et al. 2017,
arXiv 1706.08500, Eq. 6) is
``d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2})``. ``S1 S2`` is not symmetric, but it is
similar to the symmetric positive semi-definite ``M = S1^{1/2} S2 S1^{1/2}``
(``S1 S2 = S1^{1/2} M S1^{-1/2}``), so ``Tr (S1 S2)^{1/2} = Tr M^{1/2} = sum_i sqrt(lambda_i(M))``.
Both square roots come from symmetric eigendecompositions (``eigh``), with eigenvalues that
rounding pushes below zero clamped to zero; no general (Schur) matrix square root is needed.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["frechet_distance", "frechet_distance_from_features", "gaussian_moments", "sqrtm_psd"]


def gaussian_moments(features):
    """Mean ``[..., d]`` and unbiased covariance ``[..., d, d]`` of ``features`` ``[..., n, d]``
    (``n >= 2``), matching ``numpy.cov(features.T)``."""
    features = jnp.asarray(features)
    if features.ndim < 2:
        raise ValueError(f"features must be [..., n, d]; got shape {features.shape}")
    n = features.shape[-2]
    if n < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance; got n={n}")
    mu = jnp.mean(features, axis=-2)
    centred = features - mu[..., None, :]
    cov = jnp.einsum("...ni,...nj->...ij", centred, centred) / (n - 1)
    return mu, cov


def _symmetrise(a):
    return 0.5 * (a + jnp.swapaxes(a, -1, -2))


def _sqrt_clamped(w):
    """``sqrt(max(w, 0))`` with a zero (not NaN) gradient where ``w <= 0``."""
    positive = w > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, w, 1.0)), 0.0)


def sqrtm_psd(a):
    """Principal square root of symmetric positive semi-definite ``a`` ``[..., d, d]`` via
    ``a = V diag(w) V^T -> V diag(sqrt(max(w, 0))) V^T``."""
    w, v = jnp.linalg.eigh(_symmetrise(jnp.asarray(a)))
    return jnp.einsum("...ij,...j,...kj->...ik", v, _sqrt_clamped(w), v)


def frechet_distance(mu1, cov1, mu2, cov2):
    """Squared Frechet (2-Wasserstein) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    Args: ``mu1``, ``mu2`` ``[..., d]``; ``cov1``, ``cov2`` ``[..., d, d]`` symmetric PSD.
    Returns ``[...]``: ``||mu1 - mu2||^2 + Tr(cov1) + Tr(cov2) - 2 Tr (cov1 cov2)^{1/2}``
    (see the module docstring for the symmetric evaluation of the last term).
    """
    mu1, mu2, cov1, cov2 = map(jnp.asarray, (mu1, mu2, cov1, cov2))
    d = mu1.shape[-1]
    for name, mu in (("mu1", mu1), ("mu2", mu2)):
        if mu.ndim < 1 or mu.shape[-1] != d:
            raise ValueError(f"{name} must be [..., {d}]; got shape {mu.shape}")
    for name, cov in (("cov1", cov1), ("cov2", cov2)):
        if cov.ndim < 2 or cov.shape[-2:] != (d, d):
            raise ValueError(f"{name} must be [..., {d}, {d}]; got shape {cov.shape}")
    root1 = sqrtm_psd(cov1)
    m = _symmetrise(root1 @ cov2 @ root1)
    trace_sqrt = jnp.sum(_sqrt_clamped(jnp.linalg.eigvalsh(m)), axis=-1)
    trace = jnp.trace(cov1, axis1=-2, axis2=-1) + jnp.trace(cov2, axis1=-2, axis2=-1)
    return jnp.sum((mu1 - mu2) ** 2, axis=-1) + trace - 2.0 * trace_sqrt


def frechet_distance_from_features(features1, features2):
    """:func:`frechet_distance` of the Gaussians fitted to ``features1`` ``[..., n1, d]`` and
    ``features2`` ``[..., n2, d]``. Returns ``[...]``."""
    return frechet_distance(*gaussian_moments(features1), *gaussian_moments(features2))
