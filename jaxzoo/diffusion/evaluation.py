"""Scoring generated images: a Frechet distance on the features of a small in-domain classifier,
and a memorisation check.

The FID recipe (Heusel et al. 2017, arXiv 1706.08500) with a tiny classifier trained on the same
(embedded) data in place of Inception-v3, so the numbers are comparable only with each other,
never with published FIDs. Shared by every launcher that samples images (DDPM, and the
text-to-image models after it).

Shapes: images NHWC ``[B, H, W, C]`` in the range the caller trains on; ``features``
``[B, feature_dim]``; ``logits`` ``[B, num_classes]``; moments are float64 ``(mu [F], cov [F, F])``.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxzoo.core import frechet

__all__ = ["SmallConvNet", "accuracy", "cached_classifier", "embed", "feature_moments",
           "fit_classifier", "frechet_distance64", "nearest_train_distance"]


class SmallConvNet(nn.Module):
    """``widths``: one (3x3 conv, ReLU, 3x3 conv, ReLU, 2x2 average pool) stage per entry, then
    global average pooling, ``Dense(feature_dim)`` + ReLU (the features) and a linear head."""

    num_classes: int
    widths: Sequence[int] = (32, 64)
    feature_dim: int = 64

    def features(self, x):
        return self(x, return_features=True)

    @nn.compact
    def __call__(self, x, return_features: bool = False):
        h = x
        for width in self.widths:
            h = nn.relu(nn.Conv(width, (3, 3))(h))
            h = nn.relu(nn.Conv(width, (3, 3))(h))
            h = nn.avg_pool(h, (2, 2), (2, 2))
        h = nn.relu(nn.Dense(self.feature_dim)(jnp.mean(h, axis=(1, 2))))
        if return_features:
            return h
        return nn.Dense(self.num_classes)(h)


def fit_classifier(model: SmallConvNet, images, labels, *, steps: int = 600,
                   batch_size: int = 128, lr: float = 2e-3, seed: int = 0):
    """Trains ``model`` with Adam on softmax cross-entropy; deterministic for a fixed ``seed``.

    Args: ``images`` ``[N, H, W, C]`` float, ``labels`` ``[N]`` int. Batches are drawn with
    replacement-free epoch permutations from ``numpy.random.default_rng(seed)``; the learning
    rate decays with a cosine schedule to 0. Returns the parameters.
    """
    images, labels = np.asarray(images, np.float32), np.asarray(labels, np.int32)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    params = model.init(jax.random.key(seed), images[:1])
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    order = np.empty(0, np.int64)
    batch_size = min(batch_size, len(images))
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(images))])
        idx, order = order[:batch_size], order[batch_size:]
        params, opt_state = step(params, opt_state, images[idx], labels[idx])
    return params


@functools.partial(jax.jit, static_argnums=0)
def _features(model, params, x):
    return model.apply(params, x, method=SmallConvNet.features)


@functools.partial(jax.jit, static_argnums=0)
def _predict(model, params, x):
    return jnp.argmax(model.apply(params, x), -1)


def _batched(fn, model, params, images, batch_size):
    images = np.asarray(images, np.float32)
    out = [np.asarray(fn(model, params, images[i:i + batch_size]))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out)


def embed(model: SmallConvNet, params, images, batch_size: int = 1000) -> np.ndarray:
    """Penultimate features ``[N, feature_dim]`` (float32 NumPy), in batches."""
    return _batched(_features, model, params, images, batch_size)


def accuracy(model: SmallConvNet, params, images, labels, batch_size: int = 1000) -> float:
    """Fraction of ``images`` whose arg-max logit is the label."""
    pred = _batched(_predict, model, params, images, batch_size)
    return float(np.mean(pred == np.asarray(labels)))


def cached_classifier(path, images, labels, num_classes: int, *, widths: Sequence[int],
                      feature_dim: int, steps: int, batch_size: int, lr: float, seed: int,
                      tag: str = ""):
    """``(model, params)`` of a SmallConvNet read from ``path`` (msgpack) when it was trained with
    the same settings (and ``tag``, e.g. the dataset name), else trained with `fit_classifier`
    and saved there by process 0."""
    model = SmallConvNet(num_classes, tuple(widths), feature_dim)
    meta = json.dumps({"data": tag, "widths": list(widths), "feature_dim": feature_dim,
                       "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed})
    path = pathlib.Path(path)
    if path.exists():
        stored = flax.serialization.msgpack_restore(path.read_bytes())
        if stored.get("meta") == meta:
            return model, stored["params"]
    params = jax.device_get(fit_classifier(model, images, labels, steps=steps,
                                           batch_size=batch_size, lr=lr, seed=seed))
    if jax.process_index() == 0:
        path.write_bytes(flax.serialization.msgpack_serialize({"meta": meta, "params": params}))
    return model, params


def feature_moments(model: SmallConvNet, params, images) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and covariance ``[F, F]`` (float64, ``np.cov``'s N - 1) of the features."""
    f = embed(model, params, images).astype(np.float64)
    return np.mean(f, 0), np.cov(f, rowvar=False)


def frechet_distance64(a, b) -> float:
    """Frechet distance of two ``(mu, cov)`` moment pairs, computed in float64."""
    with jax.enable_x64(True):
        return float(frechet.frechet_distance(*a, *b))


def nearest_train_distance(images, train) -> np.ndarray:
    """L2 (pixel) distance of each image to its nearest training image, ``[N]`` (float64)."""
    a = np.asarray(images).reshape(len(images), -1).astype(np.float64)
    b = np.asarray(train).reshape(len(train), -1).astype(np.float64)
    b_sq = np.sum(b**2, 1)[None]
    out = []
    for rows in np.array_split(a, max(1, len(a) // 1000)):  # [1000, N_train] blocks at a time
        sq = np.sum(rows**2, 1)[:, None] + b_sq - 2.0 * rows @ b.T
        out.append(np.sqrt(np.maximum(sq.min(1), 0.0)))
    return np.concatenate(out)
