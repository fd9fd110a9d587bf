"""Pure functions for sampling from a language model's next-token logits.

Shapes: logits [..., V] (any leading batch axes); tokens int.
Filters return logits with the excluded entries set to -inf, so they compose:
`top_p_filter(top_k_filter(logits / temperature, k), p)` is the usual order (Hugging Face's
`TopKLogitsWarper` then `TopPLogitsWarper`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["top_k_filter", "top_p_filter", "sample_logits", "stop_match", "shift_in"]


def top_k_filter(logits, k: int):
    """Keeps the k largest logits of each row (ties at the k-th value are all kept).

    k <= 0 or k >= V keeps everything (no filtering).
    """
    v = logits.shape[-1]
    if not isinstance(k, int):
        raise ValueError(f"top_k must be a Python int, got {k!r}")
    if k <= 0 or k >= v:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits, p: float):
    """Nucleus filter (Holtzman et al. 2020, arXiv 1904.09751, Eq. 2-3).

    With the tokens sorted by probability, descending, keeps the smallest prefix V^(p) whose total
    probability is at least p: token i of the sorted order is kept iff the mass of the tokens
    before it is < p (so the most likely token is always kept). p >= 1 keeps everything.
    """
    if not 0.0 < p:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    if p >= 1.0:
        return logits
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits.astype(jnp.float32), axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = mass_before < p
    inverse = jnp.argsort(order, axis=-1)
    keep = jnp.take_along_axis(keep_sorted, inverse, axis=-1)
    return jnp.where(keep, logits, -jnp.inf)


def sample_logits(key, logits, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """One token per row of logits [..., V] -> int32 [...].

    temperature 0 is greedy (argmax); otherwise logits / temperature, then top-k, then top-p, then
    a categorical draw.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    logits = top_p_filter(top_k_filter(logits, top_k), top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def shift_in(tail, token):
    """Drops the oldest entry of `tail` [..., W] and appends `token` [...]: a rolling window of the
    last W generated tokens."""
    return jnp.concatenate([tail[..., 1:], token[..., None].astype(tail.dtype)], axis=-1)


def stop_match(tail, stop_sequences) -> tuple[jax.Array, jax.Array]:
    """Whether the window `tail` [..., W] of the latest tokens ends with any stop sequence.

    stop_sequences: a sequence of non-empty int sequences, each of length <= W (static).
    Returns (matched bool [...], length int32 [...] of the matched sequence, 0 if none; the first
    listed sequence wins when several match).
    """
    w = tail.shape[-1]
    matched = jnp.zeros(tail.shape[:-1], bool)
    length = jnp.zeros(tail.shape[:-1], jnp.int32)
    for seq in reversed(list(stop_sequences)):
        seq = list(seq)
        if not seq or len(seq) > w:
            raise ValueError(f"stop sequence {seq} must be non-empty and at most {w} tokens")
        hit = jnp.all(tail[..., w - len(seq):] == jnp.asarray(seq, tail.dtype), axis=-1)
        matched = matched | hit
        length = jnp.where(hit, len(seq), length)
    return matched, length
