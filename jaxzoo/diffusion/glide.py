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
Called through :func:`jaxzoo.diffusion.unet.denoiser` (``tokens=...``) it plugs into the samplers;
a sampler can instead encode the caption once (:meth:`TextUNet.encode_text`) and pass its outputs
(``text_pooled``, ``text_features``, ``text_mask``), so the text transformer does not run again at
every step.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxzoo.diffusion.unet import UNet
from jaxzoo.nn.towers import TextTransformer

__all__ = ["TextUNet", "encode_captions"]


class TextUNet(nn.Module):
    text: TextTransformer  # causal, pool="eos", pad_id >= 0
    unet: UNet  # context_dim == text.width

    def encode_text(self, tokens, train: bool = False) -> dict:
        """``tokens`` ``[B, L]`` -> ``text_pooled`` ``[B, W]``, ``text_features`` ``[B, L, W]``
        and ``text_mask`` ``[B, L]`` (the non-padding tokens), what :meth:`__call__` accepts."""
        tokens = jnp.asarray(tokens)
        pooled, features = self.text(tokens, deterministic=not train)
        mask = tokens != self.text.pad_id if self.text.pad_id >= 0 else jnp.ones(tokens.shape, bool)
        return {"text_pooled": pooled, "text_features": features, "text_mask": mask}

    def __call__(self, x, t, *, tokens=None, text_pooled=None, text_features=None, text_mask=None,
                 cond=None, drop=None, drop_cond=None, drop_context=None, train: bool = False):
        if self.unet.context_dim != self.text.width:
            raise ValueError(f"unet.context_dim={self.unet.context_dim} must equal the text "
                             f"width {self.text.width}")
        if tokens is not None:
            encoded = self.encode_text(tokens, train)
            text_pooled, text_features, text_mask = (encoded[k] for k in ("text_pooled",
                                                                          "text_features", "text_mask"))
        elif text_pooled is None or text_features is None:
            raise ValueError("pass tokens, or text_pooled and text_features from encode_text")
        return self.unet(x, t, cond=cond, context=text_features, context_mask=text_mask,
                         context_pooled=text_pooled, drop=drop, drop_cond=drop_cond,
                         drop_context=drop_context, train=train)


def encode_captions(model: TextUNet, params, tokens, batch_size: int = 256) -> dict:
    """:meth:`TextUNet.encode_text` of ``tokens`` ``[N, L]`` in batches, as NumPy arrays: the
    conditioning a sampler passes at every step instead of the tokens."""
    fn = jax.jit(lambda p, tok: model.apply(p, tok, method=TextUNet.encode_text))
    parts = [fn(params, jnp.asarray(tokens[i:i + batch_size])) for i in range(0, len(tokens), batch_size)]
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}
