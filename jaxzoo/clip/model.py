"""CLIP (Radford et al. 2021, arXiv 2103.00020): an image tower and a text tower whose pooled
features are linearly projected into one embedding space and L2-normalised.

`CLIP(vision=ViT(...) or ConvNet(...), text=TextTransformer(...), embed_dim=E)` (any image tower
returning (pooled [B, D], features)):
  encode_image(images [B, H, W, C]) -> unit image embeddings [B, E]
  encode_text(tokens int [N, T])    -> unit text embeddings [N, E]
  __call__(tokens, images) -> {"logits_per_image" [B, N], "logits_per_text" [N, B],
      "image_embeds", "text_embeds", "logit_scale" (t), "logit_bias" (b)}
logits = t * cos(image, text) + b (Fig. 3's `np.dot(I_e, T_e.T) * np.exp(t)`, t clipped at
`max_scale` = 100 as in Sec. 2.5; b = 0 for the softmax loss, SigLIP's learnable bias for the
sigmoid loss). The temperature is stored as log t, initialised to log(1/0.07) for the softmax
loss (CLIP Sec. 2.5) and log(10) with b = -10 for the sigmoid loss (Zhai et al. 2023, arXiv
2303.15343, Sec. 3.2 / Eq. 1).
Parameter names match `jaxzoo.clip.hf`'s mapping of Hugging Face `CLIPModel` checkpoints.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax.numpy as jnp

from jaxzoo.nn.towers import TextTransformer

LOSSES = ("softmax", "sigmoid")


def l2_normalize(x, eps: float = 1e-12):
    """x / ||x|| over the last axis (x [..., E]); rows of zeros stay zero."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class CLIP(nn.Module):
    vision: nn.Module  # images [B, H, W, C] -> (pooled [B, D], features): ViT, ConvNet
    text: TextTransformer
    embed_dim: int = 512
    loss: str = "softmax"  # softmax (CLIP) | sigmoid (SigLIP): sets the temperature's init and the bias
    max_scale: float = 100.0  # CLIP clips t at 100 (Sec. 2.5)
    bias_init: float = -10.0  # SigLIP's b at the start (Sec. 3.2; about -log(batch) suits a batch)

    def setup(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; allowed: {LOSSES}")
        init_scale = math.log(1 / 0.07) if self.loss == "softmax" else math.log(10.0)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(init_scale), ())
        if self.loss == "sigmoid":
            self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.bias_init), ())
        self.visual_projection = nn.Dense(self.embed_dim, use_bias=False, name="visual_projection")
        self.text_projection = nn.Dense(self.embed_dim, use_bias=False, name="text_projection")

    def encode_image(self, images, deterministic: bool = True):
        pooled, _ = self.vision(images, deterministic=deterministic)
        return l2_normalize(self.visual_projection(pooled))

    def encode_text(self, tokens, deterministic: bool = True):
        pooled, _ = self.text(tokens, deterministic=deterministic)
        return l2_normalize(self.text_projection(pooled))

    def scale_and_bias(self):
        """(t = min(exp(log t), max_scale), b): what multiplies the cosines and what is added
        (0 for softmax). Past the clip t gets no gradient, as when CLIP clips the parameter."""
        bias = self.logit_bias if self.loss == "sigmoid" else jnp.zeros(())
        return jnp.minimum(jnp.exp(self.logit_scale), self.max_scale), bias

    def __call__(self, tokens, images, deterministic: bool = True):
        image_embeds = self.encode_image(images, deterministic)
        text_embeds = self.encode_text(tokens, deterministic)
        scale, bias = self.scale_and_bias()
        logits = scale * image_embeds @ text_embeds.T + bias
        return {"logits_per_image": logits, "logits_per_text": logits.T,
                "image_embeds": image_embeds, "text_embeds": text_embeds,
                "logit_scale": scale, "logit_bias": bias}
