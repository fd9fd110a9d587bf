"""GLIDE's text-conditioned U-Net (Nichol et al. 2022, arXiv 2112.10741, Sec. 2.3-2.4 and App. A):
a text transformer trained with the diffusion model, whose outputs condition the U-Net twice.

`TextUNet(text=TextTransformer(...), unet=UNet(context_dim=text.width, ...))`:
  __call__(x [B, H, W, C], t [B], *, tokens int [B, L], drop=None, drop_context=None,
           cond=None, drop_cond=None, train=False) -> [B, H, W, out_channels]
* the transformer's output at the final token (the causal tower pools at the end-of-text token)
  is projected and added to the timestep embedding (the U-Net's ``context_pooled``);
* every token's output is projected to keys and values concatenated to those of each U-Net
  attention layer (``context`` with ``context_mask`` = the non-padding tokens).
A dropped caption (``drop`` or ``drop_context``; GLIDE drops 20% for classifier-free guidance,
Sec. 2.3) is the empty sequence: no tokens to attend to and a zero pooled vector, exactly the
U-Net's null text. ``cond`` passes a vector such as DALL-E 2's CLIP image embedding through to
the U-Net (its decoder is this model with ``cond_dim`` and four ``num_cond_tokens``, Sec. 2.1).
Called through :func:`jaxzoo.diffusion.unet.denoiser` (``tokens=...``) it plugs into the samplers.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxzoo.diffusion.unet import UNet
from jaxzoo.nn.towers import TextTransformer

__all__ = ["TextUNet"]


class TextUNet(nn.Module):
    text: TextTransformer  # causal, pool="eos", pad_id >= 0
    unet: UNet  # context_dim == text.width

    @nn.compact
    def __call__(self, x, t, *, tokens, cond=None, drop=None, drop_cond=None, drop_context=None,
                 train: bool = False):
        if self.unet.context_dim != self.text.width:
            raise ValueError(f"unet.context_dim={self.unet.context_dim} must equal the text "
                             f"width {self.text.width}")
        tokens = jnp.asarray(tokens)
        pooled, features = self.text(tokens, deterministic=not train)
        mask = tokens != self.text.pad_id if self.text.pad_id >= 0 else None
        return self.unet(x, t, cond=cond, context=features, context_mask=mask,
                         context_pooled=pooled, drop=drop, drop_cond=drop_cond,
                         drop_context=drop_context, train=train)
