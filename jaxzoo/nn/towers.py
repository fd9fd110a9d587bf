"""The two encoders of image-text models, built on `jaxzoo.nn.transformer.Block`.

`ViT` (Dosovitskiy et al. 2021, arXiv 2010.11929, Eq. 1-4): non-overlapping P x P patches of an
NHWC image [B, H, W, C] are linearly embedded (a stride-P convolution), a class token is
prepended (`pool="cls"`), positions are added (learned 1-D table or fixed 2-D sin-cos), optionally
normalised first (`pre_norm`, CLIP's ln_pre), run through pre-LN blocks and normalised
(`ln_post`). Pooling: the class token, the mean of the patch tokens, or multihead attention
pooling with a learned probe (`"map"`, SigLIP / big_vision's MAPHead). Returns
(pooled [B, width], tokens [B, N (+1), width]); N = (H / P)(W / P).

`ConvNet`: a plain convolutional image tower (VGG-style, Simonyan & Zisserman 2015, Sec. 2.1):
stages of `convs` 3x3 convolutions with ReLU, each stage ending in a 2x2 max-pool, then the
global mean of the last feature map. Returns (pooled [B, widths[-1]], features [B, H / 2^S,
W / 2^S, widths[-1]]) for S stages. CLIP trained convolutional image towers beside its ViTs
(ResNets, Radford et al. 2021, Sec. 2.4); on ShapeWorld this one learns shapes in about a
thousand steps, where the small ViT of experiments/configs/clip.py (half its cost per step)
read only colours after 2,500.

`TextTransformer`: token embedding plus a learned position table, `causal` (CLIP, Radford et al.
2021, Sec. 2.4) or bidirectional blocks, a final LayerNorm, and pooling at the first end-of-text
token (`pool="eos"`, CLIP), at position 0 (`"first"`, a class token the tokenizer put there) or
the mean over real tokens. Padding (`pad_id`) is masked out of attention. Returns
(pooled [B, width], tokens [B, T, width]).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxzoo.core.positional import sincos_2d_positions
from jaxzoo.nn.transformer import ACTIVATIONS, Attention, Block, padding_mask

__all__ = ["ConvNet", "MAPHead", "TEXT_POOLS", "TextTransformer", "VIT_POOLS", "ViT"]

VIT_POOLS = ("cls", "mean", "map")
TEXT_POOLS = ("eos", "first", "mean")


def _check(pool: str, allowed) -> None:
    if pool not in allowed:
        raise ValueError(f"pool={pool!r}; allowed: {allowed}")


class _Encoder(nn.Module):
    """`depth` blocks of `Block`, named `block_<i>`."""

    depth: int
    num_heads: int
    mlp_dim: int = 0
    activation: str = "gelu_exact"
    ln_eps: float = 1e-6
    dropout: float = 0.0
    impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, mask=None, causal=False, deterministic=True):
        for i in range(self.depth):
            x, _ = Block(num_heads=self.num_heads, ff_dim=self.mlp_dim, activation=self.activation,
                         ln_eps=self.ln_eps, dropout=self.dropout, impl=self.impl, dtype=self.dtype,
                         name=f"block_{i}")(x, mask=mask, causal=causal, deterministic=deterministic)
        return x


class ViT(nn.Module):
    """Vision transformer: images [B, H, W, C] -> (pooled [B, width], tokens [B, N (+1), width])."""

    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 0  # 0: 4 * width
    pool: str = "cls"  # cls | mean | map
    position: str = "learned"  # learned | sincos2d
    pre_norm: bool = False  # a LayerNorm on the embeddings (CLIP)
    patch_bias: bool = True  # CLIP's patch embedding has none
    stem: str = "patch"  # patch | conv (Xiao et al. 2021: stride-2 3x3 convolutions, then 1x1)
    activation: str = "gelu_exact"
    ln_eps: float = 1e-6
    dropout: float = 0.0
    impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, deterministic: bool = True):
        _check(self.pool, VIT_POOLS)
        if self.position not in ("learned", "sincos2d"):
            raise ValueError(f"position={self.position!r}; allowed: ('learned', 'sincos2d')")
        b, h, w, _ = images.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not a multiple of patch_size={p}")
        if self.stem == "patch":
            x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", use_bias=self.patch_bias,
                        dtype=self.dtype, name="patch_embed")(images.astype(self.dtype))
        elif self.stem == "conv":
            x = self._conv_stem(images.astype(self.dtype))
        else:
            raise ValueError(f"stem={self.stem!r}; allowed: ('patch', 'conv')")
        x = x.reshape(b, (h // p) * (w // p), self.width)
        if self.pool == "cls":
            cls = self.param("cls", nn.initializers.normal(0.02), (self.width,))
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.width)), x], 1)
        if self.position == "learned":
            pos = self.param("pos_embed", nn.initializers.normal(0.02), x.shape[1:])
        else:
            pos = sincos_2d_positions(h // p, w // p, self.width)
            if self.pool == "cls":  # the class token gets no position (MoCo v3)
                pos = jnp.concatenate([jnp.zeros((1, self.width)), pos])
        x = x + pos.astype(x.dtype)
        if self.pre_norm:
            x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="ln_pre")(x)
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        x = _Encoder(self.depth, self.num_heads, self.mlp_dim, self.activation, self.ln_eps,
                     self.dropout, self.impl, self.dtype, name="encoder")(x, deterministic=deterministic)
        x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="ln_post")(x)
        if self.pool == "cls":
            return x[:, 0], x
        if self.pool == "mean":
            return jnp.mean(x, axis=1), x
        return MAPHead(self.num_heads, self.mlp_dim, self.activation, self.ln_eps, self.dtype,
                       name="map_head")(x), x


    def _conv_stem(self, x):
        """Early convolutions (Xiao et al. 2021, arXiv 2106.14881): log2(P) stride-2 3x3 convs
        with ReLU, widths doubling up to `width`, then a 1x1 conv: one token per P x P patch."""
        p = self.patch_size
        if p & (p - 1):
            raise ValueError(f"stem='conv' needs a power-of-two patch_size, got {p}")
        steps = p.bit_length() - 1
        for i in range(steps):
            features = max(self.width >> (steps - i), 8)
            x = nn.relu(nn.Conv(features, (3, 3), strides=(2, 2), padding="SAME", dtype=self.dtype,
                                name=f"stem_{i}")(x))
        return nn.Conv(self.width, (1, 1), dtype=self.dtype, name="patch_embed")(x)


class ConvNet(nn.Module):
    """Convolutional tower: images [B, H, W, C] -> (pooled [B, widths[-1]], features)."""

    widths: tuple = (32, 64, 128)  # one stage per width
    convs: int = 2  # 3x3 convolutions per stage
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, deterministic: bool = True):
        del deterministic  # no dropout
        _, h, w, _ = images.shape
        if not self.widths or self.convs < 1:
            raise ValueError(f"widths={self.widths}, convs={self.convs}: need a stage and a conv")
        if h % 2 ** len(self.widths) or w % 2 ** len(self.widths):
            raise ValueError(f"image size {h}x{w} is not a multiple of 2^{len(self.widths)} "
                             f"({len(self.widths)} max-pooling stages)")
        x = images.astype(self.dtype)
        for i, features in enumerate(self.widths):
            for j in range(self.convs):
                x = nn.relu(nn.Conv(features, (3, 3), padding="SAME", dtype=self.dtype,
                                    name=f"conv_{i}_{j}")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return jnp.mean(x, axis=(1, 2)), x


class MAPHead(nn.Module):
    """Multihead attention pooling (Lee et al. 2019's PMA; SigLIP's head): a learned probe
    attends to the tokens, then a residual MLP. tokens [B, N, D] -> [B, D]."""

    num_heads: int
    mlp_dim: int = 0
    activation: str = "gelu_exact"
    ln_eps: float = 1e-6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens):
        b, _, d = tokens.shape
        probe = self.param("probe", nn.initializers.normal(0.02), (1, 1, d))
        x, _ = Attention(self.num_heads, d // self.num_heads, dtype=self.dtype, name="attn")(
            jnp.broadcast_to(probe.astype(tokens.dtype), (b, 1, d)), context=tokens)
        h = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="ln")(x)
        h = ACTIVATIONS[self.activation](nn.Dense(self.mlp_dim or 4 * d, dtype=self.dtype, name="fc")(h))
        return (x + nn.Dense(d, dtype=self.dtype, name="proj")(h))[:, 0]


class TextTransformer(nn.Module):
    """Text tower: tokens int [B, T] -> (pooled [B, width], tokens [B, T, width])."""

    vocab_size: int
    max_len: int = 77
    width: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_dim: int = 0
    causal: bool = True
    pool: str = "eos"  # eos | first | mean
    eos_id: int = -1  # pool="eos": the end-of-text id (pooled at its first occurrence)
    pad_id: int = -1  # >= 0: this id is padding, masked out of attention and mean pooling
    activation: str = "gelu_exact"
    ln_eps: float = 1e-6
    dropout: float = 0.0
    impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, deterministic: bool = True):
        _check(self.pool, TEXT_POOLS)
        tokens = jnp.asarray(tokens)
        b, t = tokens.shape
        if t > self.max_len:
            raise ValueError(f"{t} tokens exceed the position table (max_len={self.max_len})")
        if self.pool == "eos" and self.eos_id < 0:
            raise ValueError("pool='eos' needs eos_id >= 0")
        x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                     dtype=self.dtype, name="token_embed")(tokens)
        pos = self.param("pos_embed", nn.initializers.normal(0.01), (self.max_len, self.width))
        x = nn.Dropout(self.dropout)(x + pos[:t].astype(x.dtype), deterministic=deterministic)
        valid = tokens != self.pad_id if self.pad_id >= 0 else jnp.ones((b, t), bool)
        x = _Encoder(self.depth, self.num_heads, self.mlp_dim, self.activation, self.ln_eps,
                     self.dropout, self.impl, self.dtype, name="encoder")(
            x, mask=padding_mask(valid) if self.pad_id >= 0 else None, causal=self.causal,
            deterministic=deterministic)
        x = nn.LayerNorm(epsilon=self.ln_eps, dtype=self.dtype, name="ln_final")(x)
        if self.pool == "eos":
            index = jnp.argmax(tokens == self.eos_id, axis=1)  # the first eos (0 if none)
            return x[jnp.arange(b), index], x
        if self.pool == "first":
            return x[:, 0], x
        w = valid[..., None].astype(x.dtype)
        return jnp.sum(x * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0), x
