"""The DDPM / Imagen-style U-Net noise predictor, with GLIDE / DALL-E 2 conditioning.

Shapes: images ``x`` are NHWC ``[B, H, W, C]``; timesteps ``t`` ``[B]`` (integer or fractional,
the sampler's convention, see :mod:`jaxzoo.diffusion.samplers`); the output has the shape of ``x``
with ``out_channels`` channels. Optional conditioning, all per sample:

* ``label`` ``[B]`` int in ``[0, num_classes)``: a class embedding added to the time embedding
  (the "null" class ``num_classes`` is what a dropped label becomes).
* ``cond`` ``[B, cond_dim]``: a vector (e.g. a CLIP image embedding) projected and added to the
  time embedding, and, with ``num_cond_tokens > 0``, also projected to that many extra context
  tokens (DALL-E 2, Ramesh et al. 2022, arXiv 2204.06125, Sec. 2.1: "projecting and adding
  CLIP embeddings to the existing timestep embedding, and by projecting CLIP embeddings into
  four extra tokens of context that are concatenated to the sequence of outputs from the GLIDE
  text encoder").
* ``context`` ``[B, L, context_dim]`` with ``context_mask`` ``[B, L]`` (True = a real token):
  text-encoder outputs. Every attention layer projects them to keys and values and
  concatenates those to the image's own keys and values (GLIDE, Nichol et al. 2022, arXiv
  2112.10741, Sec. 2.3 / App. A), so each pixel attends to the pixels and the tokens at once.
* ``context_pooled`` ``[B, context_dim]``: one vector summarising the text (GLIDE: the text
  transformer's final token; Imagen: the pooled frozen embedding) projected and added to the
  time embedding. Dropped together with ``context``.
* ``drop`` ``[B]`` bool: replaces that sample's conditioning by the null conditioning (null
  class, zero vectors, all text tokens masked out) for classifier-free guidance training
  (Ho & Salimans 2022, arXiv 2207.12598, Alg. 1) and for the unconditional half of a guided
  sampler call (:func:`denoiser`). ``drop_cond`` drops only ``cond`` (and its tokens),
  ``drop_context`` only the text (``context`` and ``context_pooled``): DALL-E 2 drops the
  CLIP embedding and the caption independently (Sec. 2.1). A dropped text is the empty
  sequence: no tokens to attend to, a zero pooled vector.
* ``low_res`` ``[B, h, w, C]`` and ``aug_t`` ``[B]`` (``super_res=True``): Imagen's
  super-resolution models (Saharia et al. 2022, arXiv 2205.11487, Sec. 2.4) see the
  low-resolution image, bilinearly resized to ``x``'s size and concatenated to ``x``'s
  channels, and the level ``aug_t`` (in timestep units) of the noise it was augmented with,
  embedded like ``t`` and added to the time embedding. Neither is ever dropped.

Architecture (Ho et al. 2020, arXiv 2006.11239, App. B; the released TF code): a 3x3 stem,
``len(channel_mult)`` levels of ``num_res_blocks`` ResBlocks (GroupNorm, swish, 3x3 conv, time
embedding added, GroupNorm, swish, dropout, 3x3 conv, 1x1 shortcut when widths differ) with
self-attention where the feature map is ``attention_resolutions`` pixels high, stride-2 conv
downsampling between levels, a middle ResBlock-attention-ResBlock, the mirrored decoder with
``num_res_blocks + 1`` ResBlocks per level over skip concatenations and nearest-neighbour +
conv upsampling, then GroupNorm, swish and a zero-initialised 3x3 conv. The time embedding is
sinusoidal (Vaswani et al. 2017 Sec. 3.5, sines then cosines) followed by Dense-swish-Dense to
``4 * channels``. ``scale_shift_norm=True`` switches the embedding injection to the
``GroupNorm(h) * (1 + scale) + shift`` of Nichol & Dhariwal 2021 (arXiv 2102.09672, Sec. 3.6)
used by GLIDE and Imagen; the DDPM default adds it. With the paper settings (128 channels,
multipliers (1, 2, 2, 2), attention at 16x16) the CIFAR-10 model has DDPM's 35.7M parameters.
``skip_scale`` multiplies every skip connection fed to the decoder (Imagen's Efficient U-Net,
App. B.1, scales them by ``1/sqrt(2)``); ``num_res_blocks`` may be a sequence, one count per
level (Efficient U-Net: more blocks at low resolution).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from jaxzoo.core.attention import dot_product_attention
from jaxzoo.core.positional import sinusoidal_positions

__all__ = ["AttentionBlock", "ResBlock", "UNet", "denoiser", "timestep_embedding"]

_zeros = nn.initializers.zeros


def timestep_embedding(t, dim: int, max_period: float = 10000.0):
    """Sinusoidal embedding of (possibly fractional) timesteps: ``t`` ``[B]`` -> ``[B, dim]``,
    sines in the first half and cosines in the second (Vaswani et al. 2017, Sec. 3.5, with
    DDPM's sin/cos concatenation)."""
    return sinusoidal_positions(t, dim, base=max_period, layout="concat")


def _group_norm(channels: int, num_groups: int, name: Optional[str] = None):
    groups = min(num_groups, channels)
    if channels % groups:
        raise ValueError(f"num_groups={num_groups} does not divide the {channels} channels of a "
                         f"GroupNorm; choose channel widths that are multiples of the group count")
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, name=name)


def _upsample_nearest(x):
    """``[B, H, W, C] -> [B, 2H, 2W, C]`` by repetition (a broadcast and a reshape: no gather,
    whose scatter-add gradient is slow on CPU)."""
    b, h, w, c = x.shape
    return jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)


class ResBlock(nn.Module):
    """DDPM residual block; ``emb`` ``[B, E]`` is the time (+ conditioning) embedding."""

    out_channels: int
    dropout: float = 0.0
    num_groups: int = 32
    scale_shift_norm: bool = False

    @nn.compact
    def __call__(self, x, emb, train: bool = False):
        h = nn.swish(_group_norm(x.shape[-1], self.num_groups)(x))
        h = nn.Conv(self.out_channels, (3, 3))(h)
        width = 2 * self.out_channels if self.scale_shift_norm else self.out_channels
        e = nn.Dense(width)(nn.swish(emb))[:, None, None, :]
        norm = _group_norm(self.out_channels, self.num_groups)
        if self.scale_shift_norm:
            scale, shift = jnp.split(e, 2, axis=-1)
            h = nn.swish(norm(h) * (1.0 + scale) + shift)
        else:
            h = nn.swish(norm(h + e))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Conv(self.out_channels, (3, 3), kernel_init=_zeros)(h)
        if x.shape[-1] != self.out_channels:
            x = nn.Dense(self.out_channels, name="shortcut")(x)  # DDPM's "nin_shortcut"
        return x + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H * W`` pixels, residual, zero-initialised output.

    With ``context`` ``[B, L, D]`` (and ``context_mask`` ``[B, L]``), the tokens are projected
    to extra keys and values that every pixel can attend to (GLIDE's ``encoder_kv``).
    """

    num_heads: int = 1
    num_groups: int = 32

    @nn.compact
    def __call__(self, x, context=None, context_mask=None):
        b, h, w, c = x.shape
        if c % self.num_heads:
            raise ValueError(f"num_heads={self.num_heads} does not divide {c} channels")
        d = c // self.num_heads
        y = _group_norm(c, self.num_groups)(x).reshape(b, h * w, c)
        q, k, v = jnp.split(nn.Dense(3 * c, name="qkv")(y), 3, axis=-1)
        mask = None
        if context is not None:
            ck, cv = jnp.split(nn.Dense(2 * c, name="context_kv")(context), 2, axis=-1)
            k, v = jnp.concatenate([k, ck], 1), jnp.concatenate([v, cv], 1)
            if context_mask is not None:
                pixels = jnp.ones((b, h * w), bool)
                mask = jnp.concatenate([pixels, context_mask.astype(bool)], 1)[:, None, None, :]
        heads = lambda a: a.reshape(b, a.shape[1], self.num_heads, d)
        out = dot_product_attention(heads(q), heads(k), heads(v), mask=mask)
        out = nn.Dense(c, kernel_init=_zeros, name="proj_out")(out.reshape(b, h * w, c))
        return x + out.reshape(b, h, w, c)


class UNet(nn.Module):
    """Noise-prediction U-Net; see the module docstring for the architecture and conditioning.

    Attributes:
      out_channels: output channels (= image channels for eps / x0 / v prediction).
      channels: base width; level ``i`` has ``channels * channel_mult[i]`` channels.
      channel_mult: width multiplier per resolution level (one stride-2 halving between levels).
      num_res_blocks: ResBlocks per level in the encoder (the decoder has one more).
      attention_resolutions: feature-map heights (e.g. ``(16,)``) that get self-attention.
      num_heads: attention heads (DDPM: 1).
      dropout: dropout rate inside the ResBlocks (active only with ``train=True``).
      num_groups: GroupNorm groups (capped at the channel count).
      scale_shift_norm: FiLM-style embedding injection (improved DDPM / GLIDE / Imagen).
      num_classes: > 0 enables ``label`` conditioning (an embedding of ``num_classes + 1``
        rows; the last one is the null class).
      cond_dim: > 0 enables the ``cond`` vector (projected, added to the time embedding).
      num_cond_tokens: > 0 also projects ``cond`` to that many context tokens (DALL-E 2: 4).
      context_dim: > 0 enables ``context`` tokens (cross-attention in every attention layer)
        and the ``context_pooled`` vector.
      super_res: the model takes ``low_res`` and ``aug_t`` (Imagen's super-resolution stages).
      skip_scale: factor on the skip connections (Imagen: ``1/sqrt(2)``).
    """

    out_channels: int
    channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: Union[int, Sequence[int]] = 2
    attention_resolutions: Sequence[int] = (16,)
    num_heads: int = 1
    dropout: float = 0.0
    num_groups: int = 32
    scale_shift_norm: bool = False
    num_classes: int = 0
    cond_dim: int = 0
    num_cond_tokens: int = 0
    context_dim: int = 0
    super_res: bool = False
    skip_scale: float = 1.0

    def _conditioning(self, batch, label, cond, context, context_mask, context_pooled, drop,
                      drop_cond, drop_context):
        """Embedding added to the time embedding ``[B, E]`` (or 0) and the context tokens."""
        emb_dim = 4 * self.channels
        extra = jnp.zeros((batch, emb_dim))
        flag = lambda d: jnp.zeros((batch,), bool) if d is None else jnp.asarray(d, bool)  # noqa: E731
        keep = ~flag(drop)
        keep_cond, keep_text = keep & ~flag(drop_cond), keep & ~flag(drop_context)
        if self.num_classes > 0:
            label = (jnp.full((batch,), self.num_classes, jnp.int32) if label is None
                     else jnp.asarray(label, jnp.int32))
            label = jnp.where(keep, label, self.num_classes)
            extra = extra + nn.Embed(self.num_classes + 1, emb_dim, name="class_embed")(label)
        elif label is not None:
            raise ValueError("label given but num_classes=0: the model is not class-conditional")
        tokens, token_mask = None, None
        if self.context_dim > 0:
            if context is None:  # unconditional: no text tokens (parameters still created)
                context = jnp.zeros((batch, 0, self.context_dim))
            if context.ndim != 3 or context.shape[-1] != self.context_dim:
                raise ValueError(f"context must be [B, L, {self.context_dim}]; got {context.shape}")
            token_mask = (jnp.ones(context.shape[:2], bool) if context_mask is None
                          else jnp.asarray(context_mask, bool)) & keep_text[:, None]
            tokens = context
            if context_pooled is not None:
                if context_pooled.shape != (batch, self.context_dim):
                    raise ValueError(f"context_pooled must be [B, {self.context_dim}] = "
                                     f"[{batch}, {self.context_dim}]; got {context_pooled.shape}")
                pooled = jnp.where(keep_text[:, None], context_pooled, 0.0)
                extra = extra + nn.Dense(emb_dim, name="pooled_proj")(pooled)
        elif context is not None or context_pooled is not None:
            raise ValueError("context given but context_dim=0: the model has no cross-attention")
        if self.cond_dim > 0:
            cond = jnp.zeros((batch, self.cond_dim)) if cond is None else jnp.asarray(cond)
            if cond.shape != (batch, self.cond_dim):
                raise ValueError(f"cond must be [B, {self.cond_dim}] = [{batch}, {self.cond_dim}]; "
                                 f"got {cond.shape}")
            cond = jnp.where(keep_cond[:, None], cond, 0.0)
            extra = extra + nn.Dense(emb_dim, name="cond_proj")(cond)
            if self.num_cond_tokens > 0:
                if self.context_dim <= 0:
                    raise ValueError("num_cond_tokens > 0 needs context_dim > 0 (the token width)")
                extra_tokens = nn.Dense(self.num_cond_tokens * self.context_dim,
                                        name="cond_tokens")(cond)
                extra_tokens = extra_tokens.reshape(batch, self.num_cond_tokens, self.context_dim)
                tokens = jnp.concatenate([tokens, extra_tokens], axis=1)
                token_mask = jnp.concatenate(
                    [token_mask, jnp.ones((batch, self.num_cond_tokens), bool)], axis=1)
        elif cond is not None:
            raise ValueError("cond given but cond_dim=0: the model takes no conditioning vector")
        if tokens is not None:
            tokens = nn.LayerNorm(name="context_norm")(tokens)
        return extra, tokens, token_mask

    @nn.compact
    def __call__(self, x, t, *, label=None, cond=None, context=None, context_mask=None,
                 context_pooled=None, low_res=None, aug_t=None, drop=None, drop_cond=None,
                 drop_context=None, train: bool = False):
        """``x`` ``[B, H, W, C]``, ``t`` ``[B]`` (or scalar) -> ``[B, H, W, out_channels]``."""
        if x.ndim != 4:
            raise ValueError(f"x must be [B, H, W, C]; got shape {x.shape}")
        b, height, width, _ = x.shape
        levels = len(self.channel_mult)
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise ValueError(f"image size {height}x{width} must be divisible by "
                             f"2^(len(channel_mult) - 1) = {2 ** (levels - 1)}")
        t = jnp.broadcast_to(jnp.asarray(t), (b,))
        emb = timestep_embedding(t, self.channels)
        emb = nn.Dense(4 * self.channels)(nn.swish(nn.Dense(4 * self.channels)(emb)))
        extra, tokens, token_mask = self._conditioning(b, label, cond, context, context_mask,
                                                       context_pooled, drop, drop_cond, drop_context)
        emb = emb + extra
        if self.super_res:
            if low_res is None or aug_t is None:
                raise ValueError("super_res=True needs low_res [B, h, w, C] and aug_t [B]")
            aug = timestep_embedding(jnp.broadcast_to(jnp.asarray(aug_t), (b,)), self.channels)
            emb = emb + nn.Dense(4 * self.channels, name="aug_embed")(aug)
            up = jax.image.resize(low_res, (b, height, width, low_res.shape[-1]), "bilinear")
            x = jnp.concatenate([x, up.astype(x.dtype)], axis=-1)
        elif low_res is not None or aug_t is not None:
            raise ValueError("low_res / aug_t given but super_res=False")
        blocks = self.num_res_blocks
        blocks = (blocks,) * levels if isinstance(blocks, int) else tuple(blocks)
        if len(blocks) != levels:
            raise ValueError(f"num_res_blocks={self.num_res_blocks} needs one count per level of "
                             f"channel_mult={tuple(self.channel_mult)}")

        res = lambda ch: ResBlock(ch, self.dropout, self.num_groups, self.scale_shift_norm)
        attn = lambda: AttentionBlock(self.num_heads, self.num_groups)
        h = nn.Conv(self.channels, (3, 3), name="stem")(x)
        skips = [h]
        for level, mult in enumerate(self.channel_mult):
            for _ in range(blocks[level]):
                h = res(self.channels * mult)(h, emb, train)
                if h.shape[1] in self.attention_resolutions:
                    h = attn()(h, tokens, token_mask)
                skips.append(h)
            if level != levels - 1:
                h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2), name=f"down_{level}")(h)
                skips.append(h)
        h = res(h.shape[-1])(h, emb, train)
        h = attn()(h, tokens, token_mask)
        h = res(h.shape[-1])(h, emb, train)
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for _ in range(blocks[level] + 1):
                skip = skips.pop() * self.skip_scale
                h = res(self.channels * mult)(jnp.concatenate([h, skip], -1), emb, train)
                if h.shape[1] in self.attention_resolutions:
                    h = attn()(h, tokens, token_mask)
            if level != 0:
                h = nn.Conv(h.shape[-1], (3, 3), name=f"up_{level}")(_upsample_nearest(h))
        h = nn.swish(_group_norm(h.shape[-1], self.num_groups, name="norm_out")(h))
        return nn.Conv(self.out_channels, (3, 3), kernel_init=_zeros, name="head")(h)


@dataclasses.dataclass(frozen=True)
class _Apply:
    """Hashable ``(params, conditioning, x, t) -> out`` for :class:`~jax.tree_util.Partial`:
    equal models give equal callables, so the sampler's jit cache is reused."""

    model: nn.Module
    guided: bool

    def __call__(self, params, conditioning, x, t):
        if not self.guided:
            return self.model.apply(params, x, t, **conditioning)
        b = x.shape[0]
        twice = lambda a: jnp.concatenate([a, a], 0)  # noqa: E731
        doubled = {k: twice(v) for k, v in conditioning.items()}
        drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((b,), bool)])
        out = self.model.apply(params, twice(x), twice(t), drop=drop, **doubled)
        return out[:b], out[b:]


def denoiser(model: nn.Module, params: Any, *, guided: bool = False, **conditioning) -> Partial:
    """The model as the samplers' ``denoise_fn(x, t)`` (evaluation mode, no dropout).

    ``model`` is a :class:`UNet` or any module called as ``model(x, t, drop=..., **conditioning)``
    (the text-conditioned wrappers of GLIDE, Imagen and DALL-E 2); conditioning arrays (e.g.
    ``label``, ``cond``, ``context``, ``context_mask``, ``tokens``; None values are left out)
    have the batch size of ``x``. Unguided: returns ``model(x, t, **conditioning)``.
    ``guided=True``: one network call on the doubled batch returns the pair
    ``(conditional, unconditional)`` that :func:`jaxzoo.diffusion.samplers.sample` combines
    with its ``guidance_scale``; the second half is called with ``drop=True``. The result is a
    ``jax.tree_util.Partial`` whose leaves are ``params`` and the conditioning, so calling the
    sampler again with new parameters or conditioning of the same shapes does not recompile.
    """
    conditioning = {k: v for k, v in conditioning.items() if v is not None}
    return Partial(_Apply(model, bool(guided)), params, conditioning)
