"""ShapeWorld's scenes: sampled in the unit square, rasterised with NumPy, drawn as pictures.

Conventions (fixed here; `jaxzoo.data.shapeworld` builds the dataset on them):
  * A scene lives in normalised coordinates (x, y) in [0, 1]^2, x to the right and y DOWN (image
    row order), so the same scene renders at any image size S. In pixels (normalised * S), pixel
    (column i, row j) covers [i, i + 1) x [j, j + 1); its centre is (i + 0.5, j + 0.5).
  * An object is one of `SHAPES` of circumradius `radius` (every point of it lies within
    `radius` of its centre), turned by `rotation` degrees (clockwise on screen), filled with one
    `COLOUR_RGB` colour times a brightness in [0.85, 1]. Objects lie wholly inside the image and
    never overlap: their circumscribed discs are at least `GAP` apart, so each is fully visible.
  * Antialiasing: a pixel's coverage `alpha` in [0, 1] is the fraction of its `supersample`^2
    evenly spaced sub-pixel samples inside the shape; the colour is blended over the background
    with it.
  * A box is [x0, y0, x1, y1] in pixels, x0 / y0 inclusive and x1 / y1 exclusive (width = x1 -
    x0): the tightest integer box around every pixel the object touches (alpha > 0).
  * Relations use the dominant axis of the centres' offset, only when it dominates clearly
    (`relation`); y grows downwards, so "above" means a smaller y.
Everything is a pure function of its arguments (randomness comes from the generator passed in).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
from typing import Optional, Sequence

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
COLOUR_RGB = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 90, 235),
           "yellow": (240, 215, 30), "purple": (160, 70, 210), "orange": (250, 140, 25)}
SIZES = ("small", "large")
MAX_ROTATION = 20.0  # degrees either way
RELATIONS = ("above", "below", "left of", "right of")
MAX_OBJECTS = 4
NUM_OBJECTS_PROBS = (0.35, 0.25, 0.2, 0.2)  # P(1..4 objects): about a third hold one object
REPEAT_PROB = 0.25  # an object copies an earlier object's shape and colour ("two red stars")
RADIUS_RANGE = {"small": (0.12, 0.14), "large": (0.18, 0.21)}  # circumradius / image side
GAP = 0.03  # minimum distance between circumscribed discs, / image side
RELATION_RATIO = 1.5  # the dominant axis must be this many times the other one
SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object; ids index SHAPES, COLOUR_RGB and SIZES; x, y, radius are normalised."""
    shape: int
    colour: int
    size: int
    x: float
    y: float
    radius: float
    rotation: float  # degrees, clockwise on screen; 0 for circles
    brightness: float


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background_seed: int  # seeds the texture (`background`)


def _star_polygon(points: int, inner: float) -> np.ndarray:
    angles = -90.0 + 180.0 / points * np.arange(2 * points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return radii[:, None] * np.stack([np.cos(np.radians(angles)), np.sin(np.radians(angles))], 1)


def _regular_polygon(n: int, first_angle: float) -> np.ndarray:
    angles = np.radians(first_angle + 360.0 / n * np.arange(n))
    return np.stack([np.cos(angles), np.sin(angles)], 1)


def _cross_polygon(half_width: float) -> np.ndarray:
    a, b = half_width, math.sqrt(1.0 - half_width ** 2)  # arm corners on the unit circle
    quarter = np.array([[a, -b], [a, -a], [b, -a]])
    turns = [np.array([[1, 0], [0, 1]]), np.array([[0, -1], [1, 0]]),
             np.array([[-1, 0], [0, -1]]), np.array([[0, 1], [-1, 0]])]
    return np.concatenate([quarter @ t.T for t in turns])


# Outlines of circumradius 1 (y down), each star-shaped around the origin (every ray from the
# origin crosses the outline once), which `_inside_polygon` relies on.
POLYGONS = {
    "square": _regular_polygon(4, 45.0),
    "triangle": _regular_polygon(3, -90.0),  # a vertex up
    "star": _star_polygon(5, 0.5),
    "cross": _cross_polygon(0.3),
    # A rhombus of aspect 0.55: a hexagon was read as a circle at 32 px (a small CNN confused
    # half of them), and a square turned by 45 degrees would be a diamond too.
    "diamond": np.array([[0.0, -1.0], [0.55, 0.0], [0.0, 1.0], [-0.55, 0.0]]),
}


def _edges(polygon: np.ndarray):
    """(angles [k], starts [k, 2], directions [k, 2]) of the edges, sorted by the angle of
    their first vertex, so edge i spans the directions from angles[i] to angles[i + 1]."""
    angles = np.arctan2(polygon[:, 1], polygon[:, 0])
    order = np.argsort(angles)
    verts = polygon[order]
    return angles[order], verts, np.roll(verts, -1, axis=0) - verts


_EDGES = {shape: _edges(poly) for shape, poly in POLYGONS.items()}


def _inside_polygon(u: np.ndarray, v: np.ndarray, shape: str) -> np.ndarray:
    """Points (u, v) inside an outline star-shaped around the origin: the edge whose angular
    span holds the point's direction decides, by the side of its line the point is on."""
    angles, starts, directions = _EDGES[shape]
    k = (np.searchsorted(angles, np.arctan2(v, u), side="right") - 1) % len(angles)
    cross = directions[k, 0] * (v - starts[k, 1]) - directions[k, 1] * (u - starts[k, 0])
    return cross >= 0  # angles increase counter-clockwise in (u, v): the origin is on the left


def inside(obj: SceneObject, x: np.ndarray, y: np.ndarray, image_size: int) -> np.ndarray:
    """Whether points (x, y), in pixels of an S = `image_size` image, lie inside `obj`
    (x and y broadcast against each other)."""
    radius = obj.radius * image_size
    dx, dy = (x - obj.x * image_size) / radius, (y - obj.y * image_size) / radius
    c, s = math.cos(math.radians(obj.rotation)), math.sin(math.radians(obj.rotation))
    u, v = c * dx + s * dy, -s * dx + c * dy  # undo the clockwise turn
    if SHAPES[obj.shape] == "circle":
        return u * u + v * v <= 1.0
    return _inside_polygon(u, v, SHAPES[obj.shape])


def object_alpha(obj: SceneObject, image_size: int, supersample: int = SUPERSAMPLE):
    """`(alpha, (x0, y0))`: coverage float32 [h, w] of the pixel window holding the object's
    circumscribed disc, whose top-left pixel is (x0, y0)."""
    cx, cy, r = obj.x * image_size, obj.y * image_size, obj.radius * image_size
    x0, y0 = max(0, math.floor(cx - r)), max(0, math.floor(cy - r))
    x1, y1 = min(image_size, math.ceil(cx + r)), min(image_size, math.ceil(cy + r))
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (np.arange(x0, x1)[:, None] + offsets).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + offsets).reshape(-1)
    hit = inside(obj, xs[None, :], ys[:, None], image_size)
    alpha = hit.reshape(y1 - y0, supersample, x1 - x0, supersample).mean((1, 3), dtype=np.float32)
    return alpha, (x0, y0)


def full_alpha(obj: SceneObject, image_size: int, supersample: int = SUPERSAMPLE) -> np.ndarray:
    """The object rendered alone: coverage float32 [S, S] over the whole image."""
    alpha, (x0, y0) = object_alpha(obj, image_size, supersample)
    out = np.zeros((image_size, image_size), np.float32)
    out[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]] = alpha
    return out


def tight_box(alpha: np.ndarray, offset=(0, 0)) -> np.ndarray:
    """float32 [4] [x0, y0, x1, y1] (exclusive ends) around the pixels with alpha > 0."""
    rows, cols = np.nonzero(alpha > 0)
    return np.array([cols.min() + offset[0], rows.min() + offset[1],
                     cols.max() + 1 + offset[0], rows.max() + 1 + offset[1]], np.float32)


@functools.lru_cache(maxsize=8)
def _bilinear(image_size: int) -> np.ndarray:
    """[S, 5]: weights that interpolate a 5-point grid over [0, 1] at the S pixel centres."""
    t = (np.arange(image_size) + 0.5) / image_size * 4
    i = np.minimum(t.astype(int), 3)
    weights = np.zeros((image_size, 5))
    weights[np.arange(image_size), i] = 1 - (t - i)
    weights[np.arange(image_size), i + 1] = t - i
    return weights


def background(seed: int, image_size: int) -> np.ndarray:
    """A textured background float32 [S, S, 3] in [0, 1]: a muted base colour, smooth noise
    (a random 5 x 5 grid, bilinear) and faint stripes, all in normalised coordinates, plus a
    little per-pixel grain. Mid-grey and unsaturated, so every object colour stands out."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.25, 0.55) + rng.uniform(-0.04, 0.04, 3)
    grid = rng.uniform(-1.0, 1.0, (5, 5))
    noise_amp, stripe_amp = rng.uniform(0.02, 0.08), rng.uniform(0.0, 0.06)
    freq, angle, phase = rng.uniform(3, 9), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    weights = _bilinear(image_size)
    noise = weights @ grid @ weights.T  # [S, S], rows are y
    c = 2 * np.pi * freq * (np.arange(image_size) + 0.5) / image_size
    a, b = c * np.cos(angle) + phase, c * np.sin(angle)  # sin(a_x + b_y), as outer products
    stripes = np.outer(np.cos(b), np.sin(a)) + np.outer(np.sin(b), np.cos(a))
    texture = (noise_amp * noise + stripe_amp * stripes + base.mean()).astype(np.float32)
    grain = rng.random((image_size, image_size, 1), np.float32) * 0.03 - 0.015
    return texture[..., None] + grain + (base - base.mean()).astype(np.float32)


def render(scene: Scene, image_size: int, supersample: int = SUPERSAMPLE):
    """`(image uint8 [S, S, 3], boxes float32 [num_objects, 4])`: the scene painted in object
    order over its background, and each object's box (its pixels when rendered alone)."""
    image = background(scene.background_seed, image_size)
    boxes = np.zeros((len(scene.objects), 4), np.float32)
    for k, obj in enumerate(scene.objects):
        alpha, (x0, y0) = object_alpha(obj, image_size, supersample)
        rgb = np.asarray(tuple(COLOUR_RGB.values())[obj.colour], np.float32)
        colour = rgb / 255 * obj.brightness
        a = alpha[..., None]
        window = image[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
        window[...] = window * (1 - a) + colour * a
        boxes[k] = tight_box(alpha, (x0, y0))
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), boxes


def sample_scene(rng: np.random.Generator, pairs: Sequence[tuple[int, int]],
                 max_tries: int = 64) -> Scene:
    """1-4 objects (probabilities `NUM_OBJECTS_PROBS`) whose (shape, colour) ids are drawn
    uniformly from `pairs` (or, with probability `REPEAT_PROB`, copied from an earlier object,
    so that counts above one are common), sizes uniformly, placed uniformly where they fit; an
    object that does not fit after `max_tries` candidate positions restarts the scene."""
    count = int(rng.choice(MAX_OBJECTS, p=NUM_OBJECTS_PROBS)) + 1
    while True:
        objects: list[SceneObject] = []
        for _ in range(count):
            if objects and rng.random() < REPEAT_PROB:
                earlier = objects[int(rng.integers(len(objects)))]
                shape, colour = earlier.shape, earlier.colour
            else:
                shape, colour = pairs[int(rng.integers(len(pairs)))]
            size = int(rng.integers(len(SIZES)))
            radius = float(rng.uniform(*RADIUS_RANGE[SIZES[size]]))
            centres = rng.uniform(radius, 1.0 - radius, (max_tries, 2))
            ok = np.ones(max_tries, bool)
            for o in objects:
                ok &= np.hypot(centres[:, 0] - o.x, centres[:, 1] - o.y) >= radius + o.radius + GAP
            if not ok.any():
                break
            x, y = centres[int(np.argmax(ok))]
            turned = SHAPES[shape] != "circle" and rng.random() < 0.5  # rotation is optional
            # At most 20 degrees, so a square never becomes a diamond (nor a diamond a square).
            rotation = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)) if turned else 0.0
            objects.append(SceneObject(int(shape), int(colour), size, float(x), float(y), radius,
                                       rotation, float(rng.uniform(0.85, 1.0))))
        else:
            return Scene(tuple(objects), int(rng.integers(2 ** 63)))


def relation(a: SceneObject, b: SceneObject) -> Optional[str]:
    """Where `a` is relative to `b` (one of RELATIONS), or None when neither axis of the centre
    offset is `RELATION_RATIO` times the other (too diagonal to say)."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dy) >= RELATION_RATIO * abs(dx):
        return "above" if dy < 0 else "below"
    if abs(dx) >= RELATION_RATIO * abs(dy):
        return "left of" if dx < 0 else "right of"
    return None


# Picture layout, in pixels.
PAD, FONT_SIZE, LINE_HEIGHT, CAPTION_LINES = 4, 10, 12, 3
TEXT_HEIGHT = CAPTION_LINES * LINE_HEIGHT + 2


def save_picture(path, images, boxes, num_boxes, captions, ncols: int = 4, scale: int = 4):
    """A PNG grid: each image [S, S, 3] upscaled `scale` x (nearest), its boxes outlined in
    white, its caption written under it on `CAPTION_LINES` lines. The picture is
    (ncols * (S * scale + PAD) + PAD) x (nrows * (S * scale + TEXT_HEIGHT + PAD) + PAD)."""
    from PIL import Image, ImageDraw, ImageFont

    n, side = len(images), images.shape[1] * scale
    nrows = -(-n // ncols)
    cell_w, cell_h = side + PAD, side + TEXT_HEIGHT + PAD
    canvas = Image.new("RGB", (ncols * cell_w + PAD, nrows * cell_h + PAD), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=FONT_SIZE)
    for i in range(n):
        left, top = PAD + (i % ncols) * cell_w, PAD + (i // ncols) * cell_h
        canvas.paste(Image.fromarray(images[i]).resize((side, side), Image.NEAREST), (left, top))
        for x0, y0, x1, y1 in np.asarray(boxes[i][:num_boxes[i]]) * scale:
            draw.rectangle([left + x0, top + y0, left + x1 - 1, top + y1 - 1], outline=(255,) * 3)
        for j, line in enumerate(_wrap(captions[i], font, side)):
            draw.text((left, top + side + 1 + j * LINE_HEIGHT), line, fill=(0, 0, 0), font=font)
    path = pathlib.Path(path)
    canvas.save(path)
    return path


def _wrap(text: str, font, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels, at most CAPTION_LINES lines (the last may end '...')."""
    lines, words = [], text.split()
    while words and len(lines) < CAPTION_LINES:
        k = 1
        while k < len(words) and font.getlength(" ".join(words[:k + 1])) <= width:
            k += 1
        lines.append(" ".join(words[:k]))
        words = words[k:]
    if words:
        lines[-1] += " ..."
    return lines
