"""Tests for jaxzoo.core.attention: NumPy brute force, chunked == xla (values and gradients),
masking edge cases, dtypes, transforms, the KV cache and the chunked impl's memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.core.attention import (cached_attention, causal_mask, dot_product_attention,
                                   init_kv_cache, update_kv_cache)


def _normal(seed, shape, dtype=jnp.float32):
    # NumPy draws: jax.random would compile a threefry kernel for every new shape.
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _bernoulli(seed, p, shape):
    return jnp.asarray(np.random.default_rng(seed).random(shape) < p)


def _qkv(b=2, q_len=16, k_len=16, heads=4, kv_heads=4, dim=8, v_dim=None, seed=0):
    return (_normal(seed, (b, q_len, heads, dim)), _normal(seed + 1, (b, k_len, kv_heads, dim)),
            _normal(seed + 2, (b, k_len, kv_heads, v_dim or dim)))


def _reference(q, k, v, bias=None, mask=None, causal=False, scale=None, q_offset=None):
    """Float64 loop over (batch, head, query), attending only the allowed keys."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    batch = np.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3])
    q_len, heads, dim = q.shape[-3:]
    k_len, kv_heads = k.shape[-3:-1]
    full = batch + (heads, q_len, k_len)
    bias = np.broadcast_to(np.zeros(()) if bias is None else np.asarray(bias, np.float64), full)
    mask = np.broadcast_to(np.ones((), bool) if mask is None else np.asarray(mask), full)
    q, k, v = (np.broadcast_to(x, batch + x.shape[-3:]) for x in (q, k, v))
    scale = dim ** -0.5 if scale is None else scale
    q_offset = k_len - q_len if q_offset is None else q_offset
    out = np.zeros(batch + (q_len, heads, v.shape[-1]))
    for idx in np.ndindex(*batch):
        for h in range(heads):
            kh = h // (heads // kv_heads)
            for i in range(q_len):
                keys = [j for j in range(k_len)
                        if mask[idx][h, i, j] and np.isfinite(bias[idx][h, i, j])
                        and (not causal or j <= q_offset + i)]
                if not keys:
                    continue
                s = np.array([scale * q[idx][i, h] @ k[idx][j, kh] + bias[idx][h, i, j]
                              for j in keys])
                w = np.exp(s - s.max())
                out[idx][i, h] = (w / w.sum()) @ v[idx][keys, kh]
    return out


@pytest.mark.parametrize("kw", [
    dict(),
    dict(causal=True),
    dict(q_len=3, k_len=7, causal=True),  # end-aligned causal
    dict(q_len=3, k_len=7, causal=True, q_offset=1),
    dict(kv_heads=2, causal=True, bias=True, mask=True),
    dict(kv_heads=1, v_dim=5, bias=True, scale=0.3),
])
def test_xla_matches_numpy_brute_force(kw):
    kw = dict(kw)
    shapes = {n: kw.pop(n) for n in ("q_len", "k_len", "kv_heads", "v_dim") if n in kw}
    q, k, v = _qkv(b=2, heads=4, **{"q_len": 6, "k_len": 6, **shapes})
    lq, lk = q.shape[1], k.shape[1]
    bias = _normal(7, (2, 4, lq, lk)) if kw.pop("bias", False) else None
    mask = _bernoulli(8, 0.7, (2, 1, lq, lk)) if kw.pop("mask", False) \
        else None
    got = jax.jit(lambda *a: dot_product_attention(*a, impl="xla", **kw))(q, k, v, bias, mask)
    np.testing.assert_allclose(got, _reference(q, k, v, bias, mask, **kw), atol=2e-5)


def test_causal_mask_is_shifted_tril():
    np.testing.assert_array_equal(causal_mask(4, 4), np.tril(np.ones((4, 4), bool)))
    np.testing.assert_array_equal(causal_mask(2, 5), np.tril(np.ones((2, 5), bool), k=3))
    np.testing.assert_array_equal(causal_mask(3, 5, q_offset=0), np.tril(np.ones((3, 5), bool)))


def _values_and_grads(impl, q, k, v, bias, mask, block_size, **kw):
    f = lambda q, k, v, b, m: dot_product_attention(q, k, v, b, m, impl=impl,
                                                    block_size=block_size, **kw)

    @jax.jit
    def run(q, k, v, bias, mask, cotangent):
        out, vjp = jax.vjp(lambda q, k, v, b: f(q, k, v, b, mask), q, k, v, bias)
        return out, vjp(cotangent)

    out_shape = jax.eval_shape(f, q, k, v, bias, mask)
    return run(q, k, v, bias, mask, _normal(99, out_shape.shape, out_shape.dtype))


def _assert_impls_agree(q, k, v, bias=None, mask=None, block_size=8, atol=2e-5, **kw):
    ref_out, ref_grads = _values_and_grads("xla", q, k, v, bias, mask, block_size, **kw)
    out, grads = _values_and_grads("chunked", q, k, v, bias, mask, block_size, **kw)
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    np.testing.assert_allclose(out, ref_out, atol=atol)
    for name, g, ref in zip(("q", "k", "v", "bias"), grads, ref_grads):
        if ref is None:
            assert g is None
            continue
        assert g.shape == ref.shape, name
        assert np.all(np.isfinite(g)), name
        np.testing.assert_allclose(g, ref, atol=atol, err_msg=f"d/d{name}")
    return out, grads, ref_out


CASES = {
    "plain": dict(),
    "mask": dict(mask=(2, 1, 16, 16)),
    "causal": dict(causal=True),
    "bias": dict(bias=(2, 4, 16, 16)),
    "gqa_2": dict(kv_heads=2, causal=True, bias=(2, 4, 16, 16), mask=(2, 4, 16, 16)),
    "mqa_1": dict(kv_heads=1, bias=(2, 4, 16, 16), mask=(1, 1, 16, 16)),
    "odd_37": dict(q_len=37, k_len=37, causal=True, bias=(2, 4, 37, 37), mask=(2, 1, 37, 37)),
    "q13_k37": dict(q_len=13, k_len=37, causal=True, bias=(2, 4, 13, 37), mask=(2, 4, 13, 37)),
    "q37_k13": dict(q_len=37, k_len=13, bias=(2, 4, 37, 13)),
    "q_offset": dict(q_len=5, k_len=20, causal=True, q_offset=7),
    "bias_bcast_heads_keys": dict(q_len=11, k_len=19, bias=(4, 1, 19), kv_heads=2),
    "bias_bcast_2d": dict(q_len=11, k_len=19, bias=(11, 19), causal=True),
    "value_dim_5": dict(v_dim=5, kv_heads=2, causal=True),
    "block_over_length": dict(q_len=37, k_len=37, block_size=64, causal=True),
}


@pytest.mark.parametrize("name", CASES)
def test_chunked_matches_xla_values_and_grads(name):
    kw = dict(CASES[name])
    shapes = {n: kw.pop(n) for n in ("q_len", "k_len", "kv_heads", "v_dim") if n in kw}
    q, k, v = _qkv(**shapes)
    bias = _normal(5, kw.pop("bias")) if "bias" in kw else None
    mask = _bernoulli(6, 0.7, kw.pop("mask")) if "mask" in kw else None
    _assert_impls_agree(q, k, v, bias, mask, **kw)


def test_fully_masked_rows_are_zero_with_finite_grads():
    q, k, v = _qkv(b=1, q_len=12, k_len=12, kv_heads=2)
    mask, bias = np.ones((1, 4, 12, 12), bool), np.zeros((1, 4, 12, 12), np.float32)
    mask[0, 1, 3] = mask[0, :, 7] = False  # (head 1, query 3) and query 7 of every head
    bias[0, 2, 5] = -np.inf  # (head 2, query 5) by bias alone
    bias[0, 0, 9, ::2], mask[0, 0, 9, 1::2] = -np.inf, False  # half by bias, half by mask
    out, grads, ref_out = _assert_impls_agree(q, k, v, jnp.asarray(bias), jnp.asarray(mask))
    for o in (out, ref_out):
        assert np.all(np.isfinite(o))
        for h, i in ((1, 3), (2, 5), (0, 9), (3, 7)):
            np.testing.assert_array_equal(o[0, i, h], 0.0)
        assert np.abs(o[0, 4]).max() > 0
    np.testing.assert_array_equal(grads[0][0, 3, 1], 0.0)  # no gradient through a dead row
    np.testing.assert_array_equal(grads[3][0, 2, 5], 0.0)


def test_causal_query_before_all_keys_is_zero():
    q, k, v = _qkv(b=1, q_len=4, k_len=6)
    for impl in ("xla", "chunked"):
        out = jax.jit(lambda *a: dot_product_attention(*a, causal=True, q_offset=-2, impl=impl,
                                                       block_size=2))(q, k, v)
        np.testing.assert_array_equal(out[0, :2], 0.0)  # queries at positions -2, -1
        np.testing.assert_allclose(out, _reference(q, k, v, causal=True, q_offset=-2), atol=2e-5)


def test_extreme_logits_are_finite_and_agree():
    q, k, v = _qkv(b=1, q_len=20, k_len=20, kv_heads=2)
    bias = 1e4 * _normal(3, (1, 4, 20, 20))
    _assert_impls_agree(30.0 * q, k, v, bias, causal=True, atol=1e-3)


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_bfloat16_close_to_float32(impl):
    q, k, v = _qkv(q_len=21, k_len=21, kv_heads=2)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    f = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, causal=True, impl=impl,
                                                      block_size=8))
    out = f(q, k, v)
    assert out.dtype == jnp.bfloat16
    ref = f(*(x.astype(jnp.float32) for x in (q, k, v)))
    np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=2e-2)
    loss = lambda *a: jnp.sum(f(*a).astype(jnp.float32) * jnp.cos(jnp.arange(8.0)))
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    ref_grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(
        *(x.astype(jnp.float32) for x in (q, k, v)))
    for g, r in zip(grads, ref_grads):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(g.astype(jnp.float32), r, atol=2e-2 * float(jnp.abs(r).max()))


@pytest.mark.parametrize("impl", ["xla", "chunked"])
def test_batched_equals_loop_jit_and_vmap(impl):
    q = _normal(0, (2, 3, 10, 4, 8))
    k, v = _normal(1, (3, 10, 2, 8)), _normal(2, (3, 10, 2, 8))  # broadcast over the leading 2
    bias = _normal(3, (3, 4, 10, 10))
    f = lambda q, k, v, b: dot_product_attention(q, k, v, b, causal=True, impl=impl, block_size=4)
    out = jax.jit(f)(q, k, v, bias)
    assert out.shape == (2, 3, 10, 4, 8)
    one = jax.jit(f)
    for a in range(2):
        for c in range(3):
            np.testing.assert_allclose(out[a, c], one(q[a, c], k[c], v[c], bias[c]), atol=1e-6)
    vmapped = jax.jit(jax.vmap(f, in_axes=(0, None, None, None)))(q, k, v, bias)
    np.testing.assert_allclose(vmapped, out, atol=1e-6)
    if impl == "chunked":  # the custom VJP under vmap
        grad = lambda q: jax.grad(lambda q: jnp.sum(f(q, k, v, bias) ** 2))(q)
        np.testing.assert_allclose(jax.jit(jax.vmap(grad))(q), jax.jit(grad)(q), atol=1e-5)


def test_bad_inputs_raise_value_error():
    q, k, v = _qkv(kv_heads=2)
    with pytest.raises(ValueError, match="'flash'"):
        dot_product_attention(q, k, v, impl="flash")
    with pytest.raises(ValueError, match="num_kv_heads=3"):
        dot_product_attention(q, _normal(0, (2, 16, 3, 8)), _normal(0, (2, 16, 3, 8)))
    with pytest.raises(ValueError, match="head_dim"):
        dot_product_attention(q, _normal(0, (2, 16, 2, 6)), v)
    with pytest.raises(ValueError, match="v of shape"):
        dot_product_attention(q, k, _normal(0, (2, 15, 2, 8)))
    with pytest.raises(ValueError, match="bias of shape"):
        dot_product_attention(q, k, v, bias=jnp.zeros((4, 16, 5)))
    with pytest.raises(ValueError, match="boolean"):
        dot_product_attention(q, k, v, mask=jnp.ones((16, 16)))
    with pytest.raises(ValueError, match="do not broadcast"):
        dot_product_attention(q, k, v, mask=jnp.ones((3, 4, 16, 16), bool))
    with pytest.raises(ValueError, match="block_size"):
        dot_product_attention(q, k, v, impl="chunked", block_size=0)
    with pytest.raises(ValueError, match=r"\[\.\.\., length"):
        dot_product_attention(q[0, 0], k, v)
    with pytest.raises(ValueError, match="does not fit"):
        update_kv_cache(init_kv_cache(2, 8, 2, 8), k[:, :1, :1], v[:, :1, :1])


@pytest.mark.parametrize("impl", ["xla", "chunked"])
@pytest.mark.parametrize("chunk", [1, 3])
def test_kv_cache_decoding_matches_full_causal_pass(impl, chunk):
    q, k, v = _qkv(b=2, q_len=10, k_len=10, kv_heads=2)
    full = dot_product_attention(q, k, v, causal=True, impl="xla")

    @jax.jit
    def step(cache, q_new, k_new, v_new):
        cache = update_kv_cache(cache, k_new, v_new)
        return cache, cached_attention(q_new, cache, impl=impl, block_size=4)

    cache, outs = init_kv_cache(2, 16, 2, 8), []
    for t in range(0, 10, chunk):
        cache, out = step(cache, q[:, t:t + chunk], k[:, t:t + chunk], v[:, t:t + chunk])
        outs.append(out)
    assert int(cache["length"]) == 10
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=2e-6)
    np.testing.assert_array_equal(cache["k"][:, 10:], 0.0)
    # Non-causal reads of the cache see exactly the `length` keys written so far.
    cross = jax.jit(lambda q, c: cached_attention(q, c, causal=False, impl=impl, block_size=4))
    np.testing.assert_allclose(cross(q[:, :2], cache), dot_product_attention(q[:, :2], k, v),
                               atol=2e-6)


def test_chunked_temp_memory_is_far_below_xla():
    spec = jax.ShapeDtypeStruct((1, 1024, 2, 16), jnp.float32)

    def temp_bytes(impl):
        loss = lambda q, k, v: jnp.sum(dot_product_attention(q, k, v, impl=impl, block_size=128))
        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
        return grad.lower(spec, spec, spec).compile().memory_analysis().temp_size_in_bytes

    xla, chunked = temp_bytes("xla"), temp_bytes("chunked")
    assert xla > 2 * 1024 * 1024 * 4  # it does hold at least one [heads, L, L] float32 array
    assert chunked < 0.25 * xla, (chunked, xla)
