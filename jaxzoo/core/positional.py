"""Positional encodings for attention: absolute (learned, sinusoidal, multiplicative, FLOATER,
complex order) and relative (Shaw, Transformer-XL, T5, DeBERTa, BERT). RoPE lives in
`jaxzoo.core.rope` and is re-exported here.

Conventions:
  q, k, v      [..., seq, heads, head_dim]
  logit terms  [..., heads, q_len, k_len]: added to the raw scores q_i . k_j before the softmax
               (each function says whether it already includes a 1/sqrt(d) scale; none but DeBERTa's
               full logits do)
  positions    [..., seq], integer or float
  query i sits at absolute position i + (k_len - q_len) and key j at j: the queries are the last
  q_len tokens (self-attention with a KV cache; plain self-attention when q_len == k_len).
Each relative scheme states its sign convention (i - j or j - i): its paper's, except where a
scheme follows its official code and every published checkpoint instead (DeBERTa's p2c index).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import jax
import jax.numpy as jnp

from jaxzoo.core.rope import (  # noqa: F401  (re-exported)
    apply_rope, logn_scale, rerope_attention, rope_frequencies)


def _query_key_offsets(q_len: int, k_len: int) -> np.ndarray:
    """i_abs - j for query i (at i + k_len - q_len) and key j: int [q_len, k_len]."""
    return (np.arange(q_len)[:, None] + (k_len - q_len)) - np.arange(k_len)[None, :]


# ----------------------------------------------------------------------------- absolute


def learned_positions(table, positions):
    """Trainable absolute positions (e.g. BERT's 512 x 768): table[positions].

    table [max_len, dim]; positions int [..., seq] -> [..., seq, dim]. Positions outside
    [0, max_len) give NaN rows instead of silently wrapping or clamping.
    """
    positions = jnp.asarray(positions)
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise ValueError(f"positions must be integers, got dtype {positions.dtype}")
    max_len = table.shape[0]
    positions = jnp.where(positions < 0, max_len, positions)
    return jnp.take(table, positions, axis=0, mode="fill", fill_value=jnp.nan)


def sinusoidal_positions(positions, dim: int, base: float = 10000.0, layout: str = "interleaved"):
    """Sinusoidal encoding (Vaswani et al. 2017, 1706.03762, Sec. 3.5).

    PE(p, 2i) = sin(p / base^(2i/dim)), PE(p, 2i+1) = cos(p / base^(2i/dim)) for layout
    "interleaved" (the paper); layout "concat" puts all sines first, then all cosines
    (tensor2tensor / Transformer-XL). positions [..., seq] (may be float or negative) ->
    [..., seq, dim] float32.
    """
    if not (isinstance(dim, (int, np.integer)) and dim >= 2 and dim % 2 == 0):
        raise ValueError(f"dim must be a positive even int, got {dim!r}")
    if layout not in ("interleaved", "concat"):
        raise ValueError(f"layout must be 'interleaved' or 'concat', got {layout!r}")
    inv_freq = jnp.asarray(1.0 / base ** (np.arange(0, dim, 2) / dim), jnp.float32)
    angle = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    if layout == "concat":
        return jnp.concatenate([sin, cos], axis=-1)
    return jnp.stack([sin, cos], axis=-1).reshape(angle.shape[:-1] + (dim,))


def sincos_2d_positions(height: int, width: int, dim: int, temperature: float = 10000.0):
    """Fixed 2-D sin-cos positions of a height x width patch grid, [height * width, dim] float32
    (row-major, as patches are flattened): the first dim/2 features encode the column x, the last
    dim/2 the row y, each as [sin(p w_i), cos(p w_i)] with w_i = temperature^(-i / (dim/4 - 1)),
    i < dim/4 (MoCo v3, Chen et al. 2021, 2104.02057; big_vision's posemb_sincos_2d)."""
    if dim % 4 or dim < 8:
        raise ValueError(f"dim={dim} must be a multiple of 4 and >= 8")
    y, x = np.mgrid[:height, :width]
    omega = 1.0 / temperature ** (np.arange(dim // 4) / (dim // 4 - 1))
    px, py = x.reshape(-1, 1) * omega, y.reshape(-1, 1) * omega
    table = np.concatenate([np.sin(px), np.cos(px), np.sin(py), np.cos(py)], axis=1)
    return jnp.asarray(table, jnp.float32)


def multiplicative_positions(x, p):
    """Multiplicative absolute encoding x_k * p_k (element-wise) instead of x_k + p_k.

    x [..., seq, dim]; p [..., seq, dim] (e.g. from `learned_positions`), broadcast.
    """
    return x * p


def floater_positions(h: Callable, p0, positions, num_steps: int = 16, method: str = "rk4"):
    """FLOATER (Liu et al. 2020, 2003.09229, Sec. 3): p(t) solves dp/dt = h(p, t), p(0) = p0.

    Each position t is integrated independently from 0 to t in `num_steps` equal steps, so positions
    need not be sorted and gradients flow to h's parameters through the solver.

    Args:
      h: callable h(p, t) with p [..., seq, dim] and t [..., seq] -> [..., seq, dim].
      p0: [dim] (or broadcastable [..., seq, dim]) initial value.
      positions: [..., seq] float or integer positions.
      num_steps: fixed steps per position; method: "rk4" (classical Runge-Kutta) or "euler".
    Returns: [..., seq, dim].
    """
    if method not in ("rk4", "euler"):
        raise ValueError(f"method must be 'rk4' or 'euler', got {method!r}")
    if not (isinstance(num_steps, (int, np.integer)) and num_steps >= 1):
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    positions = jnp.asarray(positions, jnp.float32)
    p0 = jnp.asarray(p0, jnp.float32)
    p = jnp.broadcast_to(p0, positions.shape + p0.shape[-1:])
    dt = positions / num_steps
    dtc = dt[..., None]

    def step(n, p):
        t = n * dt
        if method == "euler":
            return p + dtc * h(p, t)
        k1 = h(p, t)
        k2 = h(p + 0.5 * dtc * k1, t + 0.5 * dt)
        k3 = h(p + 0.5 * dtc * k2, t + 0.5 * dt)
        k4 = h(p + dtc * k3, t + dt)
        return p + dtc / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    return jax.lax.fori_loop(0, num_steps, step, p)


def complex_order_embedding(amplitude, frequency, phase, positions):
    """Complex Order (Wang et al. 2020, 1912.12333, Sec. 3): r_j exp(i (omega_j pos + theta_j)).

    amplitude r, frequency omega, phase theta: [..., seq, dim] per-token vectors (or [dim]);
    positions [..., seq]. Returns (real, imag), each [..., seq, dim].
    """
    angle = frequency * jnp.asarray(positions, jnp.float32)[..., None] + phase
    return amplitude * jnp.cos(angle), amplitude * jnp.sin(angle)


# ----------------------------------------------------------------------------- Shaw et al. 2018


def shaw_relative_index(q_len: int, k_len: int, max_distance: int) -> jnp.ndarray:
    """Row of w^K / w^V for each (i, j): clip(j - i, -k, k) + k, int [q_len, k_len].

    Shaw et al. 2018 (1803.02155), Sec. 3.2, k = max_distance.
    """
    if not (isinstance(max_distance, (int, np.integer)) and max_distance >= 0):
        raise ValueError(f"max_distance must be an int >= 0, got {max_distance!r}")
    rel = -_query_key_offsets(q_len, k_len)
    return jnp.asarray(np.clip(rel, -max_distance, max_distance) + max_distance)


def _shaw_table_distance(table) -> int:
    rows = table.shape[0]
    if table.ndim != 2 or rows % 2 == 0:
        raise ValueError(f"table must be [2k+1, head_dim], got shape {table.shape}")
    return (rows - 1) // 2


def shaw_key_logits(q, table_k, k_len: int):
    """Key logit term q_i . a^K_ij (Shaw et al. 2018, Eq. 4), shared across heads.

    q [..., q_len, heads, head_dim]; table_k [2k+1, head_dim] -> [..., heads, q_len, k_len]
    (unscaled: add to q_i . k_j before dividing by sqrt(d)).
    """
    idx = shaw_relative_index(q.shape[-3], k_len, _shaw_table_distance(table_k))
    a = table_k[idx]  # [q, k, d]
    return jnp.einsum("...qhd,qkd->...hqk", q, a)


def shaw_value_term(weights, table_v):
    """Value term sum_j alpha_ij a^V_ij (Shaw et al. 2018, Eq. 3), to add to alpha @ v.

    weights [..., heads, q_len, k_len] (softmax output); table_v [2k+1, head_dim]
    -> [..., q_len, heads, head_dim].
    """
    q_len, k_len = weights.shape[-2:]
    idx = shaw_relative_index(q_len, k_len, _shaw_table_distance(table_v))
    return jnp.einsum("...hqk,qkd->...qhd", weights, table_v[idx])


# ----------------------------------------------------------------------------- Transformer-XL


def transformer_xl_distances(q_len: int, k_len: int) -> jnp.ndarray:
    """Relative distances i - j covered by q_len queries over k_len keys, descending:
    k_len - 1, ..., -(q_len - 1); float32 [q_len + k_len - 1]. Feed them to
    `sinusoidal_positions(..., layout="concat")` to get R, then project by W_{k,R}.
    """
    return jnp.arange(k_len - 1, -q_len, -1, dtype=jnp.float32)


def transformer_xl_logits(q, k, r, u, v, impl: str = "shift"):
    """Terms (b) + (c) + (d) of Transformer-XL's relative score (Dai et al. 2019, 1901.02860,
    Sec. 3.3):

      (b) q_i . r_{i-j},  (c) u . k_j,  (d) v . r_{i-j},   r = W_{k,R} R (projected sinusoid),

    to add to (a) = q_i . k_j. Positions enter the logits only; the values carry none.

    Args:
      q [..., q_len, heads, d]; k [..., k_len, heads, d];
      r [..., q_len + k_len - 1, heads, d]: projected embeddings of `transformer_xl_distances`;
      u, v [heads, d]: the global content and position biases.
      impl: "shift" (the relative-shift reshape trick) or "gather" (explicit index); they agree.
    Returns: [..., heads, q_len, k_len].
    """
    q_len, k_len = q.shape[-3], k.shape[-3]
    if r.shape[-3] != q_len + k_len - 1:
        raise ValueError(f"r must hold q_len + k_len - 1 = {q_len + k_len - 1} distances, "
                         f"got shape {r.shape}")
    if impl not in ("shift", "gather"):
        raise ValueError(f"impl must be 'shift' or 'gather', got {impl!r}")
    content = jnp.einsum("hd,...khd->...hk", u, k)[..., None, :]  # (c)
    # x[..., i, t] = (q_i + v) . r_t with r_t at distance k_len - 1 - t; we need t = q_len-1-i+j.
    x = jnp.einsum("...qhd,...thd->...hqt", q + v, r)
    if impl == "gather":
        idx = jnp.asarray(q_len - 1 - np.arange(q_len)[:, None] + np.arange(k_len)[None, :])
        idx = jnp.broadcast_to(idx, x.shape[:-2] + idx.shape)
        return content + jnp.take_along_axis(x, idx, axis=-1)
    # Shift: with one zero column appended, rows of width W = q_len + k_len, entry (i, q_len-1-i+j)
    # sits at flat index i*(W-1) + j + q_len - 1, so re-reading the flat buffer from q_len - 1 with
    # row stride W - 1 puts it at (i, j).
    w = q_len + k_len
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, 1)])
    flat = x.reshape(x.shape[:-2] + (q_len * w,))
    flat = flat[..., q_len - 1: q_len - 1 + q_len * (w - 1)]
    return content + flat.reshape(x.shape[:-2] + (q_len, w - 1))[..., :k_len]


# ----------------------------------------------------------------------------- T5


def _t5_thresholds(max_exact: int, max_distance: int, num_large: int) -> list[int]:
    """Smallest n with floor(log(n/e)/log(M/e) * K) >= m, m = 1..K-1, in exact integer arithmetic:
    the condition is (n/e)^K >= (M/e)^m, i.e. n^K e^m >= M^m e^K. Exact thresholds make the
    bucketing independent of the backend's float32 log at boundaries such as n = 16, 32, 64."""
    out = []
    for m in range(1, num_large):
        rhs = max_distance**m * max_exact**num_large
        lo, hi = max_exact, max_distance
        while lo < hi:  # smallest n in [e, M] with n^K e^m >= rhs
            mid = (lo + hi) // 2
            if mid**num_large * max_exact**m >= rhs:
                hi = mid
            else:
                lo = mid + 1
        out.append(lo)
    return out


def t5_relative_position_bucket(relative_position, bidirectional: bool = True,
                                num_buckets: int = 32, max_distance: int = 128):
    """T5 / Mesh-TensorFlow relative-position bucket (Raffel et al. 2020, 1910.10683, Sec. 2.1).

    relative_position = key position - query position (j - i), int array. With n = i - j (its
    |.| when bidirectional; when causal, negative n i.e. future keys map to 0): if bidirectional,
    half the buckets go to j > i. Of the remaining B buckets, n < B/2 gets its own bucket; larger n
    get B/2 + floor(log(n / (B/2)) / log(max_distance / (B/2)) * (B - B/2)), capped at B - 1.
    Returns int32 in [0, num_buckets), same shape.
    """
    if not all(isinstance(a, (int, np.integer)) for a in (num_buckets, max_distance)):
        raise ValueError(f"num_buckets and max_distance must be Python ints, got "
                         f"{num_buckets!r}, {max_distance!r}")
    nb = num_buckets // 2 if bidirectional else num_buckets
    max_exact = nb // 2
    if max_exact < 1 or max_distance <= max_exact:
        raise ValueError(f"need num_buckets >= {4 if bidirectional else 2} and max_distance > "
                         f"{max(max_exact, 1)}; got num_buckets={num_buckets}, "
                         f"max_distance={max_distance}")
    n = -jnp.asarray(relative_position).astype(jnp.int32)
    ret = jnp.zeros_like(n)
    if bidirectional:
        ret = jnp.where(n < 0, nb, 0)
        n = jnp.abs(n)
    else:
        n = jnp.maximum(n, 0)
    thresholds = jnp.asarray(_t5_thresholds(max_exact, max_distance, nb - max_exact), jnp.int32)
    large = max_exact + jnp.searchsorted(thresholds, n, side="right").astype(jnp.int32)
    return (ret + jnp.where(n < max_exact, n, large)).astype(jnp.int32)


def t5_bias(table, q_len: int, k_len: int, bidirectional: bool = True, max_distance: int = 128):
    """T5 relative attention bias: table[bucket(j - i)], [heads, q_len, k_len] (unscaled).

    table [num_buckets, heads] (num_buckets read from it); see `t5_relative_position_bucket`.
    """
    rel = jnp.asarray(-_query_key_offsets(q_len, k_len))
    buckets = t5_relative_position_bucket(rel, bidirectional, table.shape[0], max_distance)
    return jnp.moveaxis(table[buckets], -1, 0)


# ----------------------------------------------------------------------------- DeBERTa


def deberta_log_bucket_position(relative_pos, bucket_size: int, max_position: int):
    """DeBERTa-v2 log buckets of a relative position x (He et al. 2021, 2006.03654; the v2 code's
    `make_log_bucket_position`): |x| <= mid = bucket_size // 2 is kept; larger |x| becomes
    sign(x) * (mid + ceil(log(|x| / mid) / log((max_position - 1) / mid) * (mid - 1))).
    Int array in, int32 array of the same shape out.
    """
    mid = bucket_size // 2
    if mid < 2 or max_position - 1 <= mid:
        raise ValueError(f"need bucket_size >= 4 and max_position > bucket_size // 2 + 1; got "
                         f"bucket_size={bucket_size}, max_position={max_position}")
    x = jnp.asarray(relative_pos).astype(jnp.int32)
    a = jnp.maximum(jnp.abs(x), mid).astype(jnp.float32)  # the log branch only sees |x| > mid
    log_pos = jnp.ceil(jnp.log(a / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    return jnp.where(jnp.abs(x) <= mid, x, jnp.sign(x) * log_pos.astype(jnp.int32))


def deberta_relative_positions(q_len: int, k_len: int, bucket_size: int | None = None,
                               max_position: int | None = None):
    """delta = i - j for every (query, key) pair, int32 [q_len, k_len]; log-bucketed when both
    bucket_size and max_position are given (DeBERTa-v2). Matches Hugging Face's
    `build_relative_position` for q_len == k_len; for q_len < k_len the queries are the last
    q_len tokens (module convention) where HF numbers them 0..q_len-1."""
    rel = jnp.asarray(_query_key_offsets(q_len, k_len), jnp.int32)
    if bucket_size is not None and max_position is not None:
        rel = deberta_log_bucket_position(rel, bucket_size, max_position)
    return rel


def _deberta_span(pos_table) -> int:
    if pos_table.ndim != 3 or pos_table.shape[0] % 2:
        raise ValueError(f"position projections must be [2k, heads, head_dim], "
                         f"got {pos_table.shape}")
    return pos_table.shape[0] // 2


def _deberta_index(relative_pos, span: int):
    """Row of the [2k, ...] relative table for relative position i - j: clip(i - j + k, 0, 2k-1)."""
    return jnp.clip(jnp.asarray(relative_pos) + span, 0, 2 * span - 1)


def deberta_c2p(q, pos_k, relative_pos):
    """Content-to-position term Q^c_i . K^r_{delta(i,j)}, delta(i,j) = clip(i - j + k, 0, 2k - 1)
    (He et al. 2021, arXiv 2006.03654, Eqs. 2 and 4; official code `c2p_pos`).

    q [..., q_len, heads, d]; pos_k = P W_{k,r} [2k, heads, d]; relative_pos int [q_len, k_len]
    (i - j, maybe bucketed, from `deberta_relative_positions`) -> [..., heads, q_len, k_len],
    not scaled.
    """
    span = _deberta_span(pos_k)
    return jnp.einsum("...qhd,qkhd->...hqk", q, pos_k[_deberta_index(relative_pos, span)])


def deberta_p2c(k, pos_q, relative_pos):
    """Position-to-content term K^c_j . Q^r_{delta(i,j)}, delta(i,j) = clip(i - j + k, 0, 2k - 1):
    the SAME relative index as content-to-position.

    k [..., k_len, heads, d]; pos_q = P W_{q,r} [2k, heads, d]; relative_pos int [q_len, k_len]
    (i - j, maybe bucketed, from `deberta_relative_positions`) -> [..., heads, q_len, k_len],
    not scaled.

    Sign convention: He et al. 2021 (arXiv 2006.03654), Eq. 4, writes this term as
    K^c_j Q^r_{delta(j,i)}, i.e. index j - i + k read literally. The official code does not:
    microsoft/DeBERTa `DisentangledSelfAttention.disentangled_attention_bias` (Hugging Face
    `DebertaV2`: same name; `Deberta`: `disentangled_att_bias`) forms G = K^c (Q^r)^T
    [k_len, 2k], gathers G[a, clip(-r[a, b] + k)] with r[a, b] = a - b (`p2c_pos`, the key as
    row a) and transposes, so p2c[i, j] = G[j, clip(-(j - i) + k)] = K^c_j . Q^r_{clip(i-j+k)};
    log buckets are odd, -bucket(x) = bucket(-x), so this holds bucketed too. Some versions of
    the official code simply reuse `c2p_pos` for p2c (microsoft/DeBERTa issue #162). Every
    published checkpoint was trained with this index, so we follow the code, not the paper's
    Eq. 4; the two differ whenever i != j. Checked against HF's own numbers
    (tests/fixtures/deberta/).
    """
    span = _deberta_span(pos_q)
    return jnp.einsum("...khd,qkhd->...hqk", k, pos_q[_deberta_index(relative_pos, span)])


def deberta_disentangled_logits(q, k, pos_q, pos_k, bucket_size: int | None = None,
                                max_position: int | None = None):
    """Full disentangled logits (Q^c K^c + c2p + p2c) / sqrt(3 d) (He et al. 2021, Eq. 4, with
    the official code's p2c index i - j + k; see `deberta_p2c`).

    q [..., q_len, heads, d]; k [..., k_len, heads, d]; pos_q, pos_k [2k, heads, d] (the relative
    embeddings P [2k, hidden] projected per head; k = position_buckets for DeBERTa-v2 with log
    buckets, else max_relative_positions). Returns [..., heads, q_len, k_len], already scaled
    (Hugging Face's `DisentangledSelfAttention` scores before masking and softmax).
    """
    rel = deberta_relative_positions(q.shape[-3], k.shape[-3], bucket_size, max_position)
    c2c = jnp.einsum("...qhd,...khd->...hqk", q, k)
    total = c2c + deberta_c2p(q, pos_k, rel) + deberta_p2c(k, pos_q, rel)
    return total / math.sqrt(3 * q.shape[-1])


# ----------------------------------------------------------------------------- BERT


def bert_relative_logits(q, k, table, mode: str = "relative_key"):
    """BERT `relative_key` / `relative_key_query` terms (Hugging Face BertSelfAttention).

    e_ij = table[(i - j) + max_position_embeddings - 1], table [2 * max_position_embeddings - 1, d].
    "relative_key" returns q_i . e_ij; "relative_key_query" returns q_i . e_ij + k_j . e_ij.
    q [..., q_len, heads, d]; k [..., k_len, heads, d] -> [..., heads, q_len, k_len], unscaled
    (Hugging Face adds it to q.k and then divides the sum by sqrt(d)).
    """
    if mode not in ("relative_key", "relative_key_query"):
        raise ValueError(f"mode must be 'relative_key' or 'relative_key_query', got {mode!r}")
    rows = table.shape[0]
    if table.ndim != 2 or rows % 2 == 0:
        raise ValueError(f"table must be [2 * max_position_embeddings - 1, d], got {table.shape}")
    max_pos = (rows + 1) // 2
    q_len, k_len = q.shape[-3], k.shape[-3]
    if max(q_len, k_len) > max_pos:
        raise ValueError(f"sequence length {max(q_len, k_len)} exceeds max_position_embeddings "
                         f"{max_pos} of the table")
    e = table[jnp.asarray(_query_key_offsets(q_len, k_len) + max_pos - 1)]  # [q, k, d]
    out = jnp.einsum("...qhd,qkd->...hqk", q, e)
    if mode == "relative_key_query":
        out = out + jnp.einsum("...khd,qkd->...hqk", k, e)
    return out
