"""ShapeWorld: determinism, tight boxes, the compositional split, true captions and answers,
the tokenizer, the picture and the command line."""

import re

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from jaxzoo.data import shapeworld as sw
from jaxzoo.data import shapeworld_render as R
from jaxzoo.data import tfds_utils

SMALL = {"train": 240, "validation": 20, "test": 60, "test_compositional": 60}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    tfds_utils.prepare(sw.ShapeWorld, root, config="size_32", split_sizes=SMALL)
    return root


@pytest.fixture(scope="module")
def splits(data_dir):
    return {s: sw.load(s, 32, data_dir) for s in SMALL}


def _objects(split, index, size=32, seed=0):
    """The scene of an example, re-sampled from its generator exactly as make_example does."""
    rng = np.random.default_rng([seed, list(sw.SPLITS).index(split), index])
    pairs = R.HELD_OUT_PAIRS if split == "test_compositional" else R.SEEN_PAIRS
    return R.sample_objects(size, rng, pairs)


def test_examples_are_deterministic_and_seeded():
    a, b = sw.make_example("train", 7, 32), sw.make_example("train", 7, 32)
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    c = sw.make_example("train", 7, 32, seed=1)
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["image"], sw.make_example("train", 8, 32)["image"])


def test_the_builder_stores_what_make_example_makes(splits):
    ref = sw.make_example("validation", 3, 32)
    got = splits["validation"]
    np.testing.assert_array_equal(got["image"][3], ref["image"])
    np.testing.assert_array_equal(got["box"][3], ref["box"])
    assert got["captions"][3] == ref["captions"].split("\n")
    assert got["image"].dtype == np.uint8 and got["image"].shape == (20, 32, 32, 3)


def _alpha_independent(obj, size, n=R.SUPERSAMPLE):
    """Coverage of the whole image with matplotlib's point-in-polygon (or the disc equation)
    at the renderer's sub-pixel samples."""
    sub = (np.arange(size * n) + 0.5) / n
    x, y = np.meshgrid(sub, sub)
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    dx, dy = (x - obj.cx) / obj.r, (y - obj.cy) / obj.r
    u, v = c * dx + s * dy, -s * dx + c * dy
    if obj.shape == "circle":
        hit = u ** 2 + v ** 2 <= 1
    else:
        hit = MplPath(R._POLYGONS[obj.shape]).contains_points(
            np.stack([u.ravel(), v.ravel()], 1)).reshape(u.shape)
    return hit.reshape(size, n, size, n).mean((1, 3))


@pytest.mark.parametrize("size", [32, 64])
def test_every_box_is_the_tight_box_of_its_objects_pixels(size):
    checked = 0
    for i in range(30):
        objects = _objects("train", i, size)
        boxes = sw.make_example("train", i, size)["box"]
        for k, obj in enumerate(objects):
            alpha = _alpha_independent(obj, size)
            rows, cols = np.nonzero(alpha > 0)
            want = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            np.testing.assert_array_equal(boxes[k], want)
            checked += 1
    assert checked > 50


def test_the_compositional_split_holds_only_unseen_pairs(splits):
    held = {(R.SHAPES.index(s), R.COLOUR_NAMES.index(c)) for s, c in R.HELD_OUT_PAIRS}
    for split, data in splits.items():
        pairs = {(int(s), int(c)) for row_s, row_c, n in zip(data["shape"], data["colour"],
                                                            data["num_objects"])
                 for s, c in zip(row_s[:n], row_c[:n])}
        if split == "test_compositional":
            assert pairs <= held and len(pairs) >= 4
        else:
            assert not pairs & held, split
    assert len(R.SEEN_PAIRS) + len(R.HELD_OUT_PAIRS) == len(R.SHAPES) * len(R.COLOUR_NAMES)
    for shape in R.SHAPES:  # every shape and colour is still seen with other partners
        assert sum(s == shape for s, _ in R.SEEN_PAIRS) == 5
    for colour in R.COLOUR_NAMES:
        assert sum(c == colour for _, c in R.SEEN_PAIRS) == 5


def test_a_third_of_the_images_hold_one_object_and_padding_is_marked(splits):
    n = splits["train"]["num_objects"]
    assert 0.22 < np.mean(n == 1) < 0.45 and n.max() <= 4 and n.min() >= 1
    for row, k in zip(splits["train"]["shape"], n):
        assert np.all(row[:k] >= 0) and np.all(row[k:] == -1)


_NUM = {w: i for i, w in enumerate(R.NUMBERS)}
_COL = "|".join(R.COLOUR_NAMES)
_SHP = "|".join(R.SHAPES)


def _rel(a, b):  # dominant axis of the centre offset, image y pointing down
    dx, dy = a.cx - b.cx, a.cy - b.cy
    return ("above" if dy < 0 else "below") if abs(dy) >= abs(dx) else ("left of" if dx < 0 else "right of")


def _has(objs, colour, shape, size=None):
    return [o for o in objs if o.colour == colour and o.shape == shape and (size is None or o.size == size)]


def _true(caption, objs):
    m = re.fullmatch(rf"(?:there is )?a (?:(small|large) )?({_COL}) ({_SHP})", caption)
    if m:
        return bool(_has(objs, m[2], m[3], m[1]))
    m = re.fullmatch(rf"(\w+) ({_COL}) (\w+)", caption)
    if m and m[1] in _NUM:
        shape = next(s for s in R.SHAPES if R.PLURALS.get(s, s + "s") == m[3])
        return len(_has(objs, m[2], shape)) == _NUM[m[1]]
    m = re.fullmatch(r"(\w+) shapes?", caption)
    if m:
        return _NUM[m[1]] == len(objs)
    m = re.fullmatch(rf"a (?:(small|large) )?({_COL}) ({_SHP}) (above|below|left of|right of) "
                     rf"a ({_COL}) ({_SHP})", caption)
    if m:
        return any(_rel(a, b) == m[4] for a in _has(objs, m[2], m[3], m[1])
                   for b in _has(objs, m[5], m[6]))
    items = caption.split(" and ")
    if len(items) > 1:
        return len(items) == len(objs) and all(_true(it, objs) for it in items)
    raise AssertionError(f"unknown caption template: {caption!r}")


def test_captions_are_true_of_their_scene(splits):
    seen_templates = set()
    for split in ("train", "test_compositional"):
        for i, caps in enumerate(splits[split]["captions"]):
            objs = _objects(split, i)
            assert len(caps) == sw.NUM_CAPTIONS
            for cap in caps:
                assert _true(cap, objs), (split, i, cap, objs)
                seen_templates.add(re.sub(rf"\b({_COL}|{_SHP}|small|large)\b", "X", cap)[:12])
    assert len(seen_templates) >= 6


def _answer(question, objs):
    if m := re.fullmatch(rf"what colour is the ({_SHP})\?", question):
        (o,) = [o for o in objs if o.shape == m[1]]
        return o.colour
    if m := re.fullmatch(rf"what shape is the ({_COL}) object\?", question):
        (o,) = [o for o in objs if o.colour == m[1]]
        return o.shape
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        shape = next(s for s in R.SHAPES if R.PLURALS.get(s, s + "s") == m[1])
        return R.NUMBERS[sum(o.shape == shape for o in objs)]
    if m := re.fullmatch(rf"is there a ({_COL}) ({_SHP})\?", question):
        return "yes" if _has(objs, m[1], m[2]) else "no"
    if m := re.fullmatch(rf"is the ({_SHP}) (above|below|left of|right of) the ({_SHP})\?", question):
        (a,), (b,) = [o for o in objs if o.shape == m[1]], [o for o in objs if o.shape == m[3]]
        return "yes" if _rel(a, b) == m[2] else "no"
    raise AssertionError(f"unknown question template: {question!r}")


def test_answers_are_true_and_every_question_type_occurs(splits):
    kinds = set()
    for i, (qs, ans) in enumerate(zip(splits["train"]["questions"], splits["train"]["answers"])):
        objs = _objects("train", i)
        assert len(qs) == len(ans) == sw.NUM_QUESTIONS
        for q, a in zip(qs, ans):
            assert _answer(q, objs) == a, (i, q, a)
            kinds.add(q.split()[0] + " " + q.split()[1])
    assert {"what colour", "what shape", "how many", "is there", "is the"} <= kinds
    answers = [a for row in splits["train"]["answers"] for a in row]
    assert 0.2 < answers.count("yes") / max(1, answers.count("yes") + answers.count("no")) < 0.8


def test_tokenizer_round_trip_file_and_encode(data_dir):
    from tokenizers import Tokenizer

    tok = sw.tokenizer(32, data_dir)
    text = "a small blue square above a green triangle"
    assert tok.decode(tok.encode(text).ids) == text
    again = Tokenizer.from_file(str(sw.tokenizer_path(32, data_dir)))
    assert again.encode("how many crosses are there?").ids == tok.encode("how many crosses are there?").ids
    assert [tok.token_to_id(t) for t in sw.SPECIAL_TOKENS] == list(range(len(sw.SPECIAL_TOKENS)))
    ids, lengths = sw.encode(tok, [text, "two yellow stars"], max_len=6)
    assert ids.shape == (2, 6) and ids.dtype == np.int32
    assert ids[0, 0] == sw.BOS and ids[0, -1] == sw.EOS and lengths[0] == 6  # truncated, EOS kept
    n = lengths[1]
    assert ids[1, n - 1] == sw.EOS and np.all(ids[1, n:] == sw.PAD)
    assert tok.decode(ids[1, 1:n - 1].tolist()) == "two yellow stars"
    assert sw.encode(tok, ["a red circle"], 8, bos=False)[0][0, 0] != sw.BOS


def test_picture_and_command_line(splits, data_dir, tmp_path, capsys):
    from PIL import Image

    path = sw.save_picture(tmp_path / "sw.png", splits["train"], num=6, cols=3)
    with Image.open(path) as im:
        assert im.size == (3 * (128 + 4), 2 * (128 + 14 + 4))
    with pytest.raises(SystemExit) as e:
        sw.main(["--out", str(tmp_path / "x.png"), "--image_size", "48", "--data_dir", str(data_dir)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == "error: image_size=48; allowed: (32, 64)\n"
    sw.main(["--out", str(tmp_path / "y.png"), "--split", "test", "--data_dir", str(data_dir)])
    assert (tmp_path / "y.png").stat().st_size > 0
