"""Logit filters and stop matching of jaxzoo.core.decoding against brute-force definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.core import decoding


def _probs(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9, 0.999])
def test_nucleus_keeps_smallest_prefix_with_mass_at_least_p(p):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(32, 50)).astype(np.float32) * 2
    kept = np.isfinite(np.asarray(decoding.top_p_filter(jnp.asarray(logits), p)))
    probs = _probs(logits.astype(np.float64))
    for row in range(len(logits)):
        order = np.argsort(-probs[row])
        cum = np.cumsum(probs[row][order])
        m = int(np.argmax(cum >= p - 1e-6)) + 1  # smallest prefix with mass >= p
        assert set(np.flatnonzero(kept[row])) == set(order[:m].tolist())
        # minimality: dropping the last kept token falls below p
        assert m == 1 or cum[m - 2] < p


def test_nucleus_boundaries():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.2]]))
    # mass before token 2 is exactly 0.8 -> p = 0.8 keeps the first two only
    np.testing.assert_array_equal(np.isfinite(decoding.top_p_filter(logits, 0.8)), [[1, 1, 0]])
    np.testing.assert_array_equal(np.isfinite(decoding.top_p_filter(logits, 0.81)), [[1, 1, 1]])
    np.testing.assert_array_equal(np.isfinite(decoding.top_p_filter(logits, 0.01)), [[1, 0, 0]])
    assert decoding.top_p_filter(logits, 1.0) is logits
    with pytest.raises(ValueError, match="top_p"):
        decoding.top_p_filter(logits, 0.0)


def _np_top_k(logits, k):
    """Brute-force top-k: keep every entry >= the k-th largest value of its row (ties kept)."""
    logits = np.asarray(logits)
    if k <= 0 or k >= logits.shape[-1]:
        return logits.copy()
    kth = np.sort(logits, axis=-1)[..., -k][..., None]
    return np.where(logits >= kth, logits, -np.inf)


def _np_top_p(logits, p):
    """Brute-force nucleus: for each row, walk the tokens by descending probability (float64) and
    keep token i while the mass of the tokens before it is < p."""
    logits = np.asarray(logits)
    out = np.full_like(logits, -np.inf)
    probs = _probs(logits.astype(np.float64))
    for row in np.ndindex(logits.shape[:-1]):
        before = 0.0
        for i in sorted(range(logits.shape[-1]), key=lambda j: -probs[row][j]):
            if before < p:
                out[row + (i,)] = logits[row + (i,)]
            before += probs[row][i]
    return out


def test_top_k_keeps_k_largest():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(8, 20)).astype(np.float32)
    for k in (1, 2, 5, 19):
        out = np.asarray(decoding.top_k_filter(jnp.asarray(logits), k))
        # values, not only the mask: kept logits unchanged, the rest exactly -inf
        np.testing.assert_array_equal(out, _np_top_k(logits, k))
        assert (np.isfinite(out).sum(-1) == k).all()
    # documented "k <= 0 or k >= V keeps everything": the logits come back unchanged, value for value
    for k in (0, -3, 20, 25):
        out = np.asarray(decoding.top_k_filter(jnp.asarray(logits), k))
        np.testing.assert_array_equal(out, logits)
    # a leading batch axis of rank > 1 works row by row
    logits3 = rng.normal(size=(2, 3, 7)).astype(np.float32)
    np.testing.assert_array_equal(decoding.top_k_filter(jnp.asarray(logits3), 3), _np_top_k(logits3, 3))


def test_top_k_keeps_ties_at_the_kth_value():
    logits = np.asarray([[3.0, 1.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]], np.float32)
    out = np.asarray(decoding.top_k_filter(jnp.asarray(logits), 2))
    ninf = -np.inf
    np.testing.assert_array_equal(out, [[3.0, ninf, 2.0, 2.0, ninf], [1.0] * 5])
    np.testing.assert_array_equal(out, _np_top_k(logits, 2))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_top_p_values_match_numpy_reference(p):
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(2, 5, 12)) * 1.5).astype(np.float32)
    out = np.asarray(decoding.top_p_filter(jnp.asarray(logits), p))
    np.testing.assert_array_equal(out, _np_top_p(logits, p))


def test_top_k_then_top_p_composes_like_numpy():
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(6, 16)) * 2).astype(np.float32)
    out = np.asarray(decoding.top_p_filter(decoding.top_k_filter(jnp.asarray(logits), 6), 0.8))
    np.testing.assert_array_equal(out, _np_top_p(_np_top_k(logits, 6), 0.8))


def test_samples_only_from_the_nucleus_and_match_renormalised_probs():
    logits = jnp.log(jnp.asarray([0.4, 0.25, 0.2, 0.1, 0.05]))
    keys = jax.random.split(jax.random.key(0), 20000)
    draws = np.asarray(jax.vmap(lambda k: decoding.sample_logits(k, logits, 1.0, 0, 0.7))(keys))
    # nucleus for p = 0.7: {0, 1, 2} (0.4 + 0.25 < 0.7 <= 0.85), renormalised
    freq = np.bincount(draws, minlength=5) / len(draws)
    np.testing.assert_allclose(freq, [0.4 / 0.85, 0.25 / 0.85, 0.2 / 0.85, 0, 0], atol=0.015)


def test_temperature_zero_is_argmax_and_top_k_one_is_greedy():
    logits = jax.random.normal(jax.random.key(3), (6, 11))
    greedy = np.argmax(np.asarray(logits), -1)
    np.testing.assert_array_equal(decoding.sample_logits(jax.random.key(0), logits, 0.0), greedy)
    np.testing.assert_array_equal(decoding.sample_logits(jax.random.key(1), logits, 1.3, 1), greedy)
    with pytest.raises(ValueError, match="temperature"):
        decoding.sample_logits(jax.random.key(0), logits, -1.0)


def test_stop_match_and_shift_in():
    tail = jnp.asarray([[-1, 5, 6, 7], [1, 2, 3, 9], [4, 6, 7, 7]])
    matched, length = decoding.stop_match(tail, [[6, 7], [7], [3, 9]])
    np.testing.assert_array_equal(matched, [True, True, True])
    np.testing.assert_array_equal(length, [2, 2, 1])  # first listed match wins
    tail = decoding.shift_in(tail, jnp.asarray([8, 8, 8]))
    np.testing.assert_array_equal(tail[0], [5, 6, 7, 8])
    with pytest.raises(ValueError, match="at most 4"):
        decoding.stop_match(tail, [[1, 2, 3, 4, 5]])
