"""DALL-E 2's diffusion prior: a causal transformer that denoises CLIP image embeddings given text.

Ramesh et al. 2022 (arXiv 2204.06125), Sec. 2.1: "we train a decoder-only Transformer with a causal
attention mask on a sequence consisting of, in order: the encoded text, the CLIP text embedding, an
embedding for the diffusion timestep, the noised CLIP image embedding, and a final embedding whose
output from the Transformer is used to predict the unnoised CLIP image embedding", trained with a
mean-squared error on that x0 prediction instead of DDPM's eps objective.

Shapes: ``B`` batch, ``E = embed_dim`` the CLIP embedding width, ``L`` text tokens of width ``D``
(the frozen text encoder's token features), ``W = width`` the transformer width.

* ``x_t`` ``[B, E]``: the noised CLIP image embedding (VP coordinates of
  :mod:`jaxzoo.diffusion.gaussian`); ``t`` ``[B]`` or scalar, integer or fractional timesteps.
* ``text_tokens`` ``[B, L, D]`` with ``text_mask`` ``[B, L]`` (True = a real token);
  ``text_embed`` ``[B, E]``: the CLIP text embedding.
* ``drop`` ``[B]`` bool: classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598; DALL-E 2
  drops the text conditioning 10% of the time in training, Sec. 2.1 / App. C). A dropped sample has
  every text token masked out and its text embedding replaced by zeros, the null conditioning of
  :mod:`jaxzoo.diffusion.unet`, so its output ignores the text entirely.
* The output ``[B, E]`` is the x0 prediction: sample with
  ``samplers.sample(unet.denoiser(model, params, ...), x_T, key, schedule, n, prediction="x0")``.

The sequence has ``L + 4`` positions (:func:`sequence_layout`): the ``L`` text tokens, then the
text embedding, the timestep embedding, the noised image embedding and a learned query, each
projected to ``W`` (the timestep through the sinusoidal embedding and a Dense-swish-Dense MLP,
as in the U-Net), plus a learned position. Text tokens use rows ``0 .. L-1`` of the position
table and the four trailing tokens always rows ``max_text_len .. max_text_len + 3``, so padding a
batch to a longer ``L`` changes nothing (text always padded to ``max_text_len``, CLIP's 77, makes
this the plain ``L + 4`` table). Pre-LN blocks (:class:`jaxzoo.nn.transformer.Block`) attend
causally, with padded (and dropped) text tokens masked as keys; a final LayerNorm and a
``W -> E`` projection at the last position give the prediction.

Two samples per caption, keep the one whose dot product with the text embedding is larger
(Sec. 2.1): :func:`best_of`. Public re-implementations (e.g. lucidrains' DALLE2-pytorch) scale the
unit-norm CLIP embeddings by ``sqrt(E)`` before noising, so that they have unit variance per
dimension like the noise; this module leaves that choice to the caller.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxzoo.diffusion.unet import timestep_embedding
from jaxzoo.nn.transformer import Block, padding_mask, residual_std

__all__ = ["DiffusionPrior", "best_of", "prior_loss", "sequence_layout", "slerp"]

_NUM_TRAILING = 4  # text embedding, timestep, noised image embedding, query


def sequence_layout(num_text: int) -> dict:
    """Positions of the prior's input sequence for ``num_text = L`` text tokens (Sec. 2.1 order).

    Returns a dict: ``"text"`` a ``slice`` over the ``L`` text tokens, ``"text_embed"``,
    ``"timestep"``, ``"noised_image"`` and ``"query"`` (the position read out, the last) ints, and
    ``"length"`` = ``L + 4``. Index hidden states ``[B, L + 4, W]`` with them along axis 1.
    """
    num_text = int(num_text)
    if num_text < 0:
        raise ValueError(f"num_text={num_text} must be >= 0")
    return {"text": slice(0, num_text), "text_embed": num_text, "timestep": num_text + 1,
            "noised_image": num_text + 2, "query": num_text + 3, "length": num_text + _NUM_TRAILING}


class DiffusionPrior(nn.Module):
    """The DALL-E 2 diffusion prior (Sec. 2.1): ``(x_t, t, text) -> x0`` ``[B, E]``.

    Attributes:
      embed_dim: ``E``, the CLIP embedding width (of ``x_t``, ``text_embed`` and the output).
      width, depth, num_heads: transformer width ``W``, number of blocks, attention heads.
      max_text_len: rows of the text part of the position table (``L <= max_text_len``).
      dropout: on the embeddings and inside the blocks (active only with ``train=True``, which then
        needs a ``"dropout"`` rng).
    """

    embed_dim: int
    width: int = 256
    depth: int = 4
    num_heads: int = 4
    max_text_len: int = 77
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x_t, t, *, text_tokens, text_mask=None, text_embed, drop=None,
                 train: bool = False, return_hidden: bool = False):
        """x0 prediction ``[B, E]`` (and, with ``return_hidden``, the final-LayerNorm hidden states
        ``[B, L + 4, W]`` laid out as :func:`sequence_layout`).

        Args:
          x_t: ``[B, E]`` noised CLIP image embedding. t: ``[B]`` or scalar, int or float.
          text_tokens: ``[B, L, D]`` frozen text-encoder token features.
          text_mask: ``[B, L]`` bool, True = a real token (default: all real).
          text_embed: ``[B, E]`` CLIP text embedding.
          drop: ``[B]`` bool (default none): use the null text conditioning for these samples.
          train: enable dropout.
        """
        x_t, text_tokens, text_embed = map(jnp.asarray, (x_t, text_tokens, text_embed))
        e = self.embed_dim
        if x_t.ndim != 2 or x_t.shape[1] != e:
            raise ValueError(f"x_t must be [B, {e}]; got {x_t.shape}")
        b = x_t.shape[0]
        if text_tokens.ndim != 3 or text_tokens.shape[0] != b:
            raise ValueError(f"text_tokens must be [B, L, D] with B={b}; got {text_tokens.shape}")
        num_text = text_tokens.shape[1]
        if num_text > self.max_text_len:
            raise ValueError(f"{num_text} text tokens exceed max_text_len={self.max_text_len}")
        if text_embed.shape != (b, e):
            raise ValueError(f"text_embed must be [B, E] = [{b}, {e}]; got {text_embed.shape}")
        text_mask = (jnp.ones((b, num_text), bool) if text_mask is None
                     else jnp.asarray(text_mask, bool))
        if text_mask.shape != (b, num_text):
            raise ValueError(f"text_mask must be [B, L] = [{b}, {num_text}]; got {text_mask.shape}")
        keep = jnp.ones((b,), bool) if drop is None else ~jnp.broadcast_to(jnp.asarray(drop, bool), (b,))
        text_mask = text_mask & keep[:, None]
        text_embed = jnp.where(keep[:, None], text_embed, 0.0)  # the null text embedding

        w = self.width
        dense = lambda name: nn.Dense(w, kernel_init=nn.initializers.normal(0.02), name=name)  # noqa: E731
        t = jnp.broadcast_to(jnp.asarray(t), (b,))
        time = dense("time_fc_2")(nn.swish(dense("time_fc_1")(timestep_embedding(t, w))))
        query = self.param("query", nn.initializers.normal(0.02), (w,))
        trailing = jnp.stack([dense("text_embed_proj")(text_embed), time,
                              dense("image_proj")(x_t), jnp.broadcast_to(query, (b, w))], axis=1)
        pos = self.param("pos_embed", nn.initializers.normal(0.01),
                         (self.max_text_len + _NUM_TRAILING, w))
        h = jnp.concatenate([dense("text_proj")(text_tokens) + pos[:num_text],
                             trailing + pos[self.max_text_len:]], axis=1)
        h = nn.Dropout(self.dropout)(h, deterministic=not train)

        valid = jnp.concatenate([text_mask, jnp.ones((b, _NUM_TRAILING), bool)], axis=1)
        for i in range(self.depth):
            h, _ = Block(num_heads=self.num_heads, out_std=residual_std(self.depth),
                         dropout=self.dropout, name=f"block_{i}")(
                h, mask=padding_mask(valid), causal=True, deterministic=not train)
        h = nn.LayerNorm(epsilon=1e-6, name="ln_final")(h)
        out = nn.Dense(e, kernel_init=nn.initializers.normal(0.02), name="out_proj")(h[:, -1])
        return (out, h) if return_hidden else out


def best_of(samples, text_embed):
    """Per example, the sample with the largest dot product with the text embedding (Sec. 2.1:
    DALL-E 2 draws two and keeps the better). Pure.

    ``samples`` ``[K, B, E]``, ``text_embed`` ``[B, E]`` -> ``[B, E]`` (ties: the first).
    """
    samples, text_embed = jnp.asarray(samples), jnp.asarray(text_embed)
    if samples.ndim != 3 or samples.shape[1:] != text_embed.shape:
        raise ValueError(f"samples [K, B, E] and text_embed [B, E] disagree: {samples.shape}, "
                         f"{text_embed.shape}")
    scores = jnp.einsum("kbe,be->kb", samples, text_embed)
    best = jnp.argmax(scores, axis=0)  # [B]
    return jnp.take_along_axis(samples, best[None, :, None], axis=0)[0]


def prior_loss(pred, x0):
    """The prior's objective (Sec. 2.1): mean squared error of the x0 prediction, averaged over
    batch and embedding. Pure. ``pred``, ``x0`` ``[B, E]`` -> scalar. Equal to
    ``gaussian.denoising_loss(..., prediction="x0")`` with uniform weighting."""
    return jnp.mean((jnp.asarray(pred) - jnp.asarray(x0)) ** 2)


def slerp(a, b, ts):
    """Spherical interpolation between embeddings ``a`` and ``b`` ``[E]`` at fractions ``ts``
    ``[K]`` -> ``[K, E]`` (DALL-E 2 Sec. 3.2 interpolates CLIP image embeddings this way):
    ``sin((1 - t) theta) / sin(theta) a + sin(t theta) / sin(theta) b`` with ``theta`` the angle
    between them; linear interpolation where they are (nearly) parallel. Pure."""
    a, b, ts = jnp.asarray(a), jnp.asarray(b), jnp.asarray(ts)[:, None]
    cos = jnp.dot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-12)
    theta = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
    small = theta < 1e-4
    sin = jnp.where(small, 1.0, jnp.sin(theta))
    wa = jnp.where(small, 1.0 - ts, jnp.sin((1.0 - ts) * theta) / sin)
    wb = jnp.where(small, ts, jnp.sin(ts * theta) / sin)
    return wa * a + wb * b
