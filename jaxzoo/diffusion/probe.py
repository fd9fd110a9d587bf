"""A ShapeWorld attribute probe: does a generated image show what its caption says?

Text-to-image models (GLIDE, Imagen, DALL-E 2) trained on ShapeWorld captions are scored the way
DrawBench scores them (Saharia et al. 2022, arXiv 2205.11487, the DrawBench benchmark): prompts
grouped in categories that each test one skill, judged here by a small CNN, the probe, instead of
human raters. `CATEGORIES` map onto DrawBench's: "colour" (Colors), "counting" (Counting),
"spatial" (Positional), "long" (Descriptions: long prompts naming many objects) and "unseen"
(Rare Words: the held-out (shape, colour) pairs), plus "single" (one object, every attribute)
and "shape" (shape and size, any colour).

The probe reads, per image and per (shape, colour) pair (`shapeworld.pair_index` order,
`NUM_PAIRS` = 36): how many objects of that pair there are (0..`MAX_COUNT`), their mean centre
(x, y) as fractions of the image side (x to the right, y DOWN, as in `shapeworld_render`), and
whether they are large. A caption becomes a `CaptionSpec`, groups of objects with counts and an
optional relation, and `satisfied` checks it against the probe's `Reading` of an image; the
ceiling of `caption_accuracy` is its value on the real images the captions came from
(`source_images`).

Shapes: images ``[B, S, S, 3]``, uint8 or float32 in [-1, 1]; per-pair arrays ``[B, 36, ...]``.
The probe reads one size and one centre per pair, so `caption_specs` checks a long caption whose
pair holds both sizes ("two large yellow circles and a small yellow circle") on that pair's
total count, and takes spatial captions only from scenes of two different pairs.

Typical use::

    model, params = probe.cached_probe(workdir / "probe.msgpack")
    specs = probe.caption_specs(shapeworld.load("test"), shapeworld.load("test_compositional"))
    images = sample([s.text for s in specs])  # the model under test, uint8 or [-1, 1]
    scores = probe.caption_accuracy(specs, probe.read(model, params, images))
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Optional, Sequence

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxzoo.data import shapeworld
from jaxzoo.data.shapeworld_render import MAX_OBJECTS, RELATIONS, SHAPES, SIZES

__all__ = ["CATEGORIES", "CaptionSpec", "Group", "MAX_COUNT", "NUM_PAIRS", "Probe", "Reading",
           "cached_probe", "caption_accuracy", "caption_specs", "fit_probe", "probe_loss", "read",
           "satisfied", "source_images", "targets"]

NUM_PAIRS = len(SHAPES) * len(shapeworld.COLOUR_NAMES)  # 36
MAX_COUNT = MAX_OBJECTS  # counts 0..4: every object of a scene can share one pair
CATEGORIES = ("single", "colour", "shape", "counting", "spatial", "long", "unseen")
CENTER_SCALE = 10.0  # the centre loss is a Huber loss (delta 1) in tenths of the image side
# What `cached_probe` trains on and how, beyond its arguments: a change here retrains old files.
_PROBE_VERSION = "train + first half of test_compositional; density probe v1"


# --- the probe -------------------------------------------------------------------------------

class Probe(nn.Module):
    """A small fully convolutional counter. Per entry of ``widths`` a stage of 3x3 conv + ReLU
    (stages after the first start with 2x2 average pooling), then a 1x1 conv + ReLU to
    ``feature_dim`` per-location features e on a grid of G = S / 2^(len(widths) - 1) cells.

    From e, 1x1 convs give per cell an objectness o, shape and colour distributions, and a size
    logit z. The density of pair k = (shape, colour) is d_k = o p(shape) p(colour): factorised,
    so what is learnt of a shape serves all its colours (400 steps on 4,000 images found 91% of
    the test objects this way, 13% with 36 independent sigmoids per cell). As in counting by
    density (Lempitsky & Zisserman 2010), a pair's soft count is its density summed over the
    grid, c_k = sum d_k; its centre is the density-weighted mean of the cell centres (the mean
    centre of its objects), and its size logit the weighted mean of z. A head on flattened
    features, the obvious alternative, found 6% of the objects after 600 full-size steps.

    ``images`` float32 ``[B, S, S, 3]`` in [-1, 1] -> dict of ``count`` logits
    ``[B, 36, MAX_COUNT + 1]`` (-a (c_k - n)^2 for n = 0..MAX_COUNT, a > 0 learnt, so the arg-max
    is c_k rounded), ``center`` ``[B, 36, 2]`` (x, y as fractions of the side), ``large`` logits
    ``[B, 36]`` and ``features`` ``[B, feature_dim]`` (e averaged over the grid).
    """

    widths: Sequence[int] = (32, 64, 128)
    feature_dim: int = 128

    @nn.compact
    def __call__(self, images):
        h = images
        for i, width in enumerate(self.widths):
            if i:
                h = nn.avg_pool(h, (2, 2), (2, 2))
            h = nn.relu(nn.Conv(width, (3, 3))(h))
        e = nn.relu(nn.Conv(self.feature_dim, (1, 1))(h))  # [B, G, G, F]
        # A low initial objectness: about 3 objects' worth of density over an 8 x 8 grid.
        objectness = nn.sigmoid(nn.Conv(1, (1, 1), bias_init=nn.initializers.constant(-3.0),
                                        name="objectness")(e))
        shape = nn.softmax(nn.Conv(len(SHAPES), (1, 1), name="shape")(e))
        colour = nn.softmax(nn.Conv(len(shapeworld.COLOUR_NAMES), (1, 1), name="colour")(e))
        pairs = (shape[..., :, None] * colour[..., None, :]).reshape(*e.shape[:3], NUM_PAIRS)
        density = objectness * pairs  # [B, G, G, 36], in pair_index order (shape-major)
        size_logit = nn.Conv(1, (1, 1), name="size")(e)  # [B, G, G, 1]
        g = e.shape[1]
        cells = (jnp.arange(g) + 0.5) / g
        xy = jnp.stack(jnp.meshgrid(cells, cells, indexing="xy"), -1)  # [G, G, 2]: (x, y)
        soft_count = density.sum((1, 2))  # [B, 36]
        norm = soft_count + 1e-6  # absent pairs: any finite value (their centre is not used)
        center = jnp.einsum("bhwk,hwc->bkc", density, xy) / norm[..., None]
        large = (density * size_logit).sum((1, 2)) / norm
        sharpness = nn.softplus(self.param("count_sharpness", nn.initializers.constant(2.0), ()))
        count = -sharpness * (soft_count[..., None] - jnp.arange(MAX_COUNT + 1)) ** 2
        return {"count": count, "center": center, "large": large, "features": e.mean((1, 2))}


def targets(data: dict) -> dict:
    """The probe's targets from a `shapeworld.load` dict (N images of side S):
    ``count`` int32 ``[N, 36]`` objects of each pair; ``center`` float32 ``[N, 36, 2]`` their mean
    (x, y) / S, 0 where absent; ``large`` float32 ``[N, 36]`` the fraction of them that are large,
    0 where absent."""
    mask = np.asarray(data["shape"]) >= 0  # [N, M]
    n = mask.shape[0]
    pair = np.where(mask, shapeworld.pair_index(np.maximum(data["shape"], 0),
                                                np.maximum(data["colour"], 0)), 0)
    rows = np.broadcast_to(np.arange(n)[:, None], mask.shape)[mask]
    cols = pair[mask]
    count = np.zeros((n, NUM_PAIRS), np.int32)
    np.add.at(count, (rows, cols), 1)
    side = np.asarray(data["image"]).shape[1]
    center = np.zeros((n, NUM_PAIRS, 2), np.float64)
    np.add.at(center, (rows, cols), np.asarray(data["center"], np.float64)[mask] / side)
    large = np.zeros((n, NUM_PAIRS), np.float64)
    np.add.at(large, (rows, cols), (np.asarray(data["size"])[mask] == SIZES.index("large")))
    safe = np.maximum(count, 1)
    return {"count": count, "center": (center / safe[..., None]).astype(np.float32),
            "large": (large / safe).astype(np.float32)}


def probe_loss(outputs: dict, targets: dict):
    """Scalar, averaged over the batch and summed over the 36 pairs: softmax cross-entropy of
    the counts, plus, for pairs present in the image only, a Huber loss on the centres (in
    tenths of the side, delta 1) and the binary cross-entropy of ``large`` (a soft target)."""
    count = jnp.minimum(targets["count"], MAX_COUNT)
    present = (count > 0).astype(jnp.float32)  # [B, 36]
    count_ce = optax.softmax_cross_entropy_with_integer_labels(outputs["count"], count)
    center = optax.huber_loss(CENTER_SCALE * outputs["center"], CENTER_SCALE * targets["center"])
    large = optax.sigmoid_binary_cross_entropy(outputs["large"], targets["large"])
    per_pair = count_ce + present * (center.sum(-1) + large)
    return per_pair.sum(-1).mean()


def _as_float(images) -> np.ndarray:
    """uint8 images -> float32 in [-1, 1]; float images are taken to be in [-1, 1] already."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    return images.astype(np.float32)


def fit_probe(model: Probe, images, targets: dict, *, steps: int, batch_size: int = 64,
              lr: float = 1e-2, seed: int = 0):
    """Trains ``model`` on `probe_loss` with Adam, the learning rate decaying to 0 on a cosine;
    deterministic for a fixed ``seed`` (batches from epoch permutations of
    ``numpy.random.default_rng(seed)``, as `evaluation.fit_classifier`). ``images``
    ``[N, S, S, 3]`` uint8 or float in [-1, 1]; ``targets`` as `targets` returns. Returns the
    parameters."""
    images = np.asarray(images)
    tgt = {k: np.asarray(targets[k]) for k in ("count", "center", "large")}
    if any(len(v) != len(images) for v in tgt.values()):
        raise ValueError(f"{len(images)} images but targets of {len(tgt['count'])}")
    params = model.init(jax.random.key(seed), _as_float(images[:1]))
    tx = optax.adam(optax.cosine_decay_schedule(lr, steps))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        grads = jax.grad(lambda p: probe_loss(model.apply(p, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(seed)
    order = np.empty(0, np.int64)
    batch_size = min(batch_size, len(images))
    for _ in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(len(images))])
        idx, order = order[:batch_size], order[batch_size:]
        params, opt_state = step(params, opt_state, _as_float(images[idx]),
                                 {k: v[idx] for k, v in tgt.items()})
    return params


def cached_probe(path, image_size: int = 32, data_dir=None, *, widths: Sequence[int] = (32, 64, 128),
                 feature_dim: int = 128, steps: int = 1200, batch_size: int = 64, lr: float = 1e-2,
                 seed: int = 0):
    """``(Probe, params)`` read from ``path`` (msgpack) when it was trained with these settings,
    else trained with `fit_probe` and saved there by process 0. The defaults train in about a
    minute on 2 CPU cores and read the real test images' captions almost perfectly (single,
    colour and shape 1.000, counting 0.998, spatial 0.992, long 0.992, unseen 0.997).

    The probe trains on the whole train split plus the first half of test_compositional, so it
    knows the 6 held-out pairs too: it is the measuring instrument, not the model under test
    (`caption_specs` draws "unseen" captions from the other half).
    """
    model = Probe(tuple(widths), feature_dim)
    meta = json.dumps({"version": _PROBE_VERSION, "image_size": image_size, "widths": list(widths),
                       "feature_dim": feature_dim, "steps": steps, "batch_size": batch_size,
                       "lr": lr, "seed": seed})
    path = pathlib.Path(path)
    if path.exists():
        stored = flax.serialization.msgpack_restore(path.read_bytes())
        if stored.get("meta") == meta:
            return model, stored["params"]
    train = shapeworld.load("train", image_size, data_dir)
    comp = shapeworld.load("test_compositional", image_size, data_dir)
    half = len(comp["image"]) // 2
    images = np.concatenate([train["image"], comp["image"][:half]])
    tgt = {k: np.concatenate([a, b[:half]]) for (k, a), b in
           zip(targets(train).items(), targets(comp).values())}
    params = jax.device_get(fit_probe(model, images, tgt, steps=steps, batch_size=batch_size,
                                      lr=lr, seed=seed))
    if jax.process_index() == 0:
        path.write_bytes(flax.serialization.msgpack_serialize({"meta": meta, "params": params}))
    return model, params


# --- reading images --------------------------------------------------------------------------

@dataclasses.dataclass
class Reading:
    """What the probe reads in N images: ``count`` int ``[N, 36]``, ``center`` float ``[N, 36, 2]``
    (x, y fractions of the side; meaningless where the count is 0), ``large`` bool ``[N, 36]``
    and ``features`` float32 ``[N, F]``."""
    count: np.ndarray
    center: np.ndarray
    large: np.ndarray
    features: np.ndarray


@functools.partial(jax.jit, static_argnums=0)
def _read(model, params, x):
    out = model.apply(params, x)
    return (jnp.argmax(out["count"], -1), out["center"], out["large"] > 0, out["features"])


def read(model: Probe, params, images, batch_size: int = 500) -> Reading:
    """The probe's `Reading` of ``images`` ``[N, S, S, 3]`` (uint8, or float in [-1, 1]), in
    batches of one shape (the last one padded), so one compilation serves any N."""
    images = np.asarray(images)
    n = len(images)
    batch_size = max(1, min(batch_size, n))
    parts = []
    for i in range(0, n, batch_size):
        x = _as_float(images[i:i + batch_size])
        pad = batch_size - len(x)
        x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
        parts.append([np.asarray(a)[:len(x) - pad] for a in _read(model, params, x)])
    count, center, large, features = (np.concatenate(p) for p in zip(*parts))
    return Reading(count.astype(np.int32), center, large, features.astype(np.float32))


# --- captions and what they require ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Group:
    """Objects a caption asks for: ``shape`` / ``colour`` names (None matches any), ``size``
    ("small" / "large", None for any) and how many (``count``)."""
    shape: Optional[str]
    colour: Optional[str]
    size: Optional[str]
    count: int = 1


@dataclasses.dataclass(frozen=True)
class CaptionSpec:
    """A caption (``text``, ShapeWorld's own phrasing) of `CATEGORIES` ``category`` and what it
    requires: its ``groups``, at least their counts (exactly, when ``exact``), and optionally
    ``relation`` (one of RELATIONS) of groups[0] to groups[1]. ``source`` is the (split, index)
    of the real image the caption was made from."""
    text: str
    category: str
    groups: tuple[Group, ...]
    relation: Optional[str] = None
    exact: bool = False
    source: tuple[str, int] = ("", -1)


@functools.lru_cache(maxsize=None)
def _pair_table() -> tuple[np.ndarray, np.ndarray]:
    """(shape id [36], colour id [36]) of each pair in `pair_index` order."""
    p = np.arange(NUM_PAIRS)
    return p // len(shapeworld.COLOUR_NAMES), p % len(shapeworld.COLOUR_NAMES)


def _group_objects(group: Group, reading: Reading, i: int) -> np.ndarray:
    """Objects of each pair [36] in image i that match ``group`` (0 for other pairs)."""
    shape_ids, colour_ids = _pair_table()
    keep = np.ones(NUM_PAIRS, bool)
    if group.shape is not None:
        keep &= shape_ids == SHAPES.index(group.shape)
    if group.colour is not None:
        keep &= colour_ids == shapeworld.COLOUR_NAMES.index(group.colour)
    if group.size is not None:
        keep &= np.asarray(reading.large[i], bool) == (group.size == "large")
    return np.where(keep, np.asarray(reading.count[i]), 0)


def _relation(offset) -> Optional[str]:
    """`shapeworld_render.relation` of a centre offset (a - b), without its RELATION_RATIO: the
    dominant axis decides (vertical on a tie, as there); y grows downwards."""
    dx, dy = float(offset[0]), float(offset[1])
    if dx == 0 and dy == 0:
        return None
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "left of" if dx < 0 else "right of"


def satisfied(spec: CaptionSpec, reading: Reading, i: int) -> bool:
    """Whether image i of ``reading`` shows ``spec``: each group has at least (or, when
    ``exact``, exactly) its count of matching objects, summed over matching pairs; a pair
    matches a group's size by its predicted ``large``. With a relation, the count-weighted mean
    centre of group 0 lies on that side of group 1's along the dominant axis of their offset."""
    per_pair = [_group_objects(g, reading, i) for g in spec.groups]
    for g, n in zip(spec.groups, per_pair):
        if (n.sum() != g.count) if spec.exact else (n.sum() < g.count):
            return False
    if spec.relation is None:
        return True
    if spec.relation not in RELATIONS or len(spec.groups) != 2:
        raise ValueError(f"relation {spec.relation!r} needs two groups and one of {RELATIONS}")
    a, b = (np.sum(n[:, None] * reading.center[i], 0) / n.sum() for n in per_pair)
    return _relation(a - b) == spec.relation


def caption_accuracy(specs: Sequence[CaptionSpec], reading: Reading) -> dict[str, float]:
    """Fraction of satisfied specs per category present (row i of ``reading`` is the image for
    ``specs[i]``) and over all of them ("all")."""
    if len(specs) != len(reading.count):
        raise ValueError(f"{len(specs)} specs but {len(reading.count)} images read")
    hits = np.array([satisfied(s, reading, i) for i, s in enumerate(specs)], bool)
    cats = np.array([s.category for s in specs])
    out = {c: float(hits[cats == c].mean()) for c in CATEGORIES if np.any(cats == c)}
    out["all"] = float(hits.mean()) if len(hits) else float("nan")
    return out


def source_images(specs: Sequence[CaptionSpec], splits: dict) -> np.ndarray:
    """The real images ``[len(specs), S, S, 3]`` the specs were made from; ``splits`` maps split
    names to `shapeworld.load` dicts (the ceiling of `caption_accuracy`)."""
    return np.stack([splits[s.source[0]]["image"][s.source[1]] for s in specs])


# --- captions from real scenes ---------------------------------------------------------------

def _objects(data: dict, i: int) -> list[tuple[str, str, str]]:
    """(shape, colour, size) names of image i's objects, in scene order."""
    n = int(data["num_objects"][i])
    return [(SHAPES[data["shape"][i][k]], shapeworld.COLOUR_NAMES[data["colour"][i][k]],
             SIZES[data["size"][i][k]]) for k in range(n)]


def _text(template: str, **slots) -> str:
    return shapeworld._articles(template.format(**slots))  # ShapeWorld's own "a" -> "an"


def _single(objects, category: str, source) -> CaptionSpec:
    (shape, colour, size), = objects
    t = shapeworld.CAPTION_TEMPLATES["attribute"]
    if category == "colour":
        return CaptionSpec(_text(t[3], colour=colour), category, (Group(None, colour, None),),
                           source=source)
    if category == "shape":
        return CaptionSpec(_text(t[2], shape=shape, size=size), category,
                           (Group(shape, None, size),), source=source)
    return CaptionSpec(_text(t[1], shape=shape, colour=colour, size=size), category,
                       (Group(shape, colour, size),), source=source)


def _counting(objects, source) -> Optional[CaptionSpec]:
    pairs = [o[:2] for o in objects]
    repeated = [p for p in dict.fromkeys(pairs) if pairs.count(p) >= 2]
    if not repeated:
        return None
    (shape, colour), n = repeated[0], pairs.count(repeated[0])
    text = _text(shapeworld.CAPTION_TEMPLATES["count"][0], number=shapeworld.NUMBERS[n],
                 colour=colour, shapes=shapeworld._plural(shape, n))
    return CaptionSpec(text, "counting", (Group(shape, colour, None, n),), exact=True,
                       source=source)


def _spatial(objects, caption: str, source) -> Optional[CaptionSpec]:
    """The scene caption of a two-object scene that states a relation; None when it states
    none, or when both objects share a pair (the probe reads one centre per pair)."""
    if len(objects) != 2 or objects[0][:2] == objects[1][:2]:
        return None
    (sa, ca, za), (sb, cb, zb) = objects
    for rel in RELATIONS:
        text = _text(shapeworld.CAPTION_TEMPLATES["relation"][0], a=f"{za} {ca} {sa}",
                     b=f"{zb} {cb} {sb}", relation=rel)
        if text == caption:
            return CaptionSpec(text, "spatial", (Group(sa, ca, za), Group(sb, cb, zb)), rel,
                               source=source)
    return None


def _long(objects, caption: str, source) -> CaptionSpec:
    """The scene caption of a 3- or 4-object scene: each (size, colour, shape) group with its
    exact count; a pair present in both sizes is one group without size (see module doc)."""
    sizes: dict[tuple[str, str], set] = {}
    for shape, colour, size in objects:
        sizes.setdefault((shape, colour), set()).add(size)
    counts: dict[tuple, int] = {}
    for shape, colour, size in objects:
        key = (shape, colour, size if len(sizes[shape, colour]) == 1 else None)
        counts[key] = counts.get(key, 0) + 1
    groups = tuple(Group(s, c, z, n) for (s, c, z), n in counts.items())
    return CaptionSpec(caption, "long", groups, exact=True, source=source)


def caption_specs(test: dict, compositional: dict, per_category: int = 50,
                  seed: int = 0) -> list[CaptionSpec]:
    """Up to ``per_category`` `CaptionSpec` per category (in `CATEGORIES` order), each made from a
    real scene drawn without replacement by ``numpy.random.default_rng([seed, category])``
    (the scenes are kept in split order):

      single    single-object test scenes: "a {size} {colour} {shape}" (the scene caption)
      colour    single-object test scenes: "a {colour} shape"
      shape     single-object test scenes: "a {size} {shape}"
      counting  test scenes with >= 2 objects of one pair: "{number} {colour} {shapes}", exact
      spatial   two-object test scenes of two pairs whose scene caption states a relation
      long      scene captions of 3- and 4-object test scenes, exact counts
      unseen    single-object scenes of the second half of ``compositional`` (the half
                `cached_probe` does not train on): "a {size} {colour} {shape}"

    ``test`` and ``compositional`` are `shapeworld.load` dicts of "test" and
    "test_compositional"."""
    made: dict[str, list] = {c: [] for c in CATEGORIES}
    for i in range(len(test["image"])):
        objects, caption, source = _objects(test, i), test["captions"][i][0], ("test", i)
        if len(objects) == 1:
            for c in ("single", "colour", "shape"):
                made[c].append(_single(objects, c, source))
        made["counting"].append(_counting(objects, source))
        made["spatial"].append(_spatial(objects, caption, source))
        if len(objects) >= 3:
            made["long"].append(_long(objects, caption, source))
    for i in range(len(compositional["image"]) // 2, len(compositional["image"])):
        objects = _objects(compositional, i)
        if len(objects) == 1:
            made["unseen"].append(_single(objects, "unseen", ("test_compositional", i)))
    out = []
    for k, category in enumerate(CATEGORIES):
        pool = [s for s in made[category] if s is not None]
        rng = np.random.default_rng([seed, k])
        take = rng.choice(len(pool), min(per_category, len(pool)), replace=False)
        out += [pool[j] for j in np.sort(take)]
    return out
