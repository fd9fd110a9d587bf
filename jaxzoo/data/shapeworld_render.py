"""ShapeWorld scenes in NumPy: sampling, antialiased rendering, boxes, captions and questions.

A scene is a list of `Obj`s on a textured grey background. Coordinates are pixels of an S x S
image (x right, y down; pixel (x, y) covers [x, x + 1) x [y, y + 1)). An object is a shape of
radius r (the circumradius of its outline, relative size "small" or "large") centred at (cx, cy),
turned by `angle` radians. Rendering averages an n x n grid of sub-pixel samples per pixel
(coverage alpha in [0, 1]); objects are painted in list order, later ones on top. An object's box
is [x0, y0, x1, y1] in pixels, x0/y0 inclusive and x1/y1 exclusive: the tightest box around every
pixel it covers at all (alpha > 0) when rendered alone, so occlusion never shrinks it.
Everything is a pure function of the scene (and the generator passed in), hence deterministic.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
PLURALS = {"cross": "crosses"}
COLOURS = {"red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220),
           "yellow": (240, 200, 20), "purple": (148, 60, 189), "cyan": (23, 190, 207)}
COLOUR_NAMES = tuple(COLOURS)
SIZES = ("small", "large")
RELATIONS = ("above", "below", "left of", "right of")
NUMBERS = ("zero", "one", "two", "three", "four")
# Shape-colour pairs never drawn in train / validation / test: every shape and every colour
# keeps four seen partners, and the compositional split draws only these pairs.
HELD_OUT_PAIRS = (("circle", "yellow"), ("square", "purple"), ("triangle", "blue"),
                  ("star", "green"), ("cross", "red"), ("hexagon", "cyan"))
SEEN_PAIRS = tuple((s, c) for s in SHAPES for c in COLOUR_NAMES if (s, c) not in HELD_OUT_PAIRS)
MAX_OBJECTS = 4
SIZE_RADIUS = {"small": 0.12, "large": 0.19}  # times the image side
SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    r: float
    angle: float


def _regular(n: int, inner: float = 0.0) -> np.ndarray:
    """Vertices [k, 2] of a regular n-gon of circumradius 1 pointing up (a star with inner
    radius `inner` alternates)."""
    k = 2 * n if inner else n
    t = -np.pi / 2 + 2 * np.pi * np.arange(k) / k
    rad = np.where(np.arange(k) % 2 == 1, inner, 1.0) if inner else np.ones(k)
    return np.stack([rad * np.cos(t), rad * np.sin(t)], 1)


_CROSS = np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1],
                   [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]]) / math.hypot(1, 0.3)
_POLYGONS = {"square": _regular(4) @ np.array([[np.cos(np.pi / 4), -np.sin(np.pi / 4)],
                                               [np.sin(np.pi / 4), np.cos(np.pi / 4)]]),
             "triangle": _regular(3), "star": _regular(5, inner=0.45), "hexagon": _regular(6),
             "cross": _CROSS}


def _inside_polygon(u, v, poly):
    """Even-odd rule: are points (u, v) (any shape) inside the polygon [k, 2]?"""
    inside = np.zeros(np.shape(u), bool)
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y1 > v) != (y2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (u < x_at)
    return inside


def inside(obj: Obj, x, y):
    """Whether points (x, y) in pixel coordinates lie inside `obj` (boolean, shape of x)."""
    c, s = math.cos(obj.angle), math.sin(obj.angle)
    dx, dy = (np.asarray(x) - obj.cx) / obj.r, (np.asarray(y) - obj.cy) / obj.r
    u, v = c * dx + s * dy, -s * dx + c * dy  # the object's own frame
    if obj.shape == "circle":
        return u * u + v * v <= 1.0
    return _inside_polygon(u, v, _POLYGONS[obj.shape])


def coverage(obj: Obj, size: int, n: int = SUPERSAMPLE):
    """(alpha [h, w] float32 in [0, 1], (y0, x0)): the object's pixel coverage in the window of
    pixels its circumcircle can touch (clipped to the image), and that window's corner."""
    x0, y0 = max(0, int(math.floor(obj.cx - obj.r))), max(0, int(math.floor(obj.cy - obj.r)))
    x1, y1 = min(size, int(math.ceil(obj.cx + obj.r)) + 1), min(size, int(math.ceil(obj.cy + obj.r)) + 1)
    sub = (np.arange(n) + 0.5) / n
    xs = (np.arange(x0, x1)[:, None] + sub).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + sub).reshape(-1)
    hit = inside(obj, xs[None, :], ys[:, None])  # [(y1-y0) n, (x1-x0) n]
    alpha = hit.reshape(y1 - y0, n, x1 - x0, n).mean((1, 3), dtype=np.float32)
    return alpha, (y0, x0)


def box(obj: Obj, size: int) -> np.ndarray:
    """[x0, y0, x1, y1] float32: the tightest pixel box around every pixel the object covers."""
    alpha, (y0, x0) = coverage(obj, size)
    rows, cols = np.nonzero(alpha > 0)
    return np.array([x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1],
                    np.float32)


def background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A textured grey background [S, S, 3] float32 in [0, 1]: faint stripes plus noise."""
    y, x = np.mgrid[:size, :size] / size
    phi, freq = rng.uniform(0, np.pi), rng.uniform(3, 8)
    base = rng.uniform(0.72, 0.86)
    grey = base + 0.05 * np.sin(2 * np.pi * freq * (x * np.cos(phi) + y * np.sin(phi)))
    grey = grey + 0.02 * rng.standard_normal((size, size))
    return np.repeat(grey[..., None], 3, axis=2).astype(np.float32)


def render(objects, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [S, S, 3]: the background (drawn from `rng`) with the objects painted in order."""
    img = background(size, rng)
    for obj in objects:
        alpha, (y0, x0) = coverage(obj, size)
        h, w = alpha.shape
        colour = np.asarray(COLOURS[obj.colour], np.float32) / 255.0
        patch = img[y0:y0 + h, x0:x0 + w]
        img[y0:y0 + h, x0:x0 + w] = patch * (1 - alpha[..., None]) + colour * alpha[..., None]
    return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


def sample_objects(size: int, rng: np.random.Generator, pairs) -> list[Obj]:
    """1-4 objects (one with probability 1/3) with (shape, colour) from `pairs`, sometimes
    repeating an earlier pair (for counts), placed inside the image without heavy overlap."""
    count = 1 if rng.random() < 1 / 3 else int(rng.integers(2, MAX_OBJECTS + 1))
    objects: list[Obj] = []
    for _ in range(count):
        if objects and rng.random() < 0.3:
            prior = objects[int(rng.integers(len(objects)))]
            shape, colour = prior.shape, prior.colour
        else:
            shape, colour = pairs[int(rng.integers(len(pairs)))]
        kind = SIZES[int(rng.integers(2))]
        r = SIZE_RADIUS[kind] * size
        for _attempt in range(50):
            cx, cy = rng.uniform(r + 0.5, size - r - 0.5, 2)
            if all(math.hypot(cx - o.cx, cy - o.cy) > 0.85 * (r + o.r) for o in objects):
                break
        else:  # no room left: fewer objects
            break
        angle = 0.0 if shape == "circle" else float(rng.uniform(-0.35, 0.35))
        objects.append(Obj(shape, colour, kind, float(cx), float(cy), float(r), angle))
    return objects


def relation(a: Obj, b: Obj) -> str:
    """Where `a` is relative to `b`: along the axis where their centres differ most."""
    dx, dy = a.cx - b.cx, a.cy - b.cy
    if abs(dy) >= abs(dx):
        return "above" if dy < 0 else "below"
    return "left of" if dx < 0 else "right of"


def _name(o: Obj, with_size: bool = False) -> str:
    return f"{o.size} {o.colour} {o.shape}" if with_size else f"{o.colour} {o.shape}"


def _plural(shape: str) -> str:
    return PLURALS.get(shape, shape + "s")


def captions(objects, rng: np.random.Generator, num: int = 5) -> list[str]:
    """`num` true captions of the scene from varied templates: attributes, sizes, relations,
    counts and lists."""
    pool = []
    for o in objects:
        pool += [f"a {_name(o)}", f"a {_name(o, True)}", f"there is a {_name(o)}"]
    groups = {}
    for o in objects:
        groups.setdefault((o.colour, o.shape), []).append(o)
    for (colour, shape), members in groups.items():
        if len(members) > 1:
            pool.append(f"{NUMBERS[len(members)]} {colour} {_plural(shape)}")
    pool.append(f"{NUMBERS[len(objects)]} shape" + ("s" if len(objects) > 1 else ""))
    for a in objects:
        for b in objects:
            if a is not b and (a.colour, a.shape) != (b.colour, b.shape):
                pool.append(f"a {_name(a, rng.random() < 0.5)} {relation(a, b)} a {_name(b)}")
    if len(objects) > 1:
        pool.append(" and ".join(f"a {_name(o)}" for o in objects))
    first = f"a {_name(objects[0])}" if len(objects) == 1 else pool[-1]
    rest = [pool[i] for i in rng.permutation(len(pool))]
    out = [first] + [c for c in rest if c != first]
    return (out * num)[:num]


def questions(objects, rng: np.random.Generator, pairs, num: int = 4) -> list[tuple[str, str]]:
    """`num` (question, answer) pairs about the scene: a question type drawn uniformly among
    colour, shape, count, existence and relation (those that apply), then one question of that
    type; answers are single words (a colour, a shape, a number, yes or no)."""
    by_shape, by_colour = {}, {}
    for o in objects:
        by_shape.setdefault(o.shape, []).append(o)
        by_colour.setdefault(o.colour, []).append(o)
    kinds = {"colour": [(f"what colour is the {shape}?", m[0].colour)
                        for shape, m in by_shape.items() if len(m) == 1],
             "shape": [(f"what shape is the {colour} object?", m[0].shape)
                       for colour, m in by_colour.items() if len(m) == 1],
             "count": [(f"how many {_plural(shape)} are there?", NUMBERS[len(by_shape.get(shape, []))])
                       for shape in SHAPES]}
    present = {(o.shape, o.colour) for o in objects}
    kinds["exist"] = [(f"is there a {c} {s}?", "yes" if (s, c) in present else "no") for s, c in pairs]
    kinds["exist"] += [(f"is there a {o.colour} {o.shape}?", "yes") for o in objects] * len(pairs)
    unique = [o for o in objects if len(by_shape[o.shape]) == 1]
    kinds["relation"] = [(f"is the {a.shape} {asked} the {b.shape}?", "yes" if relation(a, b) == asked else "no")
                         for a in unique for b in unique if a is not b for asked in RELATIONS]
    names = [k for k, v in kinds.items() if v]
    out = []
    for _ in range(num):
        items = kinds[names[int(rng.integers(len(names)))]]
        out.append(items[int(rng.integers(len(items)))])
    return out
