"""Tests for jaxzoo.core.rope: frequency tables against NumPy closed forms, RoPE properties, logn,
ReRoPE against a brute-force clipped-relative-position loop."""

import math

import numpy as np
import pytest
import jax
import jax.numpy as jnp

from jaxzoo.core import positional, rope
from jaxzoo.core.rope import apply_rope, logn_scale, rerope_attention, rope_frequencies

D, H = 8, 2


def np_theta(d, base):
    return np.array([base ** (-2.0 * i / d) for i in range(d // 2)])


# ----------------------------------------------------------------------------- frequency tables


def test_default_table():
    inv, scale = rope_frequencies(16, 500.0)
    np.testing.assert_allclose(inv, np_theta(16, 500.0), rtol=1e-6)
    assert scale == 1.0 and inv.dtype == jnp.float32


def test_linear_table():
    inv, scale = rope_frequencies(D, scaling={"rope_type": "linear", "factor": 4.0})
    np.testing.assert_allclose(inv, np_theta(D, 1e4) / 4.0, rtol=1e-6)
    assert scale == 1.0


def test_ntk_table():
    # bloc97: base' = b s^(d/(d-2)); the lowest frequency then equals the interpolated one.
    s = 8.0
    inv, _ = rope_frequencies(D, scaling={"rope_type": "ntk", "factor": s})
    np.testing.assert_allclose(inv, np_theta(D, 1e4 * s ** (D / (D - 2))), rtol=1e-6)
    np.testing.assert_allclose(inv[-1], np_theta(D, 1e4)[-1] / s, rtol=1e-6)
    np.testing.assert_allclose(inv[0], 1.0, rtol=1e-7)


@pytest.mark.parametrize("seq_len", [None, 100, 512, 2048])
def test_dynamic_table(seq_len):
    s, big_l = 2.0, 512
    cfg = {"rope_type": "dynamic", "factor": s, "original_max_position_embeddings": big_l}
    inv, scale = rope_frequencies(D, scaling=cfg, seq_len=seq_len)
    if seq_len is None or seq_len <= big_l:
        want = np_theta(D, 1e4)
    else:
        want = np_theta(D, 1e4 * ((s * seq_len / big_l) - (s - 1)) ** (D / (D - 2)))
    np.testing.assert_allclose(inv, want, rtol=1e-6)
    assert scale == 1.0
    traced = jax.jit(lambda n: rope_frequencies(D, scaling=cfg, seq_len=n)[0])(seq_len or 0)
    np.testing.assert_allclose(traced, want, rtol=1e-5)


def np_yarn(d, base, s, big_l, beta_fast=32.0, beta_slow=1.0):
    """Independent YaRN: wavelength ratio r_i = L / lambda_i; the ramp's ends are the pair indices
    solving r_i = beta, floored (fast end) and ceiled (slow end)."""
    theta = np_theta(d, base)
    # r_i = L theta_i / (2 pi) = beta  <=>  i = (d/2) log(L / (2 pi beta)) / log(base)
    i_fast = math.floor(0.5 * d * math.log(big_l / (2 * math.pi * beta_fast)) / math.log(base))
    i_slow = math.ceil(0.5 * d * math.log(big_l / (2 * math.pi * beta_slow)) / math.log(base))
    i_fast, i_slow = max(i_fast, 0), min(i_slow, d - 1)
    out = np.empty_like(theta)
    for i in range(d // 2):
        g = min(max((i - i_fast) / max(i_slow - i_fast, 1e-3), 0.0), 1.0)  # 0: keep, 1: interp
        out[i] = (1 - g) * theta[i] + g * theta[i] / s
    return out, (0.1 * math.log(s) + 1.0 if s > 1 else 1.0)


@pytest.mark.parametrize("d,base,s,big_l", [(8, 1e4, 4.0, 2048), (64, 1e4, 8.0, 4096),
                                            (32, 5e5, 2.0, 512)])
def test_yarn_table(d, base, s, big_l):
    cfg = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": big_l}
    inv, scale = rope_frequencies(d, base, scaling=cfg)
    want, want_scale = np_yarn(d, base, s, big_l)
    np.testing.assert_allclose(inv, want, rtol=1e-6)
    assert scale == pytest.approx(want_scale)
    theta = np_theta(d, base)
    assert np.all(inv <= theta * (1 + 1e-6)) and np.all(inv >= theta / s * (1 - 1e-6))
    if d == 64:  # both regimes present: highest frequency kept, lowest interpolated
        np.testing.assert_allclose(inv[0], theta[0], rtol=1e-6)
        np.testing.assert_allclose(inv[-1], theta[-1] / s, rtol=1e-6)


def test_yarn_attention_factor_options():
    base_cfg = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}
    _, a = rope_frequencies(D, scaling={**base_cfg, "attention_factor": 1.7})
    assert a == 1.7
    _, a = rope_frequencies(D, scaling={**base_cfg, "mscale": 1.0, "mscale_all_dim": 0.5})
    assert a == pytest.approx((0.1 * math.log(4) + 1) / (0.05 * math.log(4) + 1))


def np_llama3(d, base, s, big_l, lo, hi):
    theta = np_theta(d, base)
    out = []
    for t in theta:
        wl = 2 * math.pi / t
        if wl < big_l / hi:
            out.append(t)
        elif wl > big_l / lo:
            out.append(t / s)
        else:
            a = (big_l / wl - lo) / (hi - lo)
            out.append((1 - a) * t / s + a * t)
    return np.array(out)


def test_llama3_table():
    cfg = {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64,
           "low_freq_factor": 1.0, "high_freq_factor": 4.0}
    inv, scale = rope_frequencies(32, 100.0, scaling=cfg)
    want = np_llama3(32, 100.0, 8.0, 64, 1.0, 4.0)
    np.testing.assert_allclose(inv, want, rtol=1e-6)
    theta = np_theta(32, 100.0)
    kept, interp = np.isclose(want, theta), np.isclose(want, theta / 8)
    assert kept.any() and interp.any() and (~kept & ~interp).any()  # all three regimes exercised
    assert scale == 1.0


FULL = {
    "default": {},
    "linear": {},
    "ntk": {},
    "dynamic": {"original_max_position_embeddings": 16},
    "yarn": {"original_max_position_embeddings": 16},
    "llama3": {"original_max_position_embeddings": 16, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0},
}


@pytest.mark.parametrize("rope_type", sorted(FULL))
def test_factor_one_is_identity(rope_type):
    cfg = {"rope_type": rope_type, "factor": 1.0, **FULL[rope_type]}
    # dynamic NTK at s = 1 still rescales once seq_len > L (base' = b (n/L)^(d/(d-2)), as in
    # Hugging Face), so its identity holds for seq_len <= L; every other type ignores seq_len.
    inv, scale = rope_frequencies(D, scaling=cfg, seq_len=16 if rope_type == "dynamic" else 64)
    np.testing.assert_allclose(inv, np_theta(D, 1e4), rtol=1e-6)
    assert scale == 1.0


def test_bad_scaling_raises():
    with pytest.raises(ValueError, match="'su'.*allowed|'su' is not one of"):
        rope_frequencies(D, scaling={"rope_type": "su", "factor": 2.0})
    with pytest.raises(ValueError, match="original_max_position_embeddings"):
        rope_frequencies(D, scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="factor"):
        rope_frequencies(D, scaling={"rope_type": "linear"})
    with pytest.raises(ValueError, match="beta_fats"):
        rope_frequencies(D, scaling={"rope_type": "yarn", "factor": 2.0, "beta_fats": 3,
                                     "original_max_position_embeddings": 8})
    with pytest.raises(ValueError, match="rope_theta"):
        rope_frequencies(D, 1e4, scaling={"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5})
    with pytest.raises(ValueError, match="head_dim"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="head_dim"):
        apply_rope(jnp.zeros((4, H, 4)), jnp.arange(4), jnp.ones(3))
    # the legacy "type" key is read as rope_type
    inv, _ = rope_frequencies(D, scaling={"type": "linear", "factor": 2.0})
    np.testing.assert_allclose(inv, np_theta(D, 1e4) / 2, rtol=1e-6)


# ----------------------------------------------------------------------------- apply_rope


def np_rotate(x, pos, theta, interleaved):
    """Brute-force: build the block-rotation matrix per position, [seq, heads, d] float64."""
    d = x.shape[-1]
    out = np.empty_like(x, dtype=np.float64)
    for s in range(x.shape[0]):
        rmat = np.zeros((d, d))
        for i, t in enumerate(theta):
            a, b = (2 * i, 2 * i + 1) if interleaved else (i, i + d // 2)
            c, sn = math.cos(pos[s] * t), math.sin(pos[s] * t)
            rmat[a, a], rmat[a, b], rmat[b, a], rmat[b, b] = c, -sn, sn, c
        out[s] = x[s] @ rmat.T
    return out


@pytest.mark.parametrize("interleaved", [False, True])
def test_apply_rope_matches_rotation_matrix(interleaved):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, H, D))
    pos = np.array([0.0, 1.0, 2.5, 7.0, 11.0, 3.25])
    inv, _ = rope_frequencies(D)
    got = apply_rope(jnp.asarray(x, jnp.float32), pos, inv, interleaved)
    want = np_rotate(x, pos, np.asarray(inv, np.float64), interleaved)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("interleaved", [False, True])
def test_scores_depend_only_on_offset_and_norms_kept(interleaved):
    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(rng.normal(size=(1, H, D)), jnp.float32) for _ in range(2))
    inv, _ = rope_frequencies(D)

    def score(m, n):
        qm = apply_rope(q, jnp.array([m]), inv, interleaved)
        kn = apply_rope(k, jnp.array([n]), inv, interleaved)
        return jnp.einsum("shd,shd->h", qm, kn)

    for m, n in [(3, 1), (10.5, 8.5), (2, 0), (14, 12)]:  # all m - n = 2
        np.testing.assert_allclose(score(m, n), score(2, 0), atol=1e-4)
    assert not np.allclose(score(3, 0), score(2, 0), atol=1e-3)
    x = jnp.asarray(rng.normal(size=(5, H, D)), jnp.float32)
    np.testing.assert_allclose(jnp.linalg.norm(apply_rope(x, jnp.arange(5) * 3.7, inv,
                                                          interleaved), axis=-1),
                               jnp.linalg.norm(x, axis=-1), rtol=1e-5)


def test_layouts_agree_up_to_permutation():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 7, H, D)), jnp.float32)
    pos = jnp.asarray(rng.uniform(0, 20, size=(2, 7)), jnp.float32)
    inv, _ = rope_frequencies(D)
    # interleaved pair (2i, 2i+1) <-> rotate-half pair (i, i + D/2)
    perm = np.empty(D, int)
    perm[0::2], perm[1::2] = np.arange(D // 2), np.arange(D // 2) + D // 2
    half = apply_rope(x, pos, inv, interleaved=False)
    inter = apply_rope(x[..., perm], pos, inv, interleaved=True)
    np.testing.assert_allclose(inter, half[..., perm], atol=1e-6)


def test_batched_equals_loop_and_partial_rotary():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(3, 5, H, D)), jnp.float32)
    pos = jnp.asarray(rng.integers(0, 50, size=(3, 5)))
    inv, _ = rope_frequencies(4)  # rotary_dim 4 < head_dim 8
    out = apply_rope(x, pos, inv)
    for b in range(3):
        np.testing.assert_allclose(out[b], apply_rope(x[b], pos[b], inv), atol=1e-6)
        want = np_rotate(np.asarray(x[b, ..., :4], np.float64), np.asarray(pos[b]),
                         np.asarray(inv, np.float64), False)
        np.testing.assert_allclose(out[b, ..., :4], want, atol=1e-5)
    np.testing.assert_array_equal(out[..., 4:], x[..., 4:])
    assert apply_rope(x.astype(jnp.bfloat16), pos, inv).dtype == jnp.bfloat16


def test_extreme_positions_finite_grad():
    inv, _ = rope_frequencies(D)
    x = jnp.full((3, H, D), 1e4, jnp.float32)
    pos = jnp.array([0.0, 1e6, 1e9])
    f = lambda x, p: jnp.sum(apply_rope(x, p, inv) ** 2)
    val, (gx, gp) = jax.value_and_grad(f, argnums=(0, 1))(x, pos)
    assert np.isfinite(val) and np.all(np.isfinite(gx)) and np.all(np.isfinite(gp))
    np.testing.assert_allclose(val, 3 * H * D * 1e8, rtol=1e-4)  # rotation keeps the norm


# ----------------------------------------------------------------------------- logn


def test_logn_scale():
    n = np.array([0, 1, 5, 16, 17, 64, 1000])
    got = logn_scale(n, 16)
    want = [max(1.0, math.log(v) / math.log(16)) if v > 0 else 1.0 for v in n]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got[5], 1.5, rtol=1e-6)  # log_16 64
    assert float(logn_scale(12, 16)) == 1.0
    with pytest.raises(ValueError, match="train_len"):
        logn_scale(n, 1)


# ----------------------------------------------------------------------------- ReRoPE


def np_softmax_attention(scores, v, mask):
    scores = np.where(mask, scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v)


def np_rerope(q, k, v, theta, window, causal, scale):
    """Brute force: explicit clipped relative matrix r_ij; score = (R(r_ij) q_i) . k_j."""
    q_len, k_len = q.shape[0], k.shape[0]
    scores = np.zeros((H, q_len, k_len))
    mask = np.ones((H, q_len, k_len), bool)
    for i in range(q_len):
        ia = i + k_len - q_len
        for j in range(k_len):
            r = ia - j if abs(ia - j) < window else window
            qr = np_rotate(q[i:i + 1], [r], theta, False)[0]
            scores[:, i, j] = np.sum(qr * k[j], -1) * scale
            mask[:, i, j] = (j <= ia) or not causal
    return np_softmax_attention(scores, v, mask)


@pytest.mark.parametrize("q_len,k_len,window,causal", [(9, 9, 3, True), (4, 10, 5, True),
                                                        (8, 8, 2, False), (6, 6, 1, True)])
def test_rerope_matches_brute_force(q_len, k_len, window, causal):
    rng = np.random.default_rng(4)
    q = rng.normal(size=(q_len, H, D))
    k, v = rng.normal(size=(k_len, H, D)), rng.normal(size=(k_len, H, D))
    inv, _ = rope_frequencies(D, 20.0)
    got = rerope_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), inv, window,
                           causal=causal)
    want = np_rerope(q, k, v, np.asarray(inv, np.float64), window, causal, D ** -0.5)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_rerope_large_window_is_rope_attention():
    rng = np.random.default_rng(5)
    b, n = 2, 12
    q, k, v = (jnp.asarray(rng.normal(size=(b, n, H, D)), jnp.float32) for _ in range(3))
    inv, _ = rope_frequencies(D)
    got = rerope_attention(q, k, v, inv, window=n, scale=0.3)
    pos = jnp.arange(n)
    s = jnp.einsum("bqhd,bkhd->bhqk", apply_rope(q, pos, inv), apply_rope(k, pos, inv)) * 0.3
    s = jnp.where(jnp.tril(jnp.ones((n, n), bool)), s, -jnp.inf)
    want = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # window >= seq: batched equals per-item, and a small window changes the result
    np.testing.assert_allclose(got[1], rerope_attention(q[1], k[1], v[1], inv, n, scale=0.3),
                               atol=1e-6)
    assert not np.allclose(got, rerope_attention(q, k, v, inv, window=2, scale=0.3), atol=1e-3)
    with pytest.raises(ValueError, match="window"):
        rerope_attention(q, k, v, inv, window=0)


def test_positional_reexports_rope():
    assert positional.apply_rope is rope.apply_rope
    assert positional.rope_frequencies is rope.rope_frequencies
