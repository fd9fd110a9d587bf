"""Scaled dot-product attention (plain and memory-linear), masks and a KV cache.

Names and axes, fixed once for the whole module:
  q     [..., q_len, num_heads, head_dim]          queries
  k     [..., k_len, num_kv_heads, head_dim]       keys
  v     [..., k_len, num_kv_heads, value_dim]      values (value_dim is usually head_dim)
  bias  additive logits, broadcastable to [..., num_heads, q_len, k_len]
  mask  boolean, broadcastable to [..., num_heads, q_len, k_len]; True = may attend
  out   [..., q_len, num_heads, value_dim]
The leading axes `...` of q, k, v, bias and mask broadcast against each other.

Grouped-query attention (GQA, Ainslie et al. 2023, arXiv 2305.13245): num_kv_heads must divide
num_heads, and query head h reads kv head h // (num_heads // num_kv_heads); num_kv_heads == 1 is
multi-query attention (Shazeer 2019, arXiv 1911.02150).

Positions: key j sits at position j, query i at position q_offset + i. q_offset defaults to
k_len - q_len, so the LAST query is aligned with the LAST key. causal=True lets query i attend key
j iff j <= q_offset + i. End alignment is what incremental decoding needs: the q_len new tokens are
the last q_len entries of the k_len keys (see `cached_attention`, which passes q_offset itself).

Logits are s = scale * q.k + bias with scale = head_dim ** -0.5 by default (Eq. 1, Vaswani et al.
2017, arXiv 1706.03762). Softmax runs in float32 and the output is cast back to the result dtype
of (q, k, v). A row whose keys are all masked (by `mask`, `causal`, or a bias of -inf) yields an
output of exactly 0 with finite gradients, instead of the NaN of a naive softmax.

Implementations (`impl=`), which agree to float32 rounding (tests/core/test_attention.py):
  "xla"      materialises the [..., num_heads, q_len, k_len] logits; autodiff backward.
  "chunked"  online softmax over key blocks (Rabe & Staats 2021, arXiv 2112.05682; FlashAttention
             Alg. 1, Dao et al. 2022, arXiv 2205.14135) inside a custom VJP that saves only
             (q, k, v, out, logsumexp) and recomputes each block's probabilities in the backward
             pass (FlashAttention App. B.2, Alg. 4). Both the query and the key axes are blocked,
             so temporaries are O(block_size ** 2) per (batch, head) plus O(length) accumulators,
             in the forward and in the backward pass. Lengths that are not multiples of the block
             are padded internally and the padding is masked. With causal=True, blocks that lie
             entirely above the diagonal are skipped. The bias gradient, computed only when the
             bias is differentiated, is written block by block into an accumulator of the bias's
             own (broadcast) shape: a full [..., q_len, k_len] bias costs one array of that size,
             a broadcast one (e.g. [num_heads, 1, k_len]) only its own size. `mask` and
             `q_offset` get no gradient; `scale` must be a Python number for this impl.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("xla", "chunked")
_F32 = jnp.float32


def causal_mask(q_len: int, k_len: int, q_offset=None) -> jax.Array:
    """Boolean [q_len, k_len]: True where key j <= q_offset + i (q_offset default k_len - q_len)."""
    if q_offset is None:
        q_offset = k_len - q_len
    return jnp.arange(k_len)[None, :] <= jnp.arange(q_len)[:, None] + q_offset


def _mask_batch_head(x, name, num_heads, q_len, k_len):
    """Splits a bias/mask into (batch shape, [h, q, k] tail shape) and validates the tail."""
    shape = (1,) * max(0, 3 - x.ndim) + tuple(x.shape)
    tail = shape[-3:]
    for size, full, axis in zip(tail, (num_heads, q_len, k_len), ("num_heads", "q_len", "k_len")):
        if size not in (1, full):
            raise ValueError(f"{name} of shape {tuple(x.shape)} is not broadcastable to "
                             f"[..., num_heads={num_heads}, q_len={q_len}, k_len={k_len}] "
                             f"(its {axis} axis is {size}; allowed 1 or {full})")
    return shape[:-3], tail


def _normalise(q, k, v, bias, mask):
    """Validates shapes and flattens all leading axes into one batch axis.

    Returns q [B, Lq, H, D], k [B, Lk, Hkv, D], v [B, Lk, Hkv, Dv], bias/mask [Bb, Hb, Qb, Cb]
    (each of these axes either 1 or full) and the broadcast batch shape to restore.
    """
    q, k, v = jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim < 3:
            raise ValueError(f"{name} must have shape [..., length, heads, dim]; got {x.shape}")
    q_len, num_heads, head_dim = q.shape[-3:]
    k_len, num_kv_heads, k_dim = k.shape[-3:]
    if k_dim != head_dim:
        raise ValueError(f"k head_dim {k_dim} must equal q head_dim {head_dim}")
    if v.shape[-3:-1] != (k_len, num_kv_heads):
        raise ValueError(f"v of shape {v.shape} must have (k_len, num_kv_heads) = "
                         f"{(k_len, num_kv_heads)} like k of shape {k.shape}")
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
    batches = [q.shape[:-3], k.shape[:-3], v.shape[:-3]]
    extras = []
    for name, x in (("bias", bias), ("mask", mask)):
        if x is None:
            extras.append(None)
            continue
        x = jnp.asarray(x)
        if name == "mask" and x.dtype != jnp.bool_:
            raise ValueError(f"mask must be boolean (True = attend); got dtype {x.dtype}")
        b, tail = _mask_batch_head(x, name, num_heads, q_len, k_len)
        batches.append(b)
        extras.append((x.reshape(b + tail), b, tail))
    try:
        batch = jnp.broadcast_shapes(*batches)
    except ValueError as e:
        raise ValueError(f"leading axes of q {q.shape}, k {k.shape}, v {v.shape} and bias/mask do "
                         f"not broadcast: {e}") from None
    n = 1
    for size in batch:
        n *= size
    flat = lambda x: jnp.broadcast_to(x, batch + x.shape[-3:]).reshape((n,) + x.shape[-3:])
    out = [flat(q), flat(k), flat(v)]
    for extra in extras:
        if extra is None:
            out.append(None)
            continue
        x, b, tail = extra
        if all(s == 1 for s in b):  # keep a broadcast batch axis broadcast
            out.append(x.reshape((1,) + tail))
        else:
            out.append(jnp.broadcast_to(x, batch + tail).reshape((n,) + tail))
    return (*out, batch)


def _group_heads(x, num_kv_heads):
    """[Bb, Hb, Qb, Cb] -> [Bb, Kb, Gb, Qb, Cb], splitting a full head axis into (kv, group)."""
    if x is None:
        return None
    bb, hb, qb, cb = x.shape
    if hb == 1:
        return x.reshape(bb, 1, 1, qb, cb)
    return x.reshape(bb, num_kv_heads, hb // num_kv_heads, qb, cb)


def _xla_attention(q, k, v, bias, mask, causal, scale, q_offset):
    """Reference path: full [B, Hkv, G, Lq, Lk] logits, float32 softmax, autodiff gradients."""
    b, q_len, num_heads, head_dim = q.shape
    k_len, num_kv_heads, v_dim = v.shape[1:]
    groups = num_heads // num_kv_heads
    # Batch axes (b, k) leading and the contracted axis last on both operands: XLA:CPU lowers
    # the einsum with sequence axes in the middle ~10x slower at 2k tokens.
    qg = q.astype(_F32).reshape(b, q_len, num_kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
    kt = k.astype(_F32).transpose(0, 2, 1, 3)  # [b, k, c, d]
    s = jnp.einsum("bkgqd,bkcd->bkgqc", qg * scale, kt)
    if bias is not None:
        s = s + _group_heads(bias, num_kv_heads).astype(_F32)
    valid = _group_heads(mask, num_kv_heads)
    if causal:
        c = causal_mask(q_len, k_len, q_offset)
        valid = c if valid is None else valid & c
    if valid is not None:
        s = jnp.where(valid, s, -jnp.inf)
    # Softmax is shift invariant, so the shift needs no gradient; a fully masked row has max -inf
    # and is shifted by 0 instead, so that exp gives exact zeros (and zero gradients), not NaN.
    m = lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True))
    p = jnp.exp(s - jnp.where(jnp.isfinite(m), m, 0.0))
    denom = jnp.sum(p, axis=-1, keepdims=True)
    # normalise after the value product: [.., q, dv] divisions instead of [.., q, k]
    out = jnp.einsum("bkgqc,bkcd->bkgqd", p, v.astype(_F32).transpose(0, 2, 1, 3))
    out = out / jnp.where(denom > 0, denom, 1.0)
    return out.transpose(0, 3, 1, 2, 4).reshape(b, q_len, num_heads, v_dim)


# ----------------------------------------------------------------------------------------------
# Chunked (FlashAttention-style) implementation. Internal layout: q [B, K, G, Lq_pad, D],
# k [B, K, Lk_pad, D], v [B, K, Lk_pad, Dv] (K = kv heads, G = query heads per kv head), bias and
# mask [Bb, Hb, Qb, Cb] (each axis 1 or full). Lengths are padded to multiples of the blocks.


class _Config(NamedTuple):
    causal: bool
    scale: float
    q_block: int
    k_block: int
    k_len: int  # true (unpadded) key length: keys at j >= k_len are padding


def _qk_slice(x, i0, j0, cfg, num_kv_heads):
    """The (query block, key block) tile [Bb, Kb, Gb, ., .] of a [Bb, Hb, Qb, Cb] bias or mask.

    Bias and mask stay 4-D outside the loops: grouping their head axis there would make XLA copy
    the whole (possibly [L, L]) array into a new layout; grouping a tile is free.
    """
    qb, cb = x.shape[-2:]
    starts = (0, 0, i0 if qb > 1 else 0, j0 if cb > 1 else 0)
    sizes = x.shape[:2] + (cfg.q_block if qb > 1 else 1, cfg.k_block if cb > 1 else 1)
    return _group_heads(lax.dynamic_slice(x, starts, sizes), num_kv_heads)


def _tile_logits(qs, kj, bias, mask, q_offset, i0, j0, cfg):
    """Masked float32 logits [B, K, G, q_block, k_block] of one tile; masked entries are -inf."""
    s = jnp.einsum("bkgqd,bkcd->bkgqc", qs, kj)
    if bias is not None:
        s = s + _qk_slice(bias, i0, j0, cfg, qs.shape[1]).astype(_F32)
    valid = None if mask is None else _qk_slice(mask, i0, j0, cfg, qs.shape[1])
    kpos = j0 + jnp.arange(cfg.k_block)
    if cfg.causal:
        c = kpos[None, :] <= (q_offset + i0 + jnp.arange(cfg.q_block))[:, None]
        valid = c if valid is None else valid & c
    if cfg.k_len % cfg.k_block:
        pad = kpos < cfg.k_len
        valid = pad if valid is None else valid & pad
    return s if valid is None else jnp.where(valid, s, -jnp.inf)


def _tile_needed(q_offset, i0, j0, cfg):
    """False when causality masks the whole tile (its first key is after its last query)."""
    return j0 <= q_offset + i0 + cfg.q_block - 1


def _maybe(cfg, needed, body, skip, *args):
    """body(*args) for a tile that may hold an unmasked entry, else (causal only) skip(*args)."""
    if not cfg.causal:
        return body(*args)
    return lax.cond(needed, body, skip, *args)


def _flash_forward(q, k, v, bias, mask, q_offset, cfg):
    """Returns out [B, K, G, Lq_pad, Dv] (float32) and logsumexp [B, K, G, Lq_pad]."""
    b, nkv, g, lq, _ = q.shape
    dv = v.shape[-1]
    nq, nk = lq // cfg.q_block, k.shape[2] // cfg.k_block

    def query_block(i):
        i0 = i * cfg.q_block
        qs = lax.dynamic_slice_in_dim(q, i0, cfg.q_block, axis=3).astype(_F32) * cfg.scale

        def key_step(carry, j):
            j0 = j * cfg.k_block

            def update(carry):
                o, m, l = carry
                kj = lax.dynamic_slice_in_dim(k, j0, cfg.k_block, axis=2).astype(_F32)
                vj = lax.dynamic_slice_in_dim(v, j0, cfg.k_block, axis=2).astype(_F32)
                s = _tile_logits(qs, kj, bias, mask, q_offset, i0, j0, cfg)
                # Online softmax (Rabe & Staats 2021; FlashAttention Alg. 1, inner loop): keep
                # the running max m, the running sum l of exp(s - m) and the unnormalised output o.
                m_new = jnp.maximum(m, jnp.max(s, axis=-1))
                shift = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # all -inf so far: exp gives 0
                alpha = jnp.exp(m - shift)
                p = jnp.exp(s - shift[..., None])
                l = alpha * l + jnp.sum(p, axis=-1)
                o = alpha[..., None] * o + jnp.einsum("bkgqc,bkcd->bkgqd", p, vj)
                return o, m_new, l

            needed = _tile_needed(q_offset, i0, j0, cfg)
            return _maybe(cfg, needed, update, lambda c: c, carry), None

        init = (jnp.zeros((b, nkv, g, cfg.q_block, dv), _F32),
                jnp.full((b, nkv, g, cfg.q_block), -jnp.inf, _F32),
                jnp.zeros((b, nkv, g, cfg.q_block), _F32))
        (o, m, l), _ = lax.scan(key_step, init, jnp.arange(nk))
        l_safe = jnp.where(l > 0, l, 1.0)  # fully masked rows: output 0, logsumexp 0 (finite)
        lse = jnp.where(jnp.isfinite(m), m, 0.0) + jnp.log(l_safe)
        return o / l_safe[..., None], lse

    out, lse = lax.map(query_block, jnp.arange(nq))  # [nq, B, K, G, q_block, ...]
    out = jnp.moveaxis(out, 0, 3).reshape(b, nkv, g, lq, dv)
    lse = jnp.moveaxis(lse, 0, 3).reshape(b, nkv, g, lq)
    return out, lse


def _add_tile(acc, ds, i0, j0):
    """acc[tile] += ds, summed over the axes along which the [Bb, Hb, Qb, Cb] bias broadcast."""
    bb, hb, qb, cb = acc.shape
    kv_heads = ds.shape[1]
    grouped = (bb, 1, 1, qb, cb) if hb == 1 else (bb, kv_heads, hb // kv_heads, qb, cb)
    axes = tuple(a for a in range(5) if grouped[a] == 1 and ds.shape[a] > 1)
    ds = jnp.sum(ds, axis=axes, keepdims=True)
    ds = ds.reshape((bb, hb) + ds.shape[3:])
    starts = (0, 0, i0 if qb > 1 else 0, j0 if cb > 1 else 0)
    return lax.dynamic_update_slice(acc, lax.dynamic_slice(acc, starts, ds.shape) + ds, starts)


def _flash_backward(cfg, res, d_out):
    """FlashAttention backward (2205.14135, App. B.2 and Alg. 4), blocked over keys and queries.

    With P = exp(S - lse) recomputed per tile: dV = P^T dO, dP = dO V^T, dS = P * (dP - delta)
    where delta = rowsum(dO * O) (App. B.2), dQ = scale dS K, dK = scale dS^T Q, dbias = dS.
    """
    q, k, v, bias, mask, q_offset, out, lse, bias_grad = res
    if isinstance(d_out, jax.custom_derivatives.SymbolicZero):
        d_out = jnp.zeros(out.shape, out.dtype)
    b, nkv, g, lq, d = q.shape
    dv_dim = v.shape[-1]
    nq, nk = lq // cfg.q_block, k.shape[2] // cfg.k_block
    d_out = d_out.astype(_F32)
    delta = jnp.sum(d_out * out.astype(_F32), axis=-1)  # [B, K, G, Lq_pad]

    def key_block(carry, j):
        dq_acc, dbias = carry
        j0 = j * cfg.k_block
        kj = lax.dynamic_slice_in_dim(k, j0, cfg.k_block, axis=2).astype(_F32)
        vj = lax.dynamic_slice_in_dim(v, j0, cfg.k_block, axis=2).astype(_F32)

        def query_step(carry, i):
            i0 = i * cfg.q_block

            def grads(carry):
                dk, dv, dbias = carry
                qs = lax.dynamic_slice_in_dim(q, i0, cfg.q_block, axis=3).astype(_F32) * cfg.scale
                do = lax.dynamic_slice_in_dim(d_out, i0, cfg.q_block, axis=3)
                lse_i = lax.dynamic_slice_in_dim(lse, i0, cfg.q_block, axis=3)
                delta_i = lax.dynamic_slice_in_dim(delta, i0, cfg.q_block, axis=3)
                s = _tile_logits(qs, kj, bias, mask, q_offset, i0, j0, cfg)
                p = jnp.exp(s - lse_i[..., None])  # masked entries: exp(-inf) = 0
                dv = dv + jnp.einsum("bkgqc,bkgqd->bkcd", p, do)
                dp = jnp.einsum("bkgqd,bkcd->bkgqc", do, vj)
                ds = p * (dp - delta_i[..., None])
                dk = dk + jnp.einsum("bkgqc,bkgqd->bkcd", ds, qs)
                dq = jnp.einsum("bkgqc,bkcd->bkgqd", ds, kj) * cfg.scale
                if dbias is not None:
                    dbias = _add_tile(dbias, ds, i0, j0)
                return (dk, dv, dbias), dq

            def skip(carry):
                return carry, jnp.zeros((b, nkv, g, cfg.q_block, d), _F32)

            return _maybe(cfg, _tile_needed(q_offset, i0, j0, cfg), grads, skip, carry)

        init = (jnp.zeros((b, nkv, cfg.k_block, d), _F32),
                jnp.zeros((b, nkv, cfg.k_block, dv_dim), _F32), dbias)
        (dk, dv, dbias), dq = lax.scan(query_step, init, jnp.arange(nq))
        return (dq_acc + dq, dbias), (dk, dv)

    dbias0 = None if bias_grad is None else jnp.zeros(bias.shape, _F32)
    dq0 = jnp.zeros((nq, b, nkv, g, cfg.q_block, d), _F32)
    (dq, dbias), (dk, dv) = lax.scan(key_block, (dq0, dbias0), jnp.arange(nk))
    dq = jnp.moveaxis(dq, 0, 3).reshape(q.shape)
    dk = jnp.moveaxis(dk, 0, 2).reshape(k.shape)
    dv = jnp.moveaxis(dv, 0, 2).reshape(v.shape)
    dbias = None if bias_grad is None else dbias.astype(bias.dtype)
    return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), dbias, None, None)


def _flash(q, k, v, bias, mask, q_offset, cfg):
    out, _ = _flash_forward(q, k, v, bias, mask, q_offset, cfg)
    return out.astype(jnp.result_type(q, k, v))


def _flash_fwd_rule(q, k, v, bias, mask, q_offset, cfg):
    # symbolic_zeros=True: array leaves arrive as CustomVJPPrimal(value, perturbed), so the bias
    # gradient (an accumulator of the bias's size) is only computed when bias is differentiated.
    unwrap = lambda x: None if x is None else x.value
    bias_grad = None if bias is None or not bias.perturbed else ()  # static flag as tree structure
    q, k, v, bias, mask, q_offset = map(unwrap, (q, k, v, bias, mask, q_offset))
    out, lse = _flash_forward(q, k, v, bias, mask, q_offset, cfg)
    out = out.astype(jnp.result_type(q, k, v))
    return out, (q, k, v, bias, mask, q_offset, out, lse, bias_grad)


_flash = jax.custom_vjp(_flash, nondiff_argnums=(6,))
_flash.defvjp(_flash_fwd_rule, _flash_backward, symbolic_zeros=True)


def _pad_axis(x, axis, size, value):
    if x is None or x.shape[axis] in (1, size):
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths, constant_values=value)


def _chunked_attention(q, k, v, bias, mask, causal, scale, q_offset, block_size):
    b, q_len, num_heads, head_dim = q.shape
    k_len, num_kv_heads, v_dim = v.shape[1:]
    groups = num_heads // num_kv_heads
    q_block, k_block = min(block_size, q_len), min(block_size, k_len)
    lq, lk = -(-q_len // q_block) * q_block, -(-k_len // k_block) * k_block
    try:
        scale = float(scale)
    except TypeError:
        raise ValueError("impl='chunked' needs a Python number for scale; got a traced value") \
            from None
    cfg = _Config(bool(causal), scale, q_block, k_block, k_len)
    qh = q.reshape(b, q_len, num_kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
    kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    qh, kh, vh = _pad_axis(qh, 3, lq, 0), _pad_axis(kh, 2, lk, 0), _pad_axis(vh, 2, lk, 0)
    bias = _pad_axis(_pad_axis(bias, 2, lq, 0), 3, lk, 0)
    mask = _pad_axis(_pad_axis(mask, 2, lq, False), 3, lk, False)
    out = _flash(qh, kh, vh, bias, mask, jnp.asarray(q_offset, jnp.int32), cfg)
    out = out[:, :, :, :q_len].transpose(0, 3, 1, 2, 4)
    return out.reshape(b, q_len, num_heads, v_dim)


def dot_product_attention(q, k, v, bias=None, mask=None, *, causal: bool = False, scale=None,
                          q_offset=None, impl: str = "xla", block_size: int = 512) -> jax.Array:
    """softmax(scale * q k^T + bias, masked) v over the key axis, for every query and head.

    Args:
      q: [..., q_len, num_heads, head_dim].
      k: [..., k_len, num_kv_heads, head_dim]; num_kv_heads divides num_heads (GQA/MQA).
      v: [..., k_len, num_kv_heads, value_dim].
      bias: optional additive logits broadcastable to [..., num_heads, q_len, k_len] (-inf allowed).
      mask: optional boolean, broadcastable to [..., num_heads, q_len, k_len]; True = attend.
      causal: query i attends only keys j <= q_offset + i (end-aligned, see module docstring).
      scale: logit scale; default head_dim ** -0.5. A Python number for impl="chunked".
      q_offset: position of query 0 (int or int32 scalar array); default k_len - q_len.
      impl: "xla" (materialises the logits) or "chunked" (memory linear in length, custom VJP).
      block_size: query/key block length of impl="chunked" (capped at q_len / k_len).

    Returns:
      [..., q_len, num_heads, value_dim] in the result dtype of (q, k, v); rows with no attendable
      key are 0.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is not one of {IMPLS}")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int; got {block_size!r}")
    qf, kf, vf, bias, mask, batch = _normalise(q, k, v, bias, mask)
    q_len, k_len = qf.shape[1], kf.shape[1]
    if scale is None:
        scale = qf.shape[-1] ** -0.5
    if q_offset is None:
        q_offset = k_len - q_len
    if impl == "xla":
        out = _xla_attention(qf, kf, vf, bias, mask, causal, scale, q_offset)
    else:
        out = _chunked_attention(qf, kf, vf, bias, mask, causal, scale, q_offset, block_size)
    out = out.astype(jnp.result_type(qf, kf, vf))
    return out.reshape(batch + out.shape[1:])


# ----------------------------------------------------------------------------------------------
# KV cache for incremental decoding. A cache is a dict (a pytree, so it jits, scans and shards):
#   k, v    [..., max_len, num_kv_heads, head_dim]   keys/values of the tokens written so far
#   length  int32 scalar: number of valid entries; entries at positions >= length are ignored.


def init_kv_cache(batch, max_len: int, num_kv_heads: int, head_dim: int,
                  dtype=jnp.float32) -> dict:
    """Empty cache; `batch` is an int or a tuple of leading axes."""
    batch = (batch,) if isinstance(batch, int) else tuple(batch)
    if max_len < 1 or num_kv_heads < 1 or head_dim < 1:
        raise ValueError(f"max_len={max_len}, num_kv_heads={num_kv_heads}, head_dim={head_dim} "
                         "must all be >= 1")
    shape = batch + (max_len, num_kv_heads, head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
            "length": jnp.zeros((), jnp.int32)}


def update_kv_cache(cache: dict, k_new, v_new) -> dict:
    """Writes k_new, v_new [..., n, num_kv_heads, head_dim] at positions [length, length + n).

    The caller keeps length + n <= max_len: lax.dynamic_update_slice clamps the start index, so an
    overflowing write would silently overwrite the last entries (it cannot be checked under jit).
    """
    k_new, v_new = jnp.asarray(k_new), jnp.asarray(v_new)
    for name, new in (("k_new", k_new), ("v_new", v_new)):
        old = cache[name[0]]
        if (new.ndim != old.ndim or new.shape[-2:] != old.shape[-2:]
                or new.shape[-3] > old.shape[-3]):
            raise ValueError(f"{name} of shape {new.shape} does not fit a cache of shape "
                             f"{old.shape} "
                             "(expected [..., n <= max_len, num_kv_heads, head_dim])")
    start = cache["length"].astype(jnp.int32)
    idx = lambda x: (0,) * (x.ndim - 3) + (start, 0, 0)
    return {"k": lax.dynamic_update_slice(cache["k"], k_new.astype(cache["k"].dtype), idx(k_new)),
            "v": lax.dynamic_update_slice(cache["v"], v_new.astype(cache["v"].dtype), idx(v_new)),
            "length": start + k_new.shape[-3]}


def cached_attention(q, cache: dict, bias=None, mask=None, *, causal: bool = True, scale=None,
                     impl: str = "xla", block_size: int = 512) -> jax.Array:
    """Attention of the newest q_len tokens to the cache, after `update_kv_cache` wrote them.

    q is [..., q_len, num_heads, head_dim]; query i sits at position length - q_len + i. Keys at
    positions >= length are masked; causal=True also masks keys after each query's own position.
    bias/mask broadcast to [..., num_heads, q_len, max_len].
    Returns [..., q_len, num_heads, head_dim].
    """
    q = jnp.asarray(q)
    length = cache["length"]
    max_len = cache["k"].shape[-3]
    filled = (jnp.arange(max_len) < length)[None, None, :]  # [1, 1, max_len]
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise ValueError(f"mask must be boolean (True = attend); got dtype {mask.dtype}")
        filled = jnp.logical_and(mask, filled)
    return dot_product_attention(q, cache["k"], cache["v"], bias, filled, causal=causal,
                                 scale=scale, q_offset=length - q.shape[-3], impl=impl,
                                 block_size=block_size)
