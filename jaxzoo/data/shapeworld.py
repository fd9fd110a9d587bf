"""ShapeWorld: the embedded image-text-box world the vision-language families train on.

Images of 1-4 coloured shapes on a textured background (`jaxzoo.data.shapeworld_render`: 6
shapes, 6 colours, 2 sizes, positions, small rotations), each with 5 true captions (attributes,
sizes, relations, counts, lists), 4 question-answer pairs (colour, shape, count, existence,
relation), and per object its shape, colour, size and box. Generated deterministically (example
i of split k from numpy.random.default_rng([seed, k, i])) on first use and cached as a TFDS
array_record dataset (no TensorFlow, no download), with a progress bar: about 25 s for the 32 x 32
config's 24,000 images on one core.

Splits: train (20,000), validation (1,000), test (2,000) draw only the 30 seen shape-colour
pairs; test_compositional (1,000) draws only the 6 `HELD_OUT_PAIRS` ("yellow circle", "blue
triangle", ...), never seen in training, so compositional generalisation can be measured. About
a third of the images hold a single object (zero-shot classification of shape-colour classes).

`load(split, image_size)` returns the whole split as arrays:
  image uint8 [N, S, S, 3]; num_objects int32 [N];
  shape, colour, size int32 [N, 4] (indices into SHAPES, COLOUR_NAMES, SIZES; -1 past
  num_objects); box float32 [N, 4, 4] ([x0, y0, x1, y1] pixels, x1/y1 exclusive; 0 past
  num_objects); captions list[list[str]] (5 each); questions, answers list[list[str]] (4 each).
`tokenizer(image_size)` trains (once) a WordPiece tokenizer with Hugging Face `tokenizers` on the
train captions and questions and saves it as a standard tokenizer.json; `encode` pads/truncates.
`python -m jaxzoo.data.shapeworld --out shapeworld.png` draws a grid with boxes and captions.
"""

from __future__ import annotations

import functools
import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds
from tqdm.auto import tqdm

from jaxzoo.data import shapeworld_render as R
from jaxzoo.data.shapeworld_render import (COLOUR_NAMES, HELD_OUT_PAIRS, SEEN_PAIRS, SHAPES,
                                           SIZES)
from jaxzoo.errors import ConfigError, UserError

__all__ = ["COLOUR_NAMES", "HELD_OUT_PAIRS", "SEEN_PAIRS", "SHAPES", "SIZES", "SPLITS",
           "class_names", "encode", "load", "pair_index", "save_picture", "tokenizer"]

SPLITS = {"train": 20_000, "validation": 1_000, "test": 2_000, "test_compositional": 1_000}
IMAGE_SIZES = (32, 64)
NUM_CAPTIONS, NUM_QUESTIONS = 5, 4
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]")
PAD, UNK, CLS, SEP, MASK, BOS, EOS = range(len(SPECIAL_TOKENS))


def class_names() -> list[str]:
    """"colour shape" for every shape-colour pair, in `pair_index` order (36 classes)."""
    return [f"{c} {s}" for s in SHAPES for c in COLOUR_NAMES]


def pair_index(shape, colour):
    """Class index of shape-colour pairs (ints or arrays of SHAPES / COLOUR_NAMES indices)."""
    return np.asarray(shape) * len(COLOUR_NAMES) + np.asarray(colour)


def make_example(split: str, index: int, image_size: int, seed: int = 0) -> dict:
    """Example `index` of `split` as TFDS features (a pure function of its arguments)."""
    k = list(SPLITS).index(split)
    rng = np.random.default_rng([seed, k, index])
    pairs = HELD_OUT_PAIRS if split == "test_compositional" else SEEN_PAIRS
    objects = R.sample_objects(image_size, rng, pairs)
    image = R.render(objects, image_size, rng)
    qa = R.questions(objects, rng, pairs, NUM_QUESTIONS)
    pad = R.MAX_OBJECTS - len(objects)
    ids = lambda names, values: [names.index(v) for v in values] + [-1] * pad  # noqa: E731
    return {
        "image": image,
        "num_objects": len(objects),
        "shape": np.asarray(ids(SHAPES, [o.shape for o in objects]), np.int32),
        "colour": np.asarray(ids(COLOUR_NAMES, [o.colour for o in objects]), np.int32),
        "size": np.asarray(ids(SIZES, [o.size for o in objects]), np.int32),
        "box": np.concatenate([np.stack([R.box(o, image_size) for o in objects]),
                               np.zeros((pad, 4), np.float32)]),
        "captions": "\n".join(R.captions(objects, rng, NUM_CAPTIONS)),
        "questions": "\n".join(q for q, _ in qa),
        "answers": "\n".join(a for _, a in qa),
    }


class ShapeWorld(tfds.core.GeneratorBasedBuilder):
    """ShapeWorld (see the module docstring); one config per image size.

    Args:
      split_sizes: examples per split (default `SPLITS`); tests build small ones. The prepared
        data does not record them, so give such a build its own `data_dir`.
      seed: the generator seed (0).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=f"size_{s}", description=f"{s}x{s} images")
                       for s in IMAGE_SIZES]

    def __init__(self, *, split_sizes=None, seed: int = 0, **kwargs):
        self._split_sizes, self._seed = dict(split_sizes or SPLITS), seed
        super().__init__(**kwargs)

    @property
    def image_size(self) -> int:
        return int(self.builder_config.name.split("_")[1])

    def _info(self):
        s, m = self.image_size, R.MAX_OBJECTS
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, disable_shuffling=True,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(s, s, 3), dtype=np.uint8),
                "num_objects": tfds.features.Scalar(dtype=np.int32),
                "shape": tfds.features.Tensor(shape=(m,), dtype=np.int32),
                "colour": tfds.features.Tensor(shape=(m,), dtype=np.int32),
                "size": tfds.features.Tensor(shape=(m,), dtype=np.int32),
                "box": tfds.features.Tensor(shape=(m, 4), dtype=np.float32),
                "captions": tfds.features.Text(),
                "questions": tfds.features.Text(),
                "answers": tfds.features.Text(),
            }))

    def _split_generators(self, dl_manager):
        del dl_manager  # generated, nothing to download
        return {split: self._generate_examples(split, n) for split, n in self._split_sizes.items()}

    def _generate_examples(self, split: str, count: int):
        for i in tqdm(range(count), desc=f"shapeworld {self.image_size}px {split}", unit="image",
                      mininterval=1.0 if sys.stderr.isatty() else 10.0):
            yield i, make_example(split, i, self.image_size, self._seed)


def _check(split: str, image_size: int) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split={split!r}; allowed: {tuple(SPLITS)}")
    if image_size not in IMAGE_SIZES:
        raise ConfigError(f"image_size={image_size!r}; allowed: {IMAGE_SIZES}")


@functools.lru_cache(maxsize=8)
def _prepared(image_size: int, data_dir: str) -> ShapeWorld:
    from jaxzoo.data import tfds_utils

    return tfds_utils.prepare(ShapeWorld, data_dir, config=f"size_{image_size}")


def _text(x) -> str:
    return x if isinstance(x, str) else bytes(x).decode("utf-8")


def load(split: str, image_size: int = 32, data_dir=None) -> dict:
    """The whole split as arrays and lists (see the module docstring); built on first use."""
    from jaxzoo.data import tfds_utils

    _check(split, image_size)
    source = _prepared(image_size, str(tfds_utils.data_dir(data_dir))).as_data_source(split=split)
    rows = source.__getitems__(range(len(source)))
    out = {k: np.stack([np.asarray(r[k]) for r in rows])
           for k in ("image", "num_objects", "shape", "colour", "size", "box")}
    for k in ("captions", "questions", "answers"):
        out[k] = [_text(r[k]).split("\n") for r in rows]
    return out


def tokenizer_path(image_size: int = 32, data_dir=None) -> pathlib.Path:
    from jaxzoo.data import tfds_utils

    return tfds_utils.data_dir(data_dir) / "shapeworld_tokenizer" / f"size_{image_size}.json"


def tokenizer(image_size: int = 32, data_dir=None, vocab_size: int = 256):
    """A WordPiece `tokenizers.Tokenizer` (lowercase, whitespace and punctuation pre-tokenizer,
    SPECIAL_TOKENS first so [PAD] = 0) trained on the train captions, questions and answers,
    saved once as a standard tokenizer.json and loaded from it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    path = tokenizer_path(image_size, data_dir)
    if not path.is_file():
        data = load("train", image_size, data_dir)
        texts = [t for key in ("captions", "questions", "answers") for row in data[key] for t in row]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(texts, trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tok.save(str(tmp))
        tmp.replace(path)
    return Tokenizer.from_file(str(path))


def encode(tok, texts, max_len: int, bos: bool = True):
    """(ids int32 [N, max_len], lengths int32 [N]): [BOS] (if `bos`) + the text's tokens +
    [EOS], truncated to keep [EOS] last, padded with [PAD] = 0."""
    ids = np.full((len(texts), max_len), PAD, np.int32)
    lengths = np.zeros(len(texts), np.int32)
    for i, enc in enumerate(tok.encode_batch(list(texts), add_special_tokens=False)):
        row = ([BOS] if bos else []) + enc.ids[:max_len - 1 - bos] + [EOS]
        ids[i, :len(row)], lengths[i] = row, len(row)
    return ids, lengths


def save_picture(path, data: dict, num: int = 16, cols: int = 4, scale: int = 4) -> pathlib.Path:
    """A grid of the first `num` images (upscaled `scale` x) with their boxes and first caption."""
    from PIL import Image, ImageDraw

    num = min(num, len(data["image"]))
    side = data["image"].shape[1] * scale
    cell_h = side + 14
    rows = -(-num // cols)
    canvas = Image.new("RGB", (cols * (side + 4), rows * (cell_h + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(num):
        x, y = (i % cols) * (side + 4), (i // cols) * (cell_h + 4)
        img = Image.fromarray(data["image"][i]).resize((side, side), Image.NEAREST)
        canvas.paste(img, (x, y))
        for k in range(int(data["num_objects"][i])):
            x0, y0, x1, y1 = (float(v) * scale for v in data["box"][i, k])
            draw.rectangle([x + x0, y + y0, x + x1 - 1, y + y1 - 1], outline=(0, 0, 0))
        draw.text((x + 1, y + side + 1), data["captions"][i][0][:side // 6], fill=(0, 0, 0))
    path = pathlib.Path(path)
    canvas.save(path)
    return path


def main(argv) -> None:
    """`--out PATH [--image_size 32|64] [--split SPLIT] [--data_dir DIR]`: writes the picture."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jaxzoo.data.shapeworld")
    parser.add_argument("--out", default="shapeworld.png")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--split", default="train")
    parser.add_argument("--data_dir", default=None)
    args = parser.parse_args(argv)
    try:
        _check(args.split, args.image_size)
        path = save_picture(args.out, load(args.split, args.image_size, args.data_dir))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
