"""Decoder-only transformer (GPT-1/2) with the positional scheme chosen by config.

Architecture: token embedding (+ absolute positions when `position` is "learned" or
"sinusoidal"), `num_layers` pre-LayerNorm blocks (GPT-2, Radford et al. 2019, Sec. 2.3:
LayerNorm moved to each sub-block's input, a final LayerNorm after the last block, residual
projections initialised with std 0.02 / sqrt(2 * num_layers)) of causal multi-head attention and
a GELU MLP of width `d_ff`, and an output layer tied to the token embedding.

Positional schemes (`GPTConfig.position`), all from `jaxzoo.core.positional` / `jaxzoo.core.rope`:
  "learned"     trainable table [max_len, d_model] added to the embeddings (GPT-1/2). Positions
                never trained keep their initial values; positions >= max_len are an error.
  "sinusoidal"  fixed sinusoids (Vaswani et al. 2017, Sec. 3.5) added to the token embeddings,
                which are multiplied by sqrt(d_model) as in Sec. 3.4 (otherwise the unit-amplitude
                sinusoids swamp the 0.02-scale embeddings).
  "rope"        RoPE on q and k in every layer (RoFormer, Eq. 34), with an optional Hugging Face
                style `rope_scaling` dict (PI, NTK, dynamic NTK, YaRN, Llama 3), logn query
                scaling (`logn_train_len` > 0) and ReRoPE (`rerope_window` > 0). None of these
                change the parameters, so a model trained with plain RoPE can be evaluated with
                any of them by `dataclasses.replace`-ing its config.
  "t5"          causal bucketed relative bias (Raffel et al. 2020, Sec. 2.1), one table
                [num_buckets, heads] shared by all layers as in T5.
  "none"        no positional information besides the causal mask (NoPE).

Shapes: tokens int [B, T]; logits float32 [B, T, vocab_size]. A KV cache (`init_cache`) is a list
with one `jaxzoo.core.attention` cache dict per layer; calling the model with one returns
(logits, new_cache) and places the T new tokens after the cached ones. The cache holds rotated
keys, so with dynamic NTK each key keeps the frequencies of the length at which it was written
(as in Hugging Face); a full forward pass uses one table for all positions.

`generate` samples continuations with a KV cache in one `lax.scan` (temperature, top-k, nucleus
and stop sequences, from `jaxzoo.core.decoding`). GPT-1's task input transforms are in
`jaxzoo.lm.tasks`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxzoo.core import attention as attn, decoding, positional as pos_lib, rope as rope_lib
from jaxzoo.nn.transformer import Block, residual_std

__all__ = ["GPT", "GPTConfig", "Generation", "POSITIONS", "generate", "init_cache", "lm_loss",
           "num_parameters"]

POSITIONS = ("learned", "sinusoidal", "rope", "t5", "none")


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Model shape and positional scheme; hashable (a dict `rope_scaling` is stored as a tuple).

    GPT-2 small is `GPTConfig(vocab_size=50257, num_layers=12, num_heads=12, d_model=768,
    max_len=1024, position="learned")` (124M parameters with tied embeddings).
    """

    vocab_size: int = 257
    num_layers: int = 4
    num_heads: int = 4
    d_model: int = 128
    d_ff: int = 0  # 0: 4 * d_model
    num_kv_heads: int = 0  # 0: num_heads (multi-head); fewer: grouped-query attention
    max_len: int = 1024  # rows of the "learned" table; cache length limit for it
    position: str = "rope"
    rope_base: float = 10000.0
    rope_scaling: Any = None  # None or a Hugging Face `rope_parameters` dict
    rope_interleaved: bool = False
    logn_train_len: int = 0  # > 1: scale query m by max(1, log(m + 1) / log(logn_train_len))
    rerope_window: int = 0  # > 0: ReRoPE with this window (full forward passes only)
    t5_num_buckets: int = 32
    t5_max_distance: int = 128
    dropout: float = 0.0
    attention_impl: str = "xla"
    block_size: int = 512
    dtype: Any = jnp.float32  # activation dtype; parameters stay float32

    def __post_init__(self):
        if isinstance(self.rope_scaling, Mapping):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        if self.position not in POSITIONS:
            raise ValueError(f"position={self.position!r}; allowed: {POSITIONS}")
        if self.d_model % self.num_heads or (self.d_model // self.num_heads) % 2:
            raise ValueError(f"d_model={self.d_model} must split into num_heads={self.num_heads} "
                             "heads of even size")
        if self.kv_heads < 1 or self.num_heads % self.kv_heads:
            raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads="
                             f"{self.num_heads}")
        if self.attention_impl not in attn.IMPLS:
            raise ValueError(f"attention_impl={self.attention_impl!r}; allowed: {attn.IMPLS}")
        if self.position != "rope" and (self.rope_scaling or self.logn_train_len
                                        or self.rerope_window):
            raise ValueError("rope_scaling, logn_train_len and rerope_window need position='rope',"
                             f" got position={self.position!r}")
        if self.logn_train_len == 1 or self.logn_train_len < 0:
            raise ValueError(f"logn_train_len must be 0 (off) or > 1, got {self.logn_train_len}")
        if self.rerope_window < 0:
            raise ValueError(f"rerope_window must be >= 0, got {self.rerope_window}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def scaling_dict(self) -> Optional[dict]:
        return None if self.rope_scaling is None else dict(self.rope_scaling)

    def replace(self, **changes) -> "GPTConfig":
        return dataclasses.replace(self, **changes)


def init_cache(config: GPTConfig, batch: int, max_len: int, dtype=jnp.float32) -> list:
    """An empty KV cache for `max_len` tokens (prompt + generated), one dict per layer."""
    if config.position == "learned" and max_len > config.max_len:
        raise ValueError(f"cache max_len={max_len} exceeds the learned position table "
                         f"(max_len={config.max_len})")
    return [attn.init_kv_cache(batch, max_len, config.kv_heads, config.head_dim, dtype)
            for _ in range(config.num_layers)]


def lm_loss(logits, targets, weights=None):
    """Mean next-token cross-entropy in nats: logits [..., V], integer targets [...], optional
    weights [...] (e.g. 0 on padding). Returns (loss, accuracy) scalars."""
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    if weights is None:
        return jnp.mean(nll), jnp.mean(correct)
    w = weights.astype(jnp.float32)
    total = jnp.maximum(jnp.sum(w), 1.0)
    return jnp.sum(nll * w) / total, jnp.sum(correct * w) / total


_init = nn.initializers.normal(0.02)


def _position_hooks(c: GPTConfig, positions, total_len: int):
    """The (rotate, attend) hooks of `jaxzoo.nn.transformer.Attention` for c's positional
    scheme: RoPE with its scalings on q and k, logn on q, ReRoPE's two-pass attention."""
    if c.position != "rope":
        return None, None
    inv_freq, scale = rope_lib.rope_frequencies(c.head_dim, c.rope_base, c.scaling_dict,
                                                seq_len=total_len)

    def rotate(q, k):
        if scale != 1.0:  # YaRN: scale q and k, so the logits scale by its square
            q, k = q * scale, k * scale
        if c.logn_train_len:  # Su (2021): query m sees m + 1 keys
            q = q * rope_lib.logn_scale(positions + 1, c.logn_train_len)[..., None, None].astype(q.dtype)
        if c.rerope_window:  # ReRoPE rotates inside its own attention
            return q, k
        return (rope_lib.apply_rope(q, positions, inv_freq, c.rope_interleaved),
                rope_lib.apply_rope(k, positions, inv_freq, c.rope_interleaved))

    def rerope(q, k, v):
        groups = c.num_heads // c.kv_heads
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        return rope_lib.rerope_attention(q, k, v, inv_freq, c.rerope_window, causal=True,
                                         interleaved=c.rope_interleaved)

    return rotate, (rerope if c.rerope_window else None)


class GPT(nn.Module):
    """`GPT(config).apply(params, tokens)` -> logits [B, T, V]; with `cache=` -> (logits, cache).

    `hidden_states` returns the final-LayerNorm features [B, T, d_model] instead of logits (what
    GPT-1's task heads read at the extract token). Dropout needs `deterministic=False` and a
    "dropout" rng.
    """

    config: GPTConfig

    def setup(self):
        c = self.config
        self.embed = nn.Embed(c.vocab_size, c.d_model, embedding_init=_init, name="wte")
        if c.position == "learned":
            self.wpe = self.param("wpe", nn.initializers.normal(0.01), (c.max_len, c.d_model))
        if c.position == "t5":
            self.t5_table = self.param("t5_bias", nn.initializers.zeros,
                                       (c.t5_num_buckets, c.num_heads))
        self.blocks = [Block(num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, ff_dim=c.ff_dim,
                             activation="gelu", out_std=residual_std(c.num_layers),
                             dropout=c.dropout, impl=c.attention_impl, block_size=c.block_size,
                             dtype=c.dtype, name=f"h_{i}") for i in range(c.num_layers)]
        self.ln_f = nn.LayerNorm(dtype=c.dtype, name="ln_f")
        self.drop = nn.Dropout(c.dropout)

    def hidden_states(self, tokens, cache=None, deterministic: bool = True):
        c = self.config
        tokens = jnp.asarray(tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, seq], got shape {tokens.shape}")
        t = tokens.shape[1]
        if cache is not None and len(cache) != c.num_layers:
            raise ValueError(f"cache has {len(cache)} layers, the model {c.num_layers}")
        start = 0 if cache is None else cache[0]["length"]
        positions = start + jnp.arange(t)  # [T]
        total_len = t if cache is None else start + t
        if c.position == "learned" and cache is None and t > c.max_len:
            raise ValueError(f"sequence length {t} exceeds the learned position table "
                             f"(max_len={c.max_len})")
        x = self.embed(tokens).astype(c.dtype)
        if c.position == "sinusoidal":  # Vaswani et al. Sec. 3.4: embeddings times sqrt(d_model)
            x = x * math.sqrt(c.d_model)
        if c.position == "learned":
            x = x + pos_lib.learned_positions(self.wpe, positions).astype(c.dtype)
        elif c.position == "sinusoidal":
            x = x + pos_lib.sinusoidal_positions(positions, c.d_model).astype(c.dtype)
        bias = None
        if c.position == "t5":
            k_len = t if cache is None else cache[0]["k"].shape[-3]
            rel = jnp.arange(k_len)[None, :] - positions[:, None]  # key - query, [T, K]
            buckets = pos_lib.t5_relative_position_bucket(rel, False, c.t5_num_buckets,
                                                          c.t5_max_distance)
            bias = jnp.moveaxis(self.t5_table[buckets], -1, 0)  # [heads, T, K]
        x = self.drop(x, deterministic=deterministic)
        if c.rerope_window and cache is not None:
            raise ValueError("ReRoPE (rerope_window > 0) supports full forward passes only, not "
                             "KV-cache decoding")
        rotate, attend = _position_hooks(c, positions, total_len)
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, bias=bias, causal=True, rotate=rotate, attend=attend,
                                   cache=None if cache is None else cache[i],
                                   deterministic=deterministic)
            new_cache.append(layer_cache)
        h = self.ln_f(x)
        return h if cache is None else (h, new_cache)

    def __call__(self, tokens, cache=None, deterministic: bool = True):
        out = self.hidden_states(tokens, cache, deterministic)
        h, new_cache = (out, None) if cache is None else out
        logits = self.embed.attend(h.astype(jnp.float32))
        return logits if cache is None else (logits, new_cache)


def num_parameters(config: GPTConfig) -> int:
    """Parameter count from shapes alone (no initialisation)."""
    shapes = jax.eval_shape(lambda: GPT(config).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes))


# ----------------------------------------------------------------------------- sampling


class Generation(NamedTuple):
    tokens: jax.Array  # int32 [B, max_new_tokens]; pad_id from the stop sequence on
    lengths: jax.Array  # int32 [B]: tokens generated before the stop sequence (all if none)
    stopped: jax.Array  # bool [B]: a stop sequence was generated


def generate(config: GPTConfig, params, prompt, key, max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             stop_sequences: Sequence[Sequence[int]] = (), pad_id: int = 0) -> Generation:
    """Samples `max_new_tokens` continuations of `prompt` int [B, P] (all rows of equal length).

    The prompt fills a KV cache of P + max_new_tokens entries in one forward pass; each new token
    is then drawn with `decoding.sample_logits` (temperature 0 = greedy; top-k, then nucleus
    top-p) and fed back, all inside one jitted `lax.scan`. Generation for a row ends at the first
    stop sequence (e.g. `[[EOT]]`, or the bytes of a blank line): that sequence and everything
    after it become `pad_id`. Step i draws with `fold_in(key, i)`, so a call is reproducible from
    its key.
    """
    prompt = jnp.asarray(prompt, jnp.int32)
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be int [batch, length >= 1], got shape {prompt.shape}")
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    stops = tuple(tuple(int(t) for t in s) for s in stop_sequences)
    if any(not s for s in stops):
        raise ValueError(f"stop sequences must be non-empty, got {stop_sequences!r}")
    return _generate(config, params, prompt, key, max_new_tokens, float(temperature), int(top_k),
                     float(top_p), stops, int(pad_id))


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8, 9))
def _generate(config, params, prompt, key, n, temperature, top_k, top_p, stops, pad_id):
    model = GPT(config)
    b, p = prompt.shape
    logits, cache = model.apply(params, prompt, cache=init_cache(config, b, p + n))
    width = max((len(s) for s in stops), default=1)

    def step(carry, i):
        logits, cache, tail, done, length = carry
        tok = decoding.sample_logits(jax.random.fold_in(key, i), logits, temperature, top_k, top_p)
        tail = decoding.shift_in(tail, tok)
        if stops:
            hit, hit_len = decoding.stop_match(tail, stops)
        else:
            hit, hit_len = jnp.zeros((b,), bool), jnp.zeros((b,), jnp.int32)
        length = jnp.where(hit & ~done, i + 1 - hit_len, length)
        out = jnp.where(done, pad_id, tok)
        done = done | hit
        next_logits, cache = model.apply(params, tok[:, None], cache=cache)
        return (next_logits[:, -1], cache, tail, done, length), out

    init = (logits[:, -1], cache, jnp.full((b, width), -1, jnp.int32), jnp.zeros((b,), bool),
            jnp.full((b,), n, jnp.int32))
    (_, _, _, done, length), toks = jax.lax.scan(step, init, jnp.arange(n))
    toks = toks.T
    toks = jnp.where(jnp.arange(n)[None, :] < length[:, None], toks, pad_id)
    return Generation(toks, length, done)
