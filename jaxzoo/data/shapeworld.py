"""ShapeWorld: an embedded, procedural image-text-box world for vision-language models.

Each image (S x S RGB, S = 32 or 64) holds 1-4 non-overlapping objects on a textured background;
an object has one of 6 `SHAPES`, one of 6 `COLOUR_NAMES`, a size in `SIZES`, a position and an
optional rotation (`jaxzoo.data.shapeworld_render` fixes the geometry, rendering and box
conventions). About 35% of the images hold exactly one object. Per image: `NUM_CAPTIONS` true
captions from `CAPTION_TEMPLATES` (the first describes the whole scene: every object with its
size, and the relation of two objects), and one question-answer pair per type of
`QUESTION_TEMPLATES` that the scene allows (colour, shape, count, existence, relation: 2-5,
usually 4-5).

Splits (`SPLITS`; `DEFAULT_SPLIT_SIZES` images each): train, validation and test draw only the
30 `SEEN_PAIRS` of (shape, colour); test_compositional draws only the 6 `HELD_OUT_PAIRS`, so
every shape and every colour is seen in training but never in these combinations. Text of the
other splits never names a held-out pair either (not even "is there a blue triangle? no").

Determinism: example i of split k is a pure function of (seed, k, i), drawn from
`numpy.random.default_rng([seed, k, i])` (`example`); the configs "size_32" and "size_64" hold
the same scenes and text at two resolutions. Generated on first use with a tqdm bar (no
download, no TensorFlow; 26 s for size_32 and 43 s for size_64 on one core of a busy 2-core
machine) and cached as a TFDS array_record dataset (54 MB / 140 MB) under
`tfds_utils.data_dir()`; `ShapeWorld(split_sizes=..., seed=...)` builds other sizes and seeds.

`load(split, image_size)` returns the whole split (N images, M = MAX_OBJECTS = 4 slots; image_size
16 averages the 32x32 images over 2x2 pixels):
  image        uint8 [N, S, S, 3]
  num_objects  int32 [N] (1..4); mask bool [N, M]: slot k < num_objects
  shape, colour, size, label  int32 [N, M]: ids into SHAPES / COLOUR_NAMES / SIZES, and label =
               `pair_index(shape, colour)` into `class_names()`; -1 in empty slots
  boxes        float32 [N, M, 4]: [x0, y0, x1, y1] pixels, x1 / y1 exclusive; 0 in empty slots
  center       float32 [N, M, 2]: (x, y) pixels; radius float32 [N, M]: circumradius, pixels;
  rotation     float32 [N, M]: degrees clockwise
  captions     list[list[str]] (NUM_CAPTIONS each); questions, answers, question_types
               list[list[str]] (parallel; types from QUESTION_TEMPLATES; answers from ANSWERS)

Text: `tokenizer(image_size)` is a byte-level BPE `tokenizers.Tokenizer` trained once on the
train captions, questions and answers, saved as `tokenizer.json` beside the dataset; its
post-processor wraps every text as [BOS] text [EOS]. `encode(tok, texts, max_len)` pads and
truncates to ids [N, max_len]. `python -m jaxzoo.data.shapeworld --out shapeworld.png` draws
example images with their boxes and first captions (`save_picture`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pathlib
import re
import sys
from typing import Optional, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tqdm.auto import tqdm

from jaxzoo.data import shapeworld_render as render_lib
from jaxzoo.data.shapeworld_render import MAX_OBJECTS, RELATIONS, SHAPES, SIZES
from jaxzoo.errors import ConfigError, UserError

COLOUR_NAMES = tuple(render_lib.COLOUR_RGB)
SPLITS = ("train", "validation", "test", "test_compositional")
DEFAULT_SPLIT_SIZES = {"train": 20_000, "validation": 2_000, "test": 2_000,
                       "test_compositional": 2_000}
IMAGE_SIZES = (32, 64)  # rendered and stored
LOAD_SIZES = (16, 32, 64)  # 16: the 32x32 images averaged over 2x2 pixels (`downsample`)
# Each shape and each colour is held out exactly once, so both stay seen with 5 partners.
HELD_OUT_PAIRS = (("circle", "purple"), ("square", "orange"), ("triangle", "blue"),
                  ("star", "green"), ("cross", "yellow"), ("diamond", "red"))
SEEN_PAIRS = tuple((s, c) for s in SHAPES for c in COLOUR_NAMES if (s, c) not in HELD_OUT_PAIRS)
NUMBERS = ("zero", "one", "two", "three", "four")
OPPOSITE = {"above": "below", "below": "above", "left of": "right of", "right of": "left of"}
NUM_CAPTIONS = 5
# The first caption is the whole scene: one object "a {size} {colour} {shape}", two objects
# "a {a} {relation} a {b}" (with sizes), otherwise a list "{group}, {group} and {group}"
# with groups like "two small red circles". The other captions come from these families.
CAPTION_TEMPLATES = {
    "attribute": ("a {colour} {shape}", "a {size} {colour} {shape}", "a {size} {shape}",
                  "a {colour} shape", "a picture of a {size} {colour} {shape}"),
    "relation": ("a {a} {relation} a {b}", "there is a {a} {relation} a {b}"),
    "count": ("{number} {colour} {shapes}", "{number} {shapes}", "{number} {colour} {objects}",
              "there {be} {number} {objects}"),
    "existence": ("there is a {colour} {shape}", "there is a {size} {colour} {shape}",
                  "there is a {colour} object"),
}
QUESTION_TEMPLATES = {  # {ref}: a description that picks out exactly one object
    "colour": ("what colour is the {ref}?",),
    "shape": ("what shape is the {ref} object?",),
    "count": ("how many {things} are there?",),
    "existence": ("is there a {colour} {shape}?", "is there a {size} {shape}?"),
    "relation": ("where is the {a} relative to the {b}?", "is the {a} {relation} the {b}?"),
}
ANSWERS = COLOUR_NAMES + SHAPES + NUMBERS + ("yes", "no") + RELATIONS
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
PAD, UNK, CLS, SEP, MASK, BOS, EOS = range(len(SPECIAL_TOKENS))  # their ids in `tokenizer()`
TOKENIZER_VOCAB_SIZE = 1024  # an upper bound: training stops at about 420
MAX_TEXT_TOKENS = 24  # every caption, question and answer, with [BOS] and [EOS]


def class_names() -> list[str]:
    """"colour shape" of every (shape, colour) pair, in `pair_index` order (36 classes)."""
    return [f"{c} {s}" for s in SHAPES for c in COLOUR_NAMES]


def pair_index(shape, colour):
    """Class of (shape, colour): names, or SHAPES / COLOUR_NAMES ids (ints or arrays)."""
    shape = SHAPES.index(shape) if isinstance(shape, str) else np.asarray(shape)
    colour = COLOUR_NAMES.index(colour) if isinstance(colour, str) else np.asarray(colour)
    return shape * len(COLOUR_NAMES) + colour


def split_pairs(split: str) -> tuple[tuple[str, str], ...]:
    """The (shape, colour) pairs whose objects `split` holds."""
    return HELD_OUT_PAIRS if split == "test_compositional" else SEEN_PAIRS


def _plural(shape: str, n: int = 2) -> str:
    return shape if n == 1 else "crosses" if shape == "cross" else shape + "s"


def _articles(text: str) -> str:
    """English articles: "a orange star" -> "an orange star"."""
    return re.sub(r"\ba (?=[aeiou])", "an ", text)


def _names(o) -> tuple[str, str, str]:
    return SHAPES[o.shape], COLOUR_NAMES[o.colour], SIZES[o.size]


def _describe(o, size: bool = True) -> str:
    shape, colour, size_name = _names(o)
    return f"{size_name} {colour} {shape}" if size else f"{colour} {shape}"


def scene_caption(objects) -> str:
    """The first caption: every object (with its size) and, for two objects, their relation."""
    if len(objects) == 2 and _describe(objects[0]) != _describe(objects[1]):
        rel = render_lib.relation(objects[0], objects[1])
        if rel:
            return f"a {_describe(objects[0])} {rel} a {_describe(objects[1])}"
    groups: dict[tuple, int] = {}
    for o in objects:
        key = (SIZES[o.size], COLOUR_NAMES[o.colour], SHAPES[o.shape])
        groups[key] = groups.get(key, 0) + 1
    parts = [f"a {z} {c} {s}" if n == 1 else f"{NUMBERS[n]} {z} {c} {_plural(s)}"
             for (z, c, s), n in groups.items()]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _caption_candidates(objects, rng) -> dict[str, list[str]]:
    """Every true caption of each family of CAPTION_TEMPLATES."""
    t = CAPTION_TEMPLATES
    out = {family: [] for family in t}
    for o in objects:
        shape, colour, size = _names(o)
        for family in ("attribute", "existence"):
            out[family] += [f.format(shape=shape, colour=colour, size=size) for f in t[family]]
    for a in objects:
        for b in objects:
            rel = None if a is b else render_lib.relation(a, b)
            if rel and _describe(a) != _describe(b):  # else "a red star above a red star"
                da, db = _describe(a, rng.random() < 0.5), _describe(b, rng.random() < 0.5)
                if da == db:
                    da, db = _describe(a), _describe(b)
                out["relation"] += [f.format(a=da, b=db, relation=rel) for f in t["relation"]]
    count = lambda keep: sum(1 for o in objects if keep(o))  # noqa: E731
    words = lambda n: {"number": NUMBERS[n], "objects": _plural("object", n)}  # noqa: E731
    for shape, colour in {(SHAPES[o.shape], COLOUR_NAMES[o.colour]) for o in objects}:
        n = count(lambda o: _names(o)[:2] == (shape, colour))
        shapes = _plural(shape, n)
        out["count"].append(t["count"][0].format(colour=colour, shapes=shapes, **words(n)))
    for shape in {SHAPES[o.shape] for o in objects}:
        n = count(lambda o: SHAPES[o.shape] == shape)
        out["count"].append(t["count"][1].format(shapes=_plural(shape, n), **words(n)))
    for colour in {COLOUR_NAMES[o.colour] for o in objects}:
        n = count(lambda o: COLOUR_NAMES[o.colour] == colour)
        out["count"].append(t["count"][2].format(colour=colour, **words(n)))
    n = len(objects)
    out["count"].append(t["count"][3].format(be="is" if n == 1 else "are", **words(n)))
    return {family: sorted(set(c)) for family, c in out.items()}


def captions(objects, rng: np.random.Generator, num: int = NUM_CAPTIONS) -> list[str]:
    """`num` different true captions: `scene_caption`, then captions drawn one at a time from a
    caption family chosen uniformly among those with unused candidates. Captions only name
    objects in the scene (no negations: contrastive and text-to-image models read words, not
    logic)."""
    first = scene_caption(objects)
    pools = _caption_candidates(objects, rng)
    out = [first]
    while len(out) < num:
        families = [f for f in pools if set(pools[f]) - set(out)]
        pool = [c for c in pools[families[int(rng.integers(len(families)))]] if c not in out]
        out.append(pool[int(rng.integers(len(pool)))])
    return out


_ATTRIBUTE = {"shape": 0, "colour": 1, "size": 2}  # positions in `_names`


def _refs(names: list, forms) -> list[list[str]]:
    """Per object, its descriptions among `forms` (tuples of "size" / "colour" / "shape") that
    match it and no other object; `names` are the objects' (shape, colour, size)."""
    out = [[] for _ in names]
    for form in forms:
        keys = [tuple(n[_ATTRIBUTE[a]] for a in form) for n in names]
        for k, key in enumerate(keys):
            if keys.count(key) == 1:
                out[k].append(" ".join(key))
    return out


def questions(objects, rng: np.random.Generator, mentionable: Sequence[tuple[str, str]]):
    """(question, answer, type) triples: one per QUESTION_TEMPLATES type the scene allows, in
    that order (count and existence always, colour / shape when some object can be named
    without its colour / shape, relation when two nameable objects have a clear relation).
    Yes/no answers are yes with probability 1/2; a "no" names something absent (a pair from
    `mentionable`) or the opposite relation. A count asks about a present object's attributes,
    or (one time in five) about a random mentionable pair, usually absent (answer "zero")."""
    q, out = QUESTION_TEMPLATES, []
    names = [_names(o) for o in objects]
    choose = lambda items: items[int(rng.integers(len(items)))]  # noqa: E731
    for kind, forms, answer in (("colour", [("shape",), ("size", "shape")], 1),
                                ("shape", [("colour",), ("size", "colour")], 0)):
        refs = [(r, n) for n, rs in zip(names, _refs(names, forms)) for r in rs]
        if refs:
            ref, n = choose(refs)
            out.append((q[kind][0].format(ref=ref), n[answer], kind))
    if rng.random() < 0.8:
        shape, colour, size = choose(names)
    else:
        (shape, colour), size = choose(mentionable), choose(SIZES)
    shapes = _plural(shape)
    things, want = choose([("objects", {}), (f"{colour} objects", {1: colour}),
                           (shapes, {0: shape}), (f"{colour} {shapes}", {0: shape, 1: colour}),
                           (f"{size} objects", {2: size})])
    count = sum(all(n[k] == v for k, v in want.items()) for n in names)
    out.append((q["count"][0].format(things=things), NUMBERS[count], "count"))
    yes, form = rng.random() < 0.5, int(rng.integers(2))
    if form == 0:  # is there a {colour} {shape}?
        present = [n[:2] for n in names]
        options = present if yes else [p for p in mentionable if p not in present]
    else:  # is there a {size} {shape}?
        present = [(n[0], n[2]) for n in names]
        absent = [(s, z) for s in SHAPES for z in SIZES if (s, z) not in present]
        options = present if yes else absent
    first, second = choose(options)
    slots = {"shape": first, ("colour", "size")[form]: second}
    out.append((q["existence"][form].format(**slots), "yes" if yes else "no", "existence"))
    refs = _refs(names, [("shape",), ("colour", "shape"), ("size", "shape"),
                         ("size", "colour", "shape")])
    pairs = [(i, j, rel) for i, a in enumerate(objects) for j, b in enumerate(objects)
             if i != j and refs[i] and refs[j] and (rel := render_lib.relation(a, b))]
    if pairs:
        i, j, rel = choose(pairs)
        ra, rb = choose(refs[i]), choose(refs[j])
        if rng.random() < 0.5:
            out.append((q["relation"][0].format(a=ra, b=rb), rel, "relation"))
        else:
            asked = rel if rng.random() < 0.5 else OPPOSITE[rel]
            out.append((q["relation"][1].format(a=ra, b=rb, relation=asked),
                        "yes" if asked == rel else "no", "relation"))
    return out


def _scene(split: str, index: int, seed: int):
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    ids = [(SHAPES.index(s), COLOUR_NAMES.index(c)) for s, c in split_pairs(split)]
    return render_lib.sample_scene(rng, ids), rng


def scene(split: str, index: int, seed: int = 0) -> render_lib.Scene:
    """The scene of example `index` of `split` (the same at every image size), without
    rendering it: `render_lib.render(scene(...), image_size)` gives its image and boxes."""
    _check_split(split)
    return _scene(split, index, seed)[0]


def example(split: str, index: int, image_size: int = 32, seed: int = 0) -> dict:
    """Example `index` of `split` as stored (see `ShapeWorld._info`); a pure function of its
    arguments, drawn from `numpy.random.default_rng([seed, SPLITS.index(split), index])`:
    first the scene, then the questions, then the captions."""
    _check_split(split)
    sc, rng = _scene(split, index, seed)
    image, boxes = render_lib.render(sc, image_size)
    mentionable = SEEN_PAIRS if split != "test_compositional" else tuple(
        (s, c) for s in SHAPES for c in COLOUR_NAMES)
    objs, pad = sc.objects, MAX_OBJECTS - len(sc.objects)
    qa = questions(objs, rng, mentionable)
    slots = lambda xs, fill, dtype: np.asarray(list(xs) + [fill] * pad, dtype)  # noqa: E731
    return {
        "image": image,
        "num_objects": np.int32(len(objs)),
        "shape": slots((o.shape for o in objs), -1, np.int32),
        "colour": slots((o.colour for o in objs), -1, np.int32),
        "size": slots((o.size for o in objs), -1, np.int32),
        "boxes": np.concatenate([boxes, np.zeros((pad, 4), np.float32)]),
        "center": slots(([o.x * image_size, o.y * image_size] for o in objs), [0, 0], np.float32),
        "radius": slots((o.radius * image_size for o in objs), 0, np.float32),
        "rotation": slots((o.rotation for o in objs), 0, np.float32),
        "captions": [_articles(c) for c in captions(objs, rng)],
        "questions": [_articles(x[0]) for x in qa],
        "answers": [x[1] for x in qa],
        "question_types": [x[2] for x in qa],
    }


@dataclasses.dataclass(eq=False)
class ShapeWorldConfig(tfds.core.BuilderConfig):
    """A ShapeWorld config: the image side S."""
    image_size: int = 32


class ShapeWorld(tfds.core.GeneratorBasedBuilder):
    """ShapeWorld (see the module docstring): configs "size_32" and "size_64"; examples are
    stored in index order (key = index).

    Args:
      split_sizes: examples per split, for the splits given (default DEFAULT_SPLIT_SIZES);
        tests build small ones.
      seed: the generator seed (default 0).
    The prepared data does not record `split_sizes` or `seed` (as `pycorpus.PythonStdlib` does
    not record its `root`), so give such a build its own data directory: `load` then reads it.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "A diamond replaces the hexagon; rotations within 20 degrees."}
    BUILDER_CONFIGS = [ShapeWorldConfig(name=f"size_{s}", description=f"{s}x{s} images",
                                        image_size=s) for s in IMAGE_SIZES]

    def __init__(self, *, split_sizes: Optional[dict] = None, seed: int = 0, **kwargs):
        sizes = {**DEFAULT_SPLIT_SIZES, **(split_sizes or {})}
        if set(sizes) != set(SPLITS) or not all(isinstance(n, int) and n >= 1
                                                for n in sizes.values()):
            raise ConfigError(f"split_sizes={split_sizes!r}; allowed: positive ints for "
                              f"{', '.join(SPLITS)}")
        self._split_sizes, self._seed = sizes, seed
        super().__init__(**kwargs)

    def _info(self):
        s, m = self.builder_config.image_size, MAX_OBJECTS
        tensor = lambda shape, dtype: tfds.features.Tensor(shape=shape, dtype=dtype)  # noqa: E731
        texts = tfds.features.Sequence(tfds.features.Text())
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, disable_shuffling=True,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8,
                                              encoding=tfds.features.Encoding.ZLIB),
                "num_objects": tfds.features.Scalar(np.int32),
                "shape": tensor((m,), np.int32), "colour": tensor((m,), np.int32),
                "size": tensor((m,), np.int32), "boxes": tensor((m, 4), np.float32),
                "center": tensor((m, 2), np.float32), "radius": tensor((m,), np.float32),
                "rotation": tensor((m,), np.float32), "captions": texts, "questions": texts,
                "answers": texts, "question_types": texts,
            }))

    def _split_generators(self, dl_manager):
        del dl_manager  # generated: nothing to download
        return {s: self._generate_examples(s, n) for s, n in self._split_sizes.items()}

    def _generate_examples(self, split: str, count: int):
        size = self.builder_config.image_size
        bar = tqdm(range(count), desc=f"ShapeWorld {size}x{size} {split}", unit="image",
                   mininterval=0.5 if sys.stderr.isatty() else 10.0)
        for i in bar:
            yield i, example(split, i, size, self._seed)


def _check_image_size(image_size: int) -> None:
    if image_size not in IMAGE_SIZES:
        raise ConfigError(f"image_size={image_size!r}; allowed: {IMAGE_SIZES}")


@functools.lru_cache(maxsize=8)
def _prepared(image_size: int, data_dir_path: str) -> ShapeWorld:
    from jaxzoo.data import tfds_utils

    return tfds_utils.prepare(ShapeWorld, data_dir_path, config=f"size_{image_size}")


def builder(image_size: int = 32, data_dir=None) -> ShapeWorld:
    """The prepared builder: generated on first use (under a file lock), then read from disk."""
    from jaxzoo.data import tfds_utils

    _check_image_size(image_size)
    return _prepared(image_size, str(tfds_utils.data_dir(data_dir)))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}; allowed: {', '.join(map(repr, SPLITS))}")


def _str(x) -> str:
    return x if isinstance(x, str) else bytes(x).decode("utf-8")


ARRAY_KEYS = ("image", "num_objects", "shape", "colour", "size", "boxes", "center", "radius",
              "rotation")
TEXT_KEYS = ("captions", "questions", "answers", "question_types")


def collate(examples: Sequence[dict]) -> dict:
    """Stacks examples (as stored or as read back) into `load`'s dict of arrays and lists."""
    out = {k: np.stack([np.asarray(e[k]) for e in examples]) for k in ARRAY_KEYS}
    out["num_objects"] = out["num_objects"].astype(np.int32)
    out["mask"] = out["shape"] >= 0
    label = np.where(out["mask"], pair_index(out["shape"], out["colour"]), -1)
    out["label"] = label.astype(np.int32)
    out.update({k: [[_str(t) for t in e[k]] for e in examples] for k in TEXT_KEYS})
    return out


def downsample(images, size: int) -> np.ndarray:
    """uint8 [N, S, S, C] -> uint8 [N, size, size, C], each pixel the rounded mean of an
    (S / size)^2 square (box filtering: colours stay exact inside objects)."""
    images = np.asarray(images)
    n, s, _, c = images.shape
    f = s // size
    if f * size != s:
        raise ValueError(f"cannot average {s}x{s} images down to {size}x{size}")
    if f == 1:
        return images
    mean = images.reshape(n, size, f, size, f, c).astype(np.float32).mean((2, 4))
    return np.round(mean).astype(np.uint8)


def _stored_size(image_size: int) -> int:
    if image_size not in LOAD_SIZES:
        raise ConfigError(f"image_size={image_size!r}; allowed: {LOAD_SIZES}")
    return max(image_size, IMAGE_SIZES[0])


def load(split: str, image_size: int = 32, data_dir=None) -> dict:
    """The whole `split` as arrays and lists (see the module docstring); generates the dataset
    on first use (under a minute, no download). `image_size` 16 averages the 32x32 images over
    2x2 pixels (`downsample`) and halves boxes, centres and radii."""
    _check_split(split)
    stored = _stored_size(image_size)
    source = builder(stored, data_dir).as_data_source(split=split)
    data = collate(source.__getitems__(range(len(source))))
    if stored != image_size:
        data["image"] = downsample(data["image"], image_size)
        for key in ("boxes", "center", "radius"):
            data[key] = data[key] * np.float32(image_size / stored)
    return data


def tokenizer(image_size: int = 32, data_dir=None):
    """The ShapeWorld `tokenizers.Tokenizer`, trained on first use and saved as tokenizer.json
    in the dataset's directory, then always loaded with `Tokenizer.from_file`.

    Byte-level BPE (GPT-2's scheme; vocabulary <= TOKENIZER_VOCAB_SIZE, about 420 on the default
    train split) trained on every train caption, question and answer, with a lowercasing
    normaliser, the byte-level whitespace-and-punctuation pre-tokenizer and decoder (decoding
    gives back the text exactly; no [UNK] is ever needed), SPECIAL_TOKENS as ids 0..6
    ([PAD] = 0) and a post-processor that adds [BOS] before and [EOS] after every text (pairs:
    [BOS] a [SEP] b [EOS]). Byte-level BPE rather than WordPiece because its training is
    deterministic: `tokenizers`' WordPiece trainer numbers its "##" pieces in hash order, so two
    builds of the same data would get different vocabularies.
    """
    from tokenizers import (Tokenizer, decoders, models, normalizers, pre_tokenizers, processors,
                            trainers)

    image_size = _stored_size(image_size)  # the same texts at every size
    path = pathlib.Path(builder(image_size, data_dir).data_dir) / "tokenizer.json"
    if not path.is_file():
        train = load("train", image_size, data_dir)
        texts = [t for k in ("captions", "questions", "answers") for row in train[k] for t in row]
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(texts, trainers.BpeTrainer(
            vocab_size=TOKENIZER_VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
        bos, eos, sep = (tok.token_to_id(t) for t in ("[BOS]", "[EOS]", "[SEP]"))
        tok.post_processor = processors.TemplateProcessing(
            single="[BOS] $A [EOS]", pair="[BOS] $A [SEP] $B [EOS]",
            special_tokens=[("[BOS]", bos), ("[EOS]", eos), ("[SEP]", sep)])
        tmp = path.with_name(f".tokenizer.json.{os.getpid()}.tmp")
        tok.save(str(tmp))
        os.replace(tmp, path)  # atomic: a concurrent reader sees no file or the whole file
    return Tokenizer.from_file(str(path))


def encode(tok, texts: Sequence[str], max_len: int, pad_id: Optional[int] = None):
    """`(ids int32 [N, max_len], lengths int32 [N])` for any `tokenizers.Tokenizer`.

    Special tokens come from the tokenizer's own post-processor (ShapeWorld's: [BOS] ... [EOS]).
    A longer text keeps its first max_len - 1 tokens and its last token (the [EOS]); rows are
    padded after `lengths[i]` tokens with `pad_id` (default: the id of "[PAD]", else 0).
    """
    if max_len < 2:
        raise ValueError(f"max_len={max_len} must be >= 2 (room for [BOS] and [EOS])")
    if pad_id is None:
        pad_id = tok.token_to_id("[PAD]") or 0
    ids = np.full((len(texts), max_len), pad_id, np.int32)
    lengths = np.zeros(len(texts), np.int32)
    for i, enc in enumerate(tok.encode_batch(list(texts))):
        row = [t for t, m in zip(enc.ids, enc.attention_mask) if m]  # drop a file's own padding
        if len(row) > max_len:
            row = row[:max_len - 1] + row[-1:]
        ids[i, :len(row)], lengths[i] = row, len(row)
    return ids, lengths


def save_picture(path, data: dict, num: int = 16, ncols: int = 4, scale: int = 4):
    """shapeworld.png: the first `num` images of `data` (as `load` returns) upscaled `scale` x,
    with their boxes and first captions (`shapeworld_render.save_picture` gives the size)."""
    n = min(num, len(data["image"]))
    first = [c[0] for c in data["captions"][:n]]
    return render_lib.save_picture(path, data["image"][:n], data["boxes"][:n],
                                   data["num_objects"][:n], first, ncols=ncols, scale=scale)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line and status 2, like every jaxzoo command
        raise ConfigError(message)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python -m jaxzoo.data.shapeworld --out shapeworld.png [--image_size 32] [--split train]
    [--num 16] [--seed 0]`: draws the split's first examples (generated directly, the same as the
    dataset's) with boxes and first captions. A bad argument prints `error: ...` and exits 2."""
    parser = _ArgumentParser(prog="python -m jaxzoo.data.shapeworld", description=main.__doc__)
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--split", default="train")
    parser.add_argument("--num", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    try:
        args = parser.parse_args(argv)
        _check_image_size(args.image_size)
        _check_split(args.split)
        if not 1 <= args.num <= 256:
            raise ConfigError(f"num={args.num}; allowed: 1..256")
        out = pathlib.Path(args.out)
        if not out.parent.is_dir():
            raise ConfigError(f"--out {out}: directory {out.parent} does not exist")
        data = collate([example(args.split, i, args.image_size, args.seed)
                        for i in range(args.num)])
        print(save_picture(out, data, num=args.num))
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
