"""Tests for jaxzoo.core.positional: each scheme against a per-pair NumPy loop or a closed form."""

import math
import pathlib

import numpy as np
import pytest
import scipy.linalg
import jax
import jax.numpy as jnp

from jaxzoo.core import positional as P

D, H = 8, 2
rng = np.random.default_rng(0)


def f32(a):
    return jnp.asarray(a, jnp.float32)


# ----------------------------------------------------------------------------- absolute


def test_learned_positions():
    table = rng.normal(size=(10, D))
    pos = np.array([[0, 3, 9], [2, 2, 5]])
    got = P.learned_positions(f32(table), pos)
    np.testing.assert_allclose(got, table[pos], rtol=1e-6)
    bad = P.learned_positions(f32(table), np.array([10, -1, 4]))
    assert np.all(np.isnan(bad[:2])) and np.all(np.isfinite(bad[2]))
    with pytest.raises(ValueError, match="integers"):
        P.learned_positions(f32(table), jnp.array([1.0]))


@pytest.mark.parametrize("layout", ["interleaved", "concat"])
def test_sinusoidal_matches_formula(layout):
    pos = np.array([0.0, 1.0, 5.0, 17.5, -3.0])
    got = P.sinusoidal_positions(pos, D, base=100.0, layout=layout)
    want = np.zeros((5, D))
    for s, p in enumerate(pos):
        for i in range(D // 2):
            a = p / 100.0 ** (2 * i / D)
            if layout == "interleaved":
                want[s, 2 * i], want[s, 2 * i + 1] = math.sin(a), math.cos(a)
            else:
                want[s, i], want[s, D // 2 + i] = math.sin(a), math.cos(a)
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="dim"):
        P.sinusoidal_positions(pos, 7)


def test_sinusoidal_extreme_positions_finite_grad():
    g = jax.grad(lambda p: jnp.sum(P.sinusoidal_positions(p, D)))(jnp.array([0.0, 1e6, 1e9]))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(jnp.sum(P.sinusoidal_positions(jnp.array([1e9]), D)[0, :2] ** 2),
                               1.0, rtol=1e-5)


def test_multiplicative():
    x, p = rng.normal(size=(2, 5, D)), rng.normal(size=(5, D))
    np.testing.assert_allclose(P.multiplicative_positions(f32(x), f32(p)), x * p, rtol=1e-6)


def test_floater_rotation_matches_expm():
    # h(p) = A p with A skew-symmetric: p(t) = expm(t A) p0, a rotation (norm kept).
    m = rng.normal(size=(4, 4))
    a = (m - m.T) / (2 * np.linalg.norm(m - m.T, 2))  # rates |omega| <= 0.5
    p0 = rng.normal(size=4)
    pos = np.array([[0.0, 1.0, 2.5, 6.0], [3.0, 0.5, 8.0, 1.5]])
    got = P.floater_positions(lambda p, t: p @ f32(a).T, f32(p0), pos, num_steps=64)
    for idx in np.ndindex(pos.shape):
        want = scipy.linalg.expm(pos[idx] * a) @ p0
        np.testing.assert_allclose(got[idx], want, atol=2e-5)
    # Euler is first order: error drops when the steps are refined
    err = [np.abs(P.floater_positions(lambda p, t: p @ f32(a).T, f32(p0), pos, n, "euler")
                  - got).max() for n in (8, 64)]
    assert err[1] < err[0] / 4


def test_floater_sinusoid_is_a_special_solution():
    # d/dt [sin(w t), cos(w t)] = w [cos, -sin]: the sinusoidal table solves a linear ODE.
    w = 1.0 / 10000.0 ** (np.arange(0, D, 2) / D)

    def h(p, t):
        s, c = p[..., 0::2], p[..., 1::2]
        return jnp.stack([w * c, -w * s], -1).reshape(p.shape)

    p0 = np.tile([0.0, 1.0], D // 2)
    pos = np.arange(6.0)
    got = P.floater_positions(h, f32(p0), pos, num_steps=64)
    np.testing.assert_allclose(got, P.sinusoidal_positions(pos, D), atol=1e-5)


def test_floater_gradient_wrt_rate():
    # p(t) = [sin(w t), cos(w t)] from h = w [c, -s]; d/dw sum_t sin(w t) = sum_t t cos(w t).
    pos = np.array([0.5, 2.0, 7.0])

    def total_sin(w):
        h = lambda p, t: w * jnp.stack([p[..., 1], -p[..., 0]], -1)
        return jnp.sum(P.floater_positions(h, jnp.array([0.0, 1.0]), pos, num_steps=64)[:, 0])

    np.testing.assert_allclose(jax.grad(total_sin)(0.4), np.sum(pos * np.cos(0.4 * pos)),
                               rtol=1e-4)


def test_complex_order():
    r, w, th = (rng.normal(size=(5, D)) for _ in range(3))
    pos = np.arange(5) * 1.5
    re, im = P.complex_order_embedding(f32(r), f32(w), f32(th), pos)
    z = r * np.exp(1j * (w * pos[:, None] + th))
    np.testing.assert_allclose(re, z.real, atol=1e-5)
    np.testing.assert_allclose(im, z.imag, atol=1e-5)


# ----------------------------------------------------------------------------- Shaw


@pytest.mark.parametrize("q_len,k_len,kmax", [(6, 6, 2), (3, 7, 3), (5, 5, 0)])
def test_shaw_matches_loop(q_len, k_len, kmax):
    q = rng.normal(size=(2, q_len, H, D))
    wk, wv = rng.normal(size=(2 * kmax + 1, D)), rng.normal(size=(2 * kmax + 1, D))
    probs = rng.dirichlet(np.ones(k_len), size=(2, H, q_len))
    logits = P.shaw_key_logits(f32(q), f32(wk), k_len)
    value = P.shaw_value_term(f32(probs), f32(wv))
    want_l = np.zeros((2, H, q_len, k_len))
    want_v = np.zeros((2, q_len, H, D))
    for i in range(q_len):
        ia = i + k_len - q_len
        for j in range(k_len):
            c = max(-kmax, min(kmax, j - ia)) + kmax
            want_l[:, :, i, j] = q[:, i] @ wk[c]
            want_v[:, i] += probs[:, :, i, j, None] * wv[c]
    np.testing.assert_allclose(logits, want_l, atol=1e-5)
    np.testing.assert_allclose(value, want_v, atol=1e-5)
    with pytest.raises(ValueError, match="table"):
        P.shaw_key_logits(f32(q), jnp.zeros((2 * kmax + 2, D)), k_len)


# ----------------------------------------------------------------------------- Transformer-XL


def np_sinusoid_concat(d_pos, dim):
    inv = 1.0 / 10000.0 ** (np.arange(0, dim, 2) / dim)
    return np.concatenate([np.sin(d_pos * inv), np.cos(d_pos * inv)])


@pytest.mark.parametrize("q_len,k_len", [(5, 5), (3, 8), (1, 4), (6, 2)])
def test_transformer_xl_matches_brute_force(q_len, k_len):
    dm = 12
    q, k = rng.normal(size=(2, q_len, H, D)), rng.normal(size=(2, k_len, H, D))
    w_kr = rng.normal(size=(dm, H, D)) / 4
    u, v = rng.normal(size=(H, D)), rng.normal(size=(H, D))
    dist = P.transformer_xl_distances(q_len, k_len)
    r = jnp.einsum("tm,mhd->thd", P.sinusoidal_positions(dist, dm, layout="concat"), f32(w_kr))
    out = {impl: P.transformer_xl_logits(f32(q), f32(k), r, f32(u), f32(v), impl)
           for impl in ("shift", "gather")}
    want = np.zeros((2, H, q_len, k_len))
    for i in range(q_len):
        for j in range(k_len):
            rr = np.einsum("m,mhd->hd", np_sinusoid_concat(i + k_len - q_len - j, dm), w_kr)
            b = np.sum(q[:, i] * rr, -1)   # (b) q_i W_kR R_{i-j}
            c = np.sum(u * k[:, j], -1)    # (c) u k_j
            d = np.sum(v * rr, -1)         # (d) v W_kR R_{i-j}
            want[:, :, i, j] = b + c + d
    np.testing.assert_allclose(out["shift"], want, atol=1e-4)
    np.testing.assert_allclose(out["gather"], out["shift"], atol=1e-5)
    with pytest.raises(ValueError, match="distances"):
        P.transformer_xl_logits(f32(q), f32(k), r[:-1], f32(u), f32(v))


# ----------------------------------------------------------------------------- T5


def np_t5_bucket(rel, bidirectional, num_buckets, max_distance):
    """The published Mesh-TensorFlow formula, scalar by scalar, in float64."""
    ret, n = 0, -rel
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (64, 1000)])
def test_t5_bucket_matches_published_formula(bidirectional, num_buckets, max_distance):
    rel = np.arange(-3 * max_distance, 3 * max_distance + 1)
    got = np.asarray(P.t5_relative_position_bucket(rel, bidirectional, num_buckets, max_distance))
    want = np.array([np_t5_bucket(int(x), bidirectional, num_buckets, max_distance) for x in rel])
    np.testing.assert_array_equal(got, want)
    assert got.min() == 0 and got.max() == num_buckets - 1


def test_t5_bucket_boundaries_default():
    # bidirectional 32/128: 16 buckets per side, exact for |d| < 8, log buckets up to 128.
    b = lambda d: int(P.t5_relative_position_bucket(jnp.array(d), True))
    assert [b(-d) for d in (0, 7, 8, 11, 12, 15, 16, 31, 32, 63, 64, 127, 128, 10**6)] == \
        [0, 7, 8, 8, 9, 9, 10, 11, 12, 13, 14, 15, 15, 15]
    assert b(1) == 17 and b(-1) == 1
    with pytest.raises(ValueError, match="max_distance"):
        P.t5_relative_position_bucket(jnp.arange(3), True, 32, 8)


def test_t5_bias_matches_loop():
    table = rng.normal(size=(16, H))
    for q_len, k_len, bi in [(5, 5, True), (2, 6, False)]:
        got = P.t5_bias(f32(table), q_len, k_len, bidirectional=bi, max_distance=20)
        want = np.zeros((H, q_len, k_len))
        for i in range(q_len):
            for j in range(k_len):
                want[:, i, j] = table[np_t5_bucket(j - (i + k_len - q_len), bi, 16, 20)]
        np.testing.assert_allclose(got, want, rtol=1e-6)


# ----------------------------------------------------------------------------- DeBERTa


def np_log_bucket(x, bucket_size, max_position):
    mid = bucket_size // 2
    if abs(x) <= mid:
        return x
    lp = math.ceil(math.log(abs(x) / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    return int(math.copysign(lp, x))


@pytest.mark.parametrize("bucket_size,max_position", [(256, 512), (8, 30), (16, 100)])
def test_deberta_log_bucket_matches_formula(bucket_size, max_position):
    x = np.arange(-4 * max_position, 4 * max_position + 1)
    got = np.asarray(P.deberta_log_bucket_position(x, bucket_size, max_position))
    want = np.array([np_log_bucket(int(v), bucket_size, max_position) for v in x])
    np.testing.assert_array_equal(got, want)
    assert np.all(np.diff(got) >= 0)  # monotone in x


def np_deberta_official(q, k, pos_q, pos_k, rel):
    """The official / Hugging Face disentangled terms, pair by pair (microsoft/DeBERTa and HF
    `disentangled_attention_bias`), unscaled: with idx(i, j) = clamp(i - j + s, 0, 2s - 1),
      c2p[b, h, i, j] = <q[b, i, h], pos_k[idx(i, j), h]>
      p2c[b, h, i, j] = <k[b, j, h], pos_q[idx(i, j), h]>   (the same index; the paper's Eq. 4
                                                           reads delta(j, i), see deberta_p2c)
    rel[i, j] is the (possibly bucketed) i - j."""
    span = pos_q.shape[0] // 2
    nb, q_len, nh, _ = q.shape
    k_len = k.shape[1]
    c2p, p2c = np.zeros((nb, nh, q_len, k_len)), np.zeros((nb, nh, q_len, k_len))
    for b in range(nb):
        for h in range(nh):
            for i in range(q_len):
                for j in range(k_len):
                    idx = min(max(int(rel[i][j]) + span, 0), 2 * span - 1)
                    c2p[b, h, i, j] = float(np.dot(q[b, i, h], pos_k[idx, h]))
                    p2c[b, h, i, j] = float(np.dot(k[b, j, h], pos_q[idx, h]))
    return c2p, p2c


@pytest.mark.parametrize("buckets", [None, (4, 10)])
@pytest.mark.parametrize("q_len,k_len", [(7, 7), (3, 6), (9, 9)])
def test_deberta_matches_loop(buckets, q_len, k_len):
    span = 3  # < 7 and 9: the clamp matters
    q, k = rng.normal(size=(2, q_len, H, D)), rng.normal(size=(2, k_len, H, D))
    pq, pk = rng.normal(size=(2 * span, H, D)), rng.normal(size=(2 * span, H, D))
    bs, mp = buckets if buckets else (None, None)
    rel = [[(i + k_len - q_len) - j if buckets is None
            else np_log_bucket((i + k_len - q_len) - j, bs, mp) for j in range(k_len)]
           for i in range(q_len)]
    np.testing.assert_array_equal(P.deberta_relative_positions(q_len, k_len, bs, mp), rel)
    c2p, p2c = np_deberta_official(q, k, pq, pk, rel)
    rel_j = jnp.asarray(rel, jnp.int32)
    np.testing.assert_allclose(P.deberta_c2p(f32(q), f32(pk), rel_j), c2p, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(P.deberta_p2c(f32(k), f32(pq), rel_j), p2c, rtol=1e-5, atol=1e-5)
    c2c = np.einsum("bqhd,bkhd->bhqk", q, k)
    got = P.deberta_disentangled_logits(f32(q), f32(k), f32(pq), f32(pk), bs, mp)
    np.testing.assert_allclose(got, (c2c + c2p + p2c) / math.sqrt(3 * D), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2k"):
        P.deberta_c2p(f32(q), f32(pk[:-1]), jnp.zeros((q_len, k_len), jnp.int32))


DEBERTA_FIXTURE = (pathlib.Path(__file__).parent.parent / "fixtures" / "deberta"
                   / "hf_deberta_v2.npz")


@pytest.fixture(scope="module")
def hf_deberta():
    """Hugging Face DebertaV2 numbers (tests/fixtures/deberta/make_fixture.py; no torch here)."""
    with np.load(DEBERTA_FIXTURE, allow_pickle=False) as z:
        return {name: z[name] for name in z.files}


@pytest.mark.parametrize("case", ["plain", "plain_wide", "bucket"])
def test_deberta_matches_hugging_face(hf_deberta, case):
    g = lambda name: hf_deberta[f"{case}__{name}"]
    q, k, pos_q, pos_k = g("q"), g("k"), g("pos_q"), g("pos_k")
    seq, d = q.shape[1], q.shape[-1]
    assert pos_q.shape[0] == 2 * int(g("span"))
    buckets = int(g("position_buckets"))
    bs, mp = (buckets, int(g("max_relative_positions"))) if buckets > 0 else (None, None)
    rel = P.deberta_relative_positions(seq, seq, bs, mp)
    np.testing.assert_array_equal(rel, g("relative_pos"))
    scale = math.sqrt(3 * d)  # HF's terms are already divided by sqrt(d * scale_factor)
    c2p = P.deberta_c2p(f32(q), f32(pos_k), rel) / scale
    p2c = P.deberta_p2c(f32(k), f32(pos_q), rel) / scale
    np.testing.assert_allclose(c2p, g("c2p"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p2c, g("p2c"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c2p + p2c, g("bias"), rtol=1e-5, atol=1e-6)
    logits = P.deberta_disentangled_logits(f32(q), f32(k), f32(pos_q), f32(pos_k), bs, mp)
    np.testing.assert_allclose(jax.nn.softmax(logits, -1), g("probs"), rtol=1e-5, atol=1e-6)
    # the fixture can tell the conventions apart: the paper's literal j - i + k misses HF's p2c
    span = pos_q.shape[0] // 2
    literal = np.einsum("bkhd,qkhd->bhqk", k, pos_q[np.clip(-np.asarray(rel) + span, 0,
                                                            2 * span - 1)]) / scale
    assert np.abs(literal - g("p2c")).max() > 0.1


@pytest.mark.parametrize("bucket_size,max_position", [(256, 512), (8, 30), (16, 100), (4, 5)])
def test_deberta_log_bucket_matches_hugging_face(hf_deberta, bucket_size, max_position):
    x = hf_deberta[f"buckets_{bucket_size}_{max_position}__x"]
    want = hf_deberta[f"buckets_{bucket_size}_{max_position}__bucket"]
    np.testing.assert_array_equal(P.deberta_log_bucket_position(x, bucket_size, max_position),
                                  want)


# ----------------------------------------------------------------------------- BERT


@pytest.mark.parametrize("mode", ["relative_key", "relative_key_query"])
@pytest.mark.parametrize("q_len,k_len", [(6, 6), (1, 5)])
def test_bert_relative_matches_loop(mode, q_len, k_len):
    max_pos = 8
    q, k = rng.normal(size=(2, q_len, H, D)), rng.normal(size=(2, k_len, H, D))
    table = rng.normal(size=(2 * max_pos - 1, D))
    got = P.bert_relative_logits(f32(q), f32(k), f32(table), mode)
    want = np.zeros((2, H, q_len, k_len))
    for i in range(q_len):
        ia = i + k_len - q_len
        for j in range(k_len):
            e = table[ia - j + max_pos - 1]
            want[:, :, i, j] = q[:, i] @ e + (k[:, j] @ e if mode == "relative_key_query" else 0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        P.bert_relative_logits(f32(q), f32(k), f32(table), "absolute")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        P.bert_relative_logits(f32(q), f32(k), f32(table[:3]), mode)


# ----------------------------------------------------------------------------- shared properties


def test_relative_terms_batched_equal_loop_and_finite_grads():
    q, k = f32(1e3 * rng.normal(size=(3, 5, H, D))), f32(1e3 * rng.normal(size=(3, 5, H, D)))
    r = f32(rng.normal(size=(9, H, D)))
    u, v = f32(rng.normal(size=(H, D))), f32(rng.normal(size=(H, D)))
    table = f32(rng.normal(size=(9, D)))
    pq, pk = f32(rng.normal(size=(6, H, D))), f32(rng.normal(size=(6, H, D)))
    fns = {
        "xl": lambda q, k: P.transformer_xl_logits(q, k, r, u, v),
        "shaw": lambda q, k: P.shaw_key_logits(q, table, 5),
        "bert": lambda q, k: P.bert_relative_logits(q, k, table, "relative_key_query"),
        "deberta": lambda q, k: P.deberta_disentangled_logits(q, k, pq, pk, 4, 10),
    }
    for name, fn in fns.items():
        batched = fn(q, k)
        for b in range(3):
            np.testing.assert_allclose(batched[b], fn(q[b], k[b]), rtol=1e-5, atol=1e-2,
                                       err_msg=name)
        gq, gk = jax.jit(jax.grad(lambda q, k: jnp.sum(jnp.tanh(fn(q, k) * 1e-6)), (0, 1)))(q, k)
        assert np.all(np.isfinite(gq)) and np.all(np.isfinite(gk)), name
