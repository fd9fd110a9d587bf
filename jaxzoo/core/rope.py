"""Rotary position embedding (RoPE), its context-extension frequency tables, logn and ReRoPE.

Conventions (shared with `jaxzoo.core.positional`):
  q, k, v     [..., seq, heads, head_dim]
  positions   [..., seq], integer or float token positions (they broadcast against q's leading axes)
  inv_freq    [rotary_dim // 2]: the angular frequency theta_i of rotated pair i; pair i of a
              token at position m is turned by the angle m * inv_freq[i]. rotary_dim <= head_dim;
              the trailing head_dim - rotary_dim features pass through unrotated (GPT-NeoX
              "partial rotary").
  scores      [..., heads, q_len, k_len]
  Queries and keys of one sequence: query i sits at absolute position i + (k_len - q_len), key j
  at j (the queries are the last q_len tokens, as in self-attention with a KV cache).

Two memory layouts of the rotated pairs (RoFormer, 2104.09864, Eq. 34 in either case):
  rotate-half (GPT-NeoX / Llama, `interleaved=False`): pair i is (x[i], x[i + rotary_dim/2]);
  interleaved (GPT-J / RoFormer, `interleaved=True`): pair i is (x[2i], x[2i+1]).
They differ only by a fixed permutation of the feature axis, so scores agree when q and k share one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

# Keys each `rope_type` requires / may carry (Hugging Face `rope_parameters` naming). "rope_theta"
# and "original_max_position_embeddings" are accepted everywhere: published configs carry them.
_COMMON_KEYS = frozenset({"rope_type", "type", "rope_theta", "original_max_position_embeddings"})
_ROPE_KEYS = {
    "default": (frozenset(), frozenset({"factor"})),
    "linear": (frozenset({"factor"}), frozenset()),
    "ntk": (frozenset({"factor"}), frozenset()),
    "dynamic": (frozenset({"factor", "original_max_position_embeddings"}), frozenset()),
    "yarn": (
        frozenset({"factor", "original_max_position_embeddings"}),
        frozenset({"beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor",
                   "truncate"}),
    ),
    "llama3": (
        frozenset({"factor", "original_max_position_embeddings", "low_freq_factor",
                   "high_freq_factor"}),
        frozenset(),
    ),
}


def _default_inv_freq(head_dim: int, base) -> jnp.ndarray:
    """theta_i = base^(-2i/d), i = 0 .. d/2-1 (RoFormer Eq. 15); float64 maths for a static base."""
    if isinstance(base, (int, float)):
        return jnp.asarray(1.0 / base ** (np.arange(0, head_dim, 2) / head_dim), jnp.float32)
    exponent = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    return 1.0 / jnp.asarray(base, jnp.float32) ** exponent


def _check_scaling(scaling: Mapping[str, Any], base: float) -> str:
    rope_type = scaling.get("rope_type", scaling.get("type"))
    if rope_type not in _ROPE_KEYS:
        raise ValueError(f"scaling['rope_type']={rope_type!r} is not one of {sorted(_ROPE_KEYS)}")
    required, optional = _ROPE_KEYS[rope_type]
    missing = sorted(required - set(scaling))
    if missing:
        raise ValueError(f"rope_type {rope_type!r} needs key(s) {missing}; got {sorted(scaling)}")
    unknown = sorted(set(scaling) - required - optional - _COMMON_KEYS)
    if unknown:
        raise ValueError(f"rope_type {rope_type!r} does not take key(s) {unknown}; allowed: "
                         f"{sorted(required | optional | _COMMON_KEYS)}")
    if "rope_theta" in scaling and float(scaling["rope_theta"]) != float(base):
        raise ValueError(f"scaling['rope_theta']={scaling['rope_theta']} disagrees with "
                         f"base={base}; pass the same value (or drop the key)")
    factor = scaling.get("factor", 1.0)
    if not factor > 0:
        raise ValueError(f"scaling['factor'] must be > 0, got {factor}")
    return rope_type


def rope_frequencies(head_dim: int, base: float = 10000.0,
                     scaling: Mapping[str, Any] | None = None,
                     seq_len=None) -> tuple[jnp.ndarray, float]:
    """RoPE frequency table, optionally rescaled for context extension.

    Args:
      head_dim: number of rotated features d (even); for partial rotary pass the rotary dim.
      base: the RoPE base b (`rope_theta`).
      scaling: None, or a dict in the Hugging Face `rope_parameters` convention with "rope_type" in
        {"default", "linear", "ntk", "dynamic", "yarn", "llama3"} ("type" is read as an alias):
        * linear: positional interpolation, theta_i / s (Chen et al. 2023, 2306.15595, Eq. 4).
        * ntk: NTK-aware scaled RoPE (bloc97, 2023): base' = b * s^(d/(d-2)).
        * dynamic: dynamic NTK, base' = b * (s*n/L - (s-1))^(d/(d-2)) when n = seq_len > L, else
          the default table (as Hugging Face `_compute_dynamic_ntk_parameters`). `seq_len` may be
          a traced scalar; None means n <= L. Note s = 1 still rescales once n > L (base' =
          b (n/L)^(d/(d-2))); every other type returns the default table at s = 1.
        * yarn: YaRN (Peng et al. 2023, 2309.00071, Eqs. 17-22): the "NTK-by-parts" ramp over pairs,
          bounded by the pair indices where the training length L holds beta_fast / beta_slow full
          turns (floored / ceiled unless truncate=False), blends theta_i (extrapolation) and
          theta_i/s (interpolation); attention factor 0.1 ln(s) + 1, or `attention_factor`, or
          the DeepSeek ratio from `mscale` / `mscale_all_dim`.
        * llama3: the Llama 3.1 rule: wavelengths 2 pi/theta_i shorter than L/high_freq_factor
          kept, longer than L/low_freq_factor divided by s, smooth blend in between.
        s = "factor", L = "original_max_position_embeddings".
      seq_len: current sequence length n (used by "dynamic" only).

    Returns:
      inv_freq [head_dim // 2] float32, and attention_scale: a float by which the rotated q and k
      are each multiplied (so logits scale by its square), as Hugging Face scales cos and sin.
    Raises ValueError for an odd head_dim, an unknown rope_type, or a missing / unknown key.
    """
    if not (isinstance(head_dim, (int, np.integer)) and head_dim >= 2 and head_dim % 2 == 0):
        raise ValueError(f"head_dim must be a positive even int, got {head_dim!r}")
    if not base > 1:
        raise ValueError(f"base must be > 1, got {base}")
    d = int(head_dim)
    if scaling is None:
        return _default_inv_freq(d, base), 1.0
    rope_type = _check_scaling(scaling, base)
    s = float(scaling.get("factor", 1.0))
    if rope_type == "default":
        return _default_inv_freq(d, base), 1.0
    if rope_type == "linear":
        return _default_inv_freq(d, base) / s, 1.0
    if rope_type in ("ntk", "dynamic") and d == 2:
        raise ValueError(f"rope_type {rope_type!r} needs head_dim > 2 (exponent d/(d-2)), got 2")
    if rope_type == "ntk":
        return _default_inv_freq(d, base * s ** (d / (d - 2))), 1.0
    big_l = float(scaling["original_max_position_embeddings"])
    if rope_type == "dynamic":
        if seq_len is None:
            return _default_inv_freq(d, base), 1.0
        if isinstance(seq_len, (int, float, np.integer, np.floating)):
            n = max(float(seq_len), big_l)
            return _default_inv_freq(d, base * (s * n / big_l - (s - 1)) ** (d / (d - 2))), 1.0
        n = jnp.maximum(jnp.asarray(seq_len, jnp.float32), big_l)
        return _default_inv_freq(d, base * (s * n / big_l - (s - 1)) ** (d / (d - 2))), 1.0
    if rope_type == "yarn":
        return _yarn(d, base, s, big_l, scaling)
    return _llama3(d, base, s, big_l, scaling)


def _yarn(d: int, base: float, s: float, big_l: float, cfg: Mapping[str, Any]):
    """YaRN table (2309.00071 Sec. 3.2-3.4): NTK-by-parts ramp + attention temperature."""

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if cfg.get("attention_factor") is not None:
        attn = float(cfg["attention_factor"])
    elif cfg.get("mscale") and cfg.get("mscale_all_dim"):
        attn = mscale(s, cfg["mscale"]) / mscale(s, cfg["mscale_all_dim"])
    else:
        attn = mscale(s)  # sqrt(1/t) = 0.1 ln s + 1, Sec. 3.4
    beta_fast = float(cfg.get("beta_fast") or 32.0)
    beta_slow = float(cfg.get("beta_slow") or 1.0)

    # Pair index i at which the training length L holds `turns` full rotations:
    # L / (2 pi b^(2i/d)) = turns.
    def pair_index(turns):
        return d * math.log(big_l / (turns * 2 * math.pi)) / (2 * math.log(base))

    low, high = pair_index(beta_fast), pair_index(beta_slow)
    if cfg.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 1e-3  # avoid 0/0 in the ramp
    ramp = np.clip((np.arange(d // 2) - low) / (high - low), 0.0, 1.0)  # ramp gamma, Sec. 3.2
    theta = 1.0 / base ** (np.arange(0, d, 2) / d)
    inv_freq = theta / s * ramp + theta * (1.0 - ramp)  # NTK-by-parts h(theta_d), Sec. 3.2
    return jnp.asarray(inv_freq, jnp.float32), float(attn)


def _llama3(d: int, base: float, s: float, big_l: float, cfg: Mapping[str, Any]):
    """Llama 3.1 frequency rule: keep high frequencies, divide low ones by s, blend the middle."""
    lo, hi = float(cfg["low_freq_factor"]), float(cfg["high_freq_factor"])
    if not hi > lo:
        raise ValueError(f"high_freq_factor ({hi}) must exceed low_freq_factor ({lo})")
    theta = 1.0 / base ** (np.arange(0, d, 2) / d)
    wavelen = 2 * math.pi / theta
    smooth = np.clip((big_l / wavelen - lo) / (hi - lo), 0.0, 1.0)  # 1: keep, 0: interpolate
    inv_freq = smooth * theta + (1.0 - smooth) * theta / s
    return jnp.asarray(inv_freq, jnp.float32), 1.0


def apply_rope(x, positions, inv_freq, interleaved: bool = False):
    """Rotates each feature pair of x by position * inv_freq (RoFormer, 2104.09864, Eq. 34).

    Args:
      x: [..., seq, heads, head_dim] queries or keys.
      positions: [..., seq] integer or float positions.
      inv_freq: [rotary_dim // 2] from `rope_frequencies`; rotary_dim <= head_dim.
      interleaved: False for rotate-half pairs (i, i + rotary_dim/2), True for pairs (2i, 2i+1).
    Returns:
      [..., seq, heads, head_dim] with x's dtype; the maths runs in at least float32.
    """
    inv_freq = jnp.asarray(inv_freq)
    if inv_freq.ndim != 1:
        raise ValueError(f"inv_freq must be 1-D [rotary_dim // 2], got shape {inv_freq.shape}")
    rot = 2 * inv_freq.shape[0]
    if x.ndim < 3 or rot > x.shape[-1]:
        raise ValueError(f"x must be [..., seq, heads, head_dim] with head_dim >= {rot} "
                         f"(2 * len(inv_freq)), got shape {x.shape}")
    dtype = jnp.result_type(x.dtype, jnp.float32)
    angle = jnp.asarray(positions, dtype)[..., None] * inv_freq.astype(dtype)  # [..., seq, rot/2]
    cos, sin = jnp.cos(angle)[..., None, :], jnp.sin(angle)[..., None, :]  # [..., seq, 1, rot/2]
    xr = x[..., :rot].astype(dtype)
    if interleaved:
        x1, x2 = xr[..., 0::2], xr[..., 1::2]
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        out = out.reshape(out.shape[:-2] + (rot,))
    else:
        x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    out = out.astype(x.dtype)
    if rot == x.shape[-1]:
        return out
    rest = jnp.broadcast_to(x[..., rot:], out.shape[:-1] + (x.shape[-1] - rot,))
    return jnp.concatenate([out, rest], axis=-1)


def logn_scale(n, train_len: int):
    """logn attention scaling (Su, 2021): factor max(1, log(n) / log(L_train)) for the queries.

    Args:
      n: number of tokens attended to, scalar or array (e.g. [..., seq]); for causal per-query
        scaling pass `positions + 1`, the count of keys query i sees.
      train_len: training context length L_train > 1.
    Returns: float32 array with n's shape, equal to 1 for n <= L_train.
    """
    if not train_len > 1:
        raise ValueError(f"train_len must be > 1, got {train_len}")
    n = jnp.maximum(jnp.asarray(n, jnp.float32), 1.0)
    return jnp.maximum(1.0, jnp.log(n) / math.log(train_len))


def rerope_attention(q, k, v, inv_freq, window: int, causal: bool = True, scale=None,
                     interleaved: bool = False):
    """ReRoPE (Su, 2023, "Rectified Rotary Position Embeddings"), two-pass reference attention.

    The effective relative position of query i (absolute position i + k_len - q_len) and key j is
    r = i - j when |i - j| < window and the constant `window` otherwise. Pass 1 scores RoPE(q, i) .
    RoPE(k, j) (relative i - j); pass 2 scores RoPE(q, window) . k (relative `window`); each entry
    takes the pass its |i - j| selects. With causal=False keys beyond the window on either side get
    relative position +window, as specified. Plain softmax, no fused kernel.

    Args:
      q: [..., q_len, heads, head_dim]; k: [..., k_len, heads, head_dim] with k_len >= q_len;
      v: [..., k_len, heads, v_dim]; inv_freq: [rotary_dim // 2]; window: w >= 1;
      scale: logit scale, default 1/sqrt(head_dim).
    Returns: [..., q_len, heads, v_dim].
    """
    if not (isinstance(window, (int, np.integer)) and window >= 1):
        raise ValueError(f"window must be an int >= 1, got {window!r}")
    q_len, k_len = q.shape[-3], k.shape[-3]
    if k_len < q_len:
        raise ValueError(f"k_len ({k_len}) must be >= q_len ({q_len})")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    q_pos = jnp.arange(q_len) + (k_len - q_len)
    k_pos = jnp.arange(k_len)
    s1 = jnp.einsum("...qhd,...khd->...hqk", apply_rope(q, q_pos, inv_freq, interleaved),
                    apply_rope(k, k_pos, inv_freq, interleaved))
    q_w = apply_rope(q, jnp.full((q_len,), window), inv_freq, interleaved)
    s2 = jnp.einsum("...qhd,...khd->...hqk", q_w, k)
    rel = q_pos[:, None] - k_pos[None, :]
    scores = jnp.where(jnp.abs(rel) < window, s1, s2) * scale
    if causal:
        scores = jnp.where(rel >= 0, scores, jnp.finfo(scores.dtype).min)
    probs = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    probs = probs / jnp.sum(probs, axis=-1, keepdims=True)
    return jnp.einsum("...hqk,...khd->...qhd", probs, v.astype(probs.dtype)).astype(v.dtype)
