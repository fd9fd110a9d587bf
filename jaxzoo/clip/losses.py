"""Image-text contrastive losses, zero-shot classification and retrieval metrics, pure jax.numpy.

Names: `image` [B, E] and `text` [B, E] are L2-normalised embeddings of B matching pairs (row i
of each is pair i); `scale` is the temperature t (not its log) and `bias` SigLIP's b; logits
z_ij = t <image_i, text_j> + b.

Losses:
  softmax_loss  CLIP (Radford et al. 2021, arXiv 2103.00020, Fig. 3): the mean of the
                cross-entropies of each image over the B texts and of each text over the B images,
                the matching one being the label.
  sigmoid_loss  SigLIP (Zhai et al. 2023, arXiv 2303.15343, Eq. 1): every pair is an independent
                binary problem, -1/B sum_i sum_j log sigmoid(s_ij z_ij), s_ij = +1 if i == j
                else -1 (normalised by B, not B^2, as the paper).
Data parallelism: under `jax.jit` with the batch sharded over devices the B x B logits are
already global (XLA gathers the embeddings). Inside `shard_map`, pass `axis_name`: each device
holds B/D pairs, gathers every device's embeddings (`all_gather`, whose transpose sends the
gradients back) and scores its rows against all B; the loss is psum-ed, so with shard_map's
default `check_vma=True` (which transposes psum correctly) the loss and gradients equal the
single-device ones on the global batch (tests/clip/test_clip_losses.py, 8 devices). Without `axis_name` there, each device would use only
its own B/D pairs as negatives (the "local" loss the benchmark compares against).
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["class_embeddings", "recall_at_k", "sigmoid_loss", "softmax_loss", "zero_shot_logits"]


def _global_columns(image, text, axis_name):
    """(all images [B, E], all texts [B, E], index of this device's first row)."""
    if axis_name is None:
        return image, text, 0
    all_image = jax.lax.all_gather(image, axis_name, tiled=True)
    all_text = jax.lax.all_gather(text, axis_name, tiled=True)
    return all_image, all_text, jax.lax.axis_index(axis_name) * image.shape[0]


def _mean_over_devices(total, count, axis_name):
    if axis_name is not None:
        total, count = jax.lax.psum(total, axis_name), jax.lax.psum(count, axis_name)
    return total / count


def softmax_loss(image, text, scale, *, axis_name: Optional[str] = None):
    """CLIP's symmetric cross-entropy over the B x B logits t <image_i, text_j>: a scalar."""
    all_image, all_text, offset = _global_columns(image, text, axis_name)
    labels = offset + jnp.arange(image.shape[0])
    rows = jnp.arange(image.shape[0])
    logits_i = scale * image @ all_text.T  # this device's images against every text
    logits_t = scale * text @ all_image.T
    nll_i = jax.nn.logsumexp(logits_i, axis=1) - logits_i[rows, labels]
    nll_t = jax.nn.logsumexp(logits_t, axis=1) - logits_t[rows, labels]
    total = 0.5 * (jnp.sum(nll_i) + jnp.sum(nll_t))
    return _mean_over_devices(total, jnp.asarray(image.shape[0], total.dtype), axis_name)


def sigmoid_loss(image, text, scale, bias, *, axis_name: Optional[str] = None):
    """SigLIP's pairwise sigmoid loss (Eq. 1), summed over all B^2 pairs and divided by B."""
    _, all_text, offset = _global_columns(image, text, axis_name)
    logits = scale * image @ all_text.T + bias  # [b, B]
    sign = jnp.where(offset + jnp.arange(image.shape[0])[:, None] == jnp.arange(all_text.shape[0]),
                     1.0, -1.0)
    total = -jnp.sum(jax.nn.log_sigmoid(sign * logits))
    return _mean_over_devices(total, jnp.asarray(image.shape[0], total.dtype), axis_name)


def class_embeddings(text_embeds):
    """Prompt ensembling (CLIP Sec. 3.1.4): the normalised mean of each class's normalised
    prompt embeddings. text_embeds [C, P, E] (P templates per class) -> [C, E]."""
    mean = jnp.mean(text_embeds, axis=1)
    return mean / jnp.linalg.norm(mean, axis=-1, keepdims=True)


def zero_shot_logits(image, classes, scale=100.0):
    """Zero-shot class logits t <image_i, class_c>: image [N, E], classes [C, E] -> [N, C]."""
    return scale * image @ classes.T


def recall_at_k(similarity, positives, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Retrieval R@K: the fraction of queries with a positive among their K most similar
    candidates. similarity [Q, C]; positives bool [Q, C] (every query needs one). Ties are
    broken towards the lower candidate index, as a stable sort would. Use `similarity.T`,
    `positives.T` for the other direction (e.g. text-to-image)."""
    similarity, positives = np.asarray(similarity), np.asarray(positives, bool)
    if similarity.shape != positives.shape or similarity.ndim != 2:
        raise ValueError(f"similarity {similarity.shape} and positives {positives.shape} must be "
                         "the same [queries, candidates] shape")
    if not positives.any(axis=1).all():
        raise ValueError("every query needs at least one positive candidate")
    order = np.argsort(-similarity, axis=1, kind="stable")
    hit_rank = np.argmax(np.take_along_axis(positives, order, axis=1), axis=1)  # first positive
    return {int(k): float(np.mean(hit_rank < k)) for k in ks}
