"""The pre-LayerNorm transformer block every transformer in jaxzoo is built from (GPT, the ViT and
text towers of CLIP and the vision-language models).

Shapes: x [B, T, d_model]; attention heads [B, T, heads, head_dim]. A block computes
    x + Attention(LN_1(x)), then x + MLP(LN_2(x))
(pre-LN: GPT-2, Radford et al. 2019, Sec. 2.3; ViT, Dosovitskiy et al. 2021, Eq. 2-3; CLIP).
Parameter names (`ln_1`, `attn/{query,key,value,out}`, `ln_2`, `fc`, `proj`) are the same for
every model, so one importer layout maps published weights onto any of them.

Attention takes, besides padding/causal masks and an additive bias (T5, ALiBi-style), two hooks
that carry positional schemes without the block knowing them: `rotate(q, k) -> (q, k)` (RoPE and
its scalings; applied before a KV cache is updated) and `attend(q, k, v) -> out`, which replaces
the dot-product attention (ReRoPE's two-pass attention). Cross-attention reads keys and values
from `context` [B, S, d_context] instead of x.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxzoo.core import attention as attn

__all__ = ["ACTIVATIONS", "Attention", "Block", "padding_mask"]


def _quick_gelu(x):
    """x * sigmoid(1.702 x): the GELU approximation of OpenAI's CLIP."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": nn.gelu,  # tanh approximation, GPT-2's "gelu_new"
    "gelu_exact": functools.partial(nn.gelu, approximate=False),  # BERT, ViT
    "quick_gelu": _quick_gelu,  # CLIP
    "relu": nn.relu,
}


def padding_mask(valid):
    """Boolean key mask [B, 1, 1, K] (True = attend) from `valid` [B, K] (True = a real token)."""
    return jnp.asarray(valid, bool)[:, None, None, :]


class Attention(nn.Module):
    """Multi-head (or grouped-query) attention with Dense q/k/v/out projections.

    Attributes:
      num_heads, head_dim: query heads and their width; num_kv_heads 0 = num_heads.
      out_std: init std of the output projection (GPT-2 scales it by 1/sqrt(2 num_layers)).
      dropout: on the output; impl, block_size: `jaxzoo.core.attention` implementation.
    """

    num_heads: int
    head_dim: int
    num_kv_heads: int = 0
    out_std: float = 0.02
    dropout: float = 0.0
    impl: str = "xla"
    block_size: int = 512
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, context=None, bias=None, mask=None, causal: bool = False,
                 cache=None, rotate: Optional[Callable] = None, attend: Optional[Callable] = None,
                 deterministic: bool = True):
        """x [B, T, d_model] -> ([B, T, d_model], cache). `mask`/`bias` broadcast to
        [B, heads, T, K]; `cache` is a `jaxzoo.core.attention` KV cache (self-attention only)."""
        b, t, d_model = x.shape
        kv_heads = self.num_kv_heads or self.num_heads
        dense = lambda n, name: nn.Dense(n, dtype=self.dtype, name=name,  # noqa: E731
                                         kernel_init=nn.initializers.normal(0.02))
        source = x if context is None else context
        s = source.shape[1]
        q = dense(self.num_heads * self.head_dim, "query")(x).reshape(b, t, self.num_heads, self.head_dim)
        k = dense(kv_heads * self.head_dim, "key")(source).reshape(b, s, kv_heads, self.head_dim)
        v = dense(kv_heads * self.head_dim, "value")(source).reshape(b, s, kv_heads, self.head_dim)
        if rotate is not None:
            q, k = rotate(q, k)
        if attend is not None:
            if cache is not None:
                raise ValueError("a custom attend function supports full forward passes only, not "
                                 "KV-cache decoding")
            out = attend(q, k, v)
        elif cache is None:
            out = attn.dot_product_attention(q, k, v, bias, mask, causal=causal, impl=self.impl,
                                             block_size=self.block_size)
        else:
            cache = attn.update_kv_cache(cache, k, v)
            out = attn.cached_attention(q, cache, bias, causal=causal, impl=self.impl,
                                        block_size=self.block_size)
        out = nn.Dense(d_model, dtype=self.dtype, name="out",
                       kernel_init=nn.initializers.normal(self.out_std))(
            out.reshape(b, t, self.num_heads * self.head_dim))
        return nn.Dropout(self.dropout)(out, deterministic=deterministic), cache


class Block(nn.Module):
    """Pre-LN transformer block: x + Attention(LN(x)) [+ cross-attention] + MLP(LN(x)).

    Attributes:
      num_heads, num_kv_heads: attention heads (head_dim = d_model // num_heads).
      ff_dim: MLP width (0: 4 d_model); activation: a key of ACTIVATIONS.
      out_std: init std of both residual projections; ln_eps: LayerNorm epsilon.
      cross_attention: add a cross-attention sub-layer (`ln_x`, `xattn`) reading `context`.
    `__call__(x, ...)` takes the Attention keywords and returns (x, cache).
    """

    num_heads: int
    num_kv_heads: int = 0
    ff_dim: int = 0
    activation: str = "gelu"
    out_std: float = 0.02
    ln_eps: float = 1e-6
    dropout: float = 0.0
    impl: str = "xla"
    block_size: int = 512
    cross_attention: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, context=None, context_mask=None, bias=None, mask=None,
                 causal: bool = False, cache=None, rotate=None, attend=None,
                 deterministic: bool = True):
        d_model = x.shape[-1]
        if d_model % self.num_heads:
            raise ValueError(f"d_model={d_model} is not a multiple of num_heads={self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; allowed: {tuple(ACTIVATIONS)}")
        head_dim = d_model // self.num_heads
        layer_norm = lambda name: nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name=name)  # noqa: E731
        attention = functools.partial(Attention, num_heads=self.num_heads, head_dim=head_dim,
                                      out_std=self.out_std, dropout=self.dropout, impl=self.impl,
                                      block_size=self.block_size, dtype=self.dtype)
        a, cache = attention(num_kv_heads=self.num_kv_heads, name="attn")(
            layer_norm("ln_1")(x), bias=bias, mask=mask, causal=causal, cache=cache,
            rotate=rotate, attend=attend, deterministic=deterministic)
        x = x + a
        if self.cross_attention:
            c, _ = attention(name="xattn")(layer_norm("ln_x")(x), context=context,
                                           mask=None if context_mask is None else padding_mask(context_mask),
                                           deterministic=deterministic)
            x = x + c
        h = layer_norm("ln_2")(x)
        h = ACTIVATIONS[self.activation](
            nn.Dense(self.ff_dim or 4 * d_model, dtype=self.dtype, name="fc",
                     kernel_init=nn.initializers.normal(0.02))(h))
        h = nn.Dense(d_model, dtype=self.dtype, name="proj",
                     kernel_init=nn.initializers.normal(self.out_std))(h)
        return x + nn.Dropout(self.dropout)(h, deterministic=deterministic), cache


def residual_std(num_layers: int) -> float:
    """GPT-2's init std of residual projections, 0.02 / sqrt(2 num_layers) (Sec. 2.3)."""
    return 0.02 / math.sqrt(2 * num_layers)
