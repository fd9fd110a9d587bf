"""Evaluating a trained CLIP: embeddings in batches, zero-shot classification with prompt
ensembling (CLIP Sec. 3.1.4), and image-text retrieval R@K (Sec. 3.1 / Table 13's protocol).

`tokenize(texts) -> int [N, T]` is the caller's tokenizer (e.g. `jaxzoo.data.shapeworld.encode`
with its tokenizer), so the same code serves any vocabulary. Embeddings are unit-norm float32
NumPy arrays; the model is a `jaxzoo.clip.model.CLIP` with its variables.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import numpy as np

from jaxzoo.clip import losses
from jaxzoo.clip.model import CLIP

# Prompt templates for classes named like "red circle" (CLIP's ImageNet ensemble has 80).
TEMPLATES = ("a {}", "a {} shape", "one {}", "a picture of a {}", "there is a {}",
             "a small {}", "a large {}")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _embed(model: CLIP, method: str, variables, x):
    return model.apply(variables, x, method=getattr(CLIP, method))


def map_batches(fn: Callable, x, batch_size: int, empty: np.ndarray) -> np.ndarray:
    """`fn` over x [N, ...] in chunks of exactly `batch_size` rows (the last padded by repeating
    its final row, so one compiled shape serves all), outputs concatenated along axis 0 and cut
    back to N rows; `empty` when N = 0."""
    x = np.asarray(x)
    out = []
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        pad = batch_size - len(chunk)
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
        out.append(np.asarray(fn(padded))[:len(chunk)])
    return np.concatenate(out) if out else empty


def _batched(model, method, variables, x, batch_size: int) -> np.ndarray:
    return map_batches(lambda chunk: _embed(model, method, variables, chunk), x, batch_size,
                       np.zeros((0, model.embed_dim), np.float32))


def image_embeddings(model: CLIP, variables, images, batch_size: int = 256) -> np.ndarray:
    """Unit image embeddings [N, E] of images [N, H, W, C] (float, the training range)."""
    return _batched(model, "encode_image", variables, images, batch_size)


def text_embeddings(model: CLIP, variables, tokens, batch_size: int = 256) -> np.ndarray:
    """Unit text embeddings [N, E] of token ids [N, T]."""
    return _batched(model, "encode_text", variables, tokens, batch_size)


def zero_shot_classifier(model: CLIP, variables, tokenize: Callable, class_names: Sequence[str],
                         templates: Sequence[str] = TEMPLATES) -> np.ndarray:
    """Class embeddings [C, E]: every template filled with every class name, embedded, and
    averaged per class (`losses.class_embeddings`)."""
    texts = [t.format(name) for name in class_names for t in templates]
    embeds = text_embeddings(model, variables, tokenize(texts))
    return np.asarray(losses.class_embeddings(embeds.reshape(len(class_names), len(templates), -1)))


def zero_shot_accuracy(image_embeds, labels, classes) -> float:
    """Fraction of images whose most similar class embedding is their label [N]."""
    logits = np.asarray(image_embeds) @ np.asarray(classes).T
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def retrieval(image_embeds, text_embeds, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """R@K both ways for N images and their N captions (row i of each is a pair):
    `image_to_text_r@k` and `text_to_image_r@k`."""
    sim = np.asarray(image_embeds) @ np.asarray(text_embeds).T
    positives = np.eye(len(sim), dtype=bool)
    out = {f"image_to_text_r@{k}": v for k, v in losses.recall_at_k(sim, positives, ks).items()}
    out.update({f"text_to_image_r@{k}": v
                for k, v in losses.recall_at_k(sim.T, positives.T, ks).items()})
    return out
