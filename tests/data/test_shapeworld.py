"""ShapeWorld: determinism, tight boxes, the compositional split, true captions and answers,
the tokenizer, the picture and the command line. Builds tiny splits in a tmp data_dir."""

import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from jaxzoo.data import shapeworld as sw
from jaxzoo.data import shapeworld_render as R
from jaxzoo.data import tfds_utils
from jaxzoo.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[2]
SMALL = {"train": 120, "validation": 24, "test": 24, "test_compositional": 60}
SEEN_SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    tfds_utils.prepare(sw.ShapeWorld, root, config="size_32", split_sizes=SMALL)
    return root


@pytest.fixture(scope="module")
def splits(data_dir):
    return {s: sw.load(s, 32, data_dir) for s in sw.SPLITS}


def _array_records(builder) -> dict:
    return {p.name: p.read_bytes() for p in pathlib.Path(builder.data_dir).glob("*.array_record*")}


# --- determinism ----------------------------------------------------------------------------

def test_examples_are_a_pure_function_of_seed_split_and_index():
    a, b = sw.example("train", 7, 32), sw.example("train", 7, 32)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    for other in (sw.example("train", 7, 32, seed=1), sw.example("train", 8, 32),
                  sw.example("validation", 7, 32)):
        assert not np.array_equal(a["image"], other["image"])
        assert not np.array_equal(a["center"], other["center"])
    # The 64 x 64 config renders the same scene: same objects and text, twice the geometry.
    big = sw.example("train", 7, 64)
    for key in ("shape", "colour", "size", "rotation", "captions", "questions", "answers"):
        np.testing.assert_array_equal(np.asarray(big[key]), np.asarray(a[key]))
    np.testing.assert_allclose(big["center"], 2 * a["center"], rtol=1e-6)
    assert big["image"].shape == (64, 64, 3)


def test_two_builds_are_byte_identical_and_another_seed_differs(tmp_path):
    sizes = {"train": 12, "validation": 4, "test": 4, "test_compositional": 4}
    build = lambda name, seed=0: tfds_utils.prepare(  # noqa: E731
        sw.ShapeWorld, tmp_path / name, config="size_32", split_sizes=sizes, seed=seed)
    first, second, other = build("a"), build("b"), build("c", seed=1)
    records = _array_records(first)
    assert len(records) == 4 and records == _array_records(second)
    assert _array_records(other).keys() == records.keys() and _array_records(other) != records
    # The tokenizer trains deterministically too: the same tokenizer.json from both builds.
    sw.tokenizer(32, tmp_path / "a"), sw.tokenizer(32, tmp_path / "b")
    files = [pathlib.Path(b.data_dir, "tokenizer.json").read_bytes() for b in (first, second)]
    assert files[0] == files[1]


def test_load_returns_what_example_makes(splits):
    data = splits["validation"]
    n = SMALL["validation"]
    assert data["image"].shape == (n, 32, 32, 3) and data["image"].dtype == np.uint8
    assert data["boxes"].shape == (n, 4, 4) and data["boxes"].dtype == np.float32
    assert data["center"].shape == (n, 4, 2) and data["mask"].shape == (n, 4)
    for i in (0, 5, n - 1):
        ref = sw.example("validation", i, 32)
        for key in ("image", "shape", "colour", "size", "boxes", "center", "radius", "rotation"):
            np.testing.assert_array_equal(data[key][i], ref[key], err_msg=key)
        for key in ("captions", "questions", "answers", "question_types"):
            assert data[key][i] == ref[key]
    for d in splits.values():
        k = d["num_objects"]
        assert np.array_equal(d["mask"], np.arange(4) < k[:, None])
        assert np.all(d["shape"][~d["mask"]] == -1) and np.all(d["label"][~d["mask"]] == -1)
        assert np.all(d["boxes"][~d["mask"]] == 0)
        names = sw.class_names()
        for i, j in zip(*np.nonzero(d["mask"])):
            s, c = sw.SHAPES[d["shape"][i, j]], sw.COLOUR_NAMES[d["colour"][i, j]]
            assert names[d["label"][i, j]] == f"{c} {s}" and sw.pair_index(s, c) == d["label"][i, j]


def test_bad_split_and_image_size_are_user_errors(data_dir):
    with pytest.raises(ConfigError, match="split='val'"):
        sw.load("val", 32, data_dir)
    with pytest.raises(ConfigError, match="image_size=48"):
        sw.load("train", 48, data_dir)
    with pytest.raises(ConfigError, match="split_sizes"):
        sw.ShapeWorld(data_dir=str(data_dir), config="size_32", split_sizes={"train": 0})
    with pytest.raises(ConfigError, match="split_sizes"):
        sw.ShapeWorld(data_dir=str(data_dir), config="size_32", split_sizes={"val": 10})


# --- boxes ----------------------------------------------------------------------------------

def _reference_alpha(obj, size, n=R.SUPERSAMPLE):
    """The object alone over the whole image: its outline moved into pixels and tested with
    matplotlib's point-in-polygon (discs with their equation) at n x n samples per pixel."""
    centre, radius = np.array([obj.x, obj.y]) * size, obj.radius * size
    samples = (np.arange(size * n) + 0.5) / n
    x, y = np.meshgrid(samples, samples)
    if R.SHAPES[obj.shape] == "circle":
        hit = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius ** 2
    else:
        t = np.radians(obj.rotation)
        turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])  # clockwise, y down
        outline = R.POLYGONS[R.SHAPES[obj.shape]] @ turn.T * radius + centre
        hit = MplPath(outline).contains_points(np.stack([x.ravel(), y.ravel()], 1)).reshape(x.shape)
    return hit.reshape(size, n, size, n).mean((1, 3))


@pytest.mark.parametrize("size", [32, 64])
def test_every_box_is_the_tight_box_of_its_objects_pixels(size):
    checked = set()
    cases = [("train", i) for i in range(25)] + [("test_compositional", i) for i in range(10)]
    for split, index in cases:
        ex, scene = sw.example(split, index, size), sw.scene(split, index)
        assert ex["num_objects"] == len(scene.objects)
        covered = np.zeros((size, size), bool)
        for k, obj in enumerate(scene.objects):
            alpha = _reference_alpha(obj, size)
            rows, cols = np.nonzero(alpha > 0)
            want = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            np.testing.assert_array_equal(ex["boxes"][k], want, err_msg=f"{split} {index} {k}")
            np.testing.assert_allclose(R.full_alpha(obj, size), alpha, atol=1e-6)
            x0, y0, x1, y1 = want
            covered[y0:y1, x0:x1] = True
            cx, cy = ex["center"][k]
            assert x0 <= cx < x1 and y0 <= cy < y1  # the box holds the centre
            checked.add((R.SHAPES[obj.shape], obj.rotation != 0))
        # Every pixel the objects changed (against the bare background) lies inside a box.
        bare = np.round(np.clip(R.background(scene.background_seed, size), 0, 1) * 255)
        changed = np.any(ex["image"] != bare.astype(np.uint8), axis=-1)
        assert changed.any() and not np.any(changed & ~covered)
    assert {s for s, _ in checked} == set(R.SHAPES) and {r for _, r in checked} == {True, False}


def test_objects_do_not_overlap_and_stay_inside_the_image():
    for i in range(300):
        objs = sw.scene("train", i).objects
        for k, a in enumerate(objs):
            assert a.radius <= a.x <= 1 - a.radius and a.radius <= a.y <= 1 - a.radius
            for b in objs[k + 1:]:
                assert np.hypot(a.x - b.x, a.y - b.y) >= a.radius + b.radius + R.GAP - 1e-12


# --- splits ---------------------------------------------------------------------------------

def test_held_out_pairs_hold_each_shape_and_colour_once():
    assert sorted(s for s, _ in sw.HELD_OUT_PAIRS) == sorted(sw.SHAPES)
    assert sorted(c for _, c in sw.HELD_OUT_PAIRS) == sorted(sw.COLOUR_NAMES)
    assert len(sw.SEEN_PAIRS) == 30 and not set(sw.SEEN_PAIRS) & set(sw.HELD_OUT_PAIRS)
    assert len(sw.class_names()) == 36 == len(set(sw.class_names()))


def _pairs(data) -> set:
    m = data["mask"]
    return {(sw.SHAPES[s], sw.COLOUR_NAMES[c]) for s, c in zip(data["shape"][m], data["colour"][m])}


_PAIR_WORDS = re.compile(rf"\b({'|'.join(sw.COLOUR_NAMES)}) ({'|'.join(sw.SHAPES)})")


def test_the_compositional_split_shares_no_pair_with_training(splits):
    held = set(sw.HELD_OUT_PAIRS)
    assert _pairs(splits["test_compositional"]) == held  # all six occur in 60 images
    seen = set()
    for split in SEEN_SPLITS:
        assert not _pairs(splits[split]) & held, split
        seen |= _pairs(splits[split])
        d = splits[split]
        texts = [t for k in ("captions", "questions", "answers") for row in d[k] for t in row]
        named = {(m[2], m[1]) for t in texts for m in _PAIR_WORDS.finditer(t)}
        assert named and not named & held, split  # no text names a held-out pair either
    assert len(seen) > 20
    # Over the full default splits (scenes only; rendering is not needed for the pairs).
    for split, count in sw.DEFAULT_SPLIT_SIZES.items():
        pairs = {(sw.SHAPES[o.shape], sw.COLOUR_NAMES[o.colour])
                 for i in range(count) for o in sw.scene(split, i).objects}
        assert pairs == (held if split == "test_compositional" else set(sw.SEEN_PAIRS)), split


def test_about_a_third_of_the_images_hold_one_object(splits):
    counts = np.array([len(sw.scene("train", i).objects) for i in range(4000)])
    fractions = np.bincount(counts, minlength=5)[1:] / len(counts)
    # 4000 draws: each fraction's standard deviation is below 0.008.
    np.testing.assert_allclose(fractions, R.NUM_OBJECTS_PROBS, atol=0.03)
    assert 0.3 < fractions[0] < 0.4  # CLIP's zero-shot test needs many one-object images
    for d in splits.values():
        assert np.any(d["num_objects"] == 1) and d["num_objects"].max() <= 4


# --- text -----------------------------------------------------------------------------------

NUMBER = {w: i for i, w in enumerate(("zero", "one", "two", "three", "four"))}
REL = "above|below|left of|right of"


def _objects(d, i) -> list[dict]:
    return [{"shape": sw.SHAPES[d["shape"][i, k]], "colour": sw.COLOUR_NAMES[d["colour"][i, k]],
             "size": sw.SIZES[d["size"][i, k]], "xy": d["center"][i, k]}
            for k in range(d["num_objects"][i])]


def _relation(a, b):
    """Independent of the library: the dominant axis of the centre offset, when it is 1.5 times
    the other; image y points down."""
    dx, dy = a["xy"] - b["xy"]
    if abs(dy) >= 1.5 * abs(dx):
        return "above" if dy < 0 else "below"
    if abs(dx) >= 1.5 * abs(dy):
        return "left of" if dx < 0 else "right of"
    return None


def _select(phrase, objs, plural=None):
    """Objects a noun phrase describes ("small red circle", "yellow stars", "red objects");
    `plural` asserts the noun's number."""
    *adjectives, noun = phrase.split()
    want = {}
    for word in adjectives:
        want["size" if word in sw.SIZES else "colour"] = word
        assert word in sw.SIZES + sw.COLOUR_NAMES, phrase
    singulars = {**{f"{s}s": s for s in sw.SHAPES + ("object", "shape")}, "crosses": "cross"}
    singular = singulars.get(noun, noun)
    if plural is not None:
        assert (singular != noun) == plural, phrase
    if singular not in ("object", "shape"):
        assert singular in sw.SHAPES, phrase
        want["shape"] = singular
    return [o for o in objs if all(o[k] == v for k, v in want.items())]


def _one(phrase, objs):
    (obj,) = _select(phrase, objs)  # "the ..." picks out exactly one object
    return obj


def _check_article(text):
    assert not re.search(r"\ba [aeiou]|\ban [^aeiou]", text), text


def _caption_is_true(caption, objs, first):
    _check_article(caption)
    if m := re.fullmatch(rf"(?:there is )?an? (.+) ({REL}) an? (.+)", caption):
        pairs = [(a, b) for a in _select(m[1], objs) for b in _select(m[3], objs) if a is not b]
        assert pairs and any(_relation(a, b) == m[2] for a, b in pairs), caption
        if first:  # the scene caption names every object with its size
            assert len(objs) == 2 and all(len(p.split()) == 3 for p in (m[1], m[3]))
        return "relation"
    if first:  # a list of every object with its size: "a large red circle, two small ..."
        parts = re.split(r", | and ", caption)
        total = 0
        for part in parts:
            number, phrase = part.split(" ", 1)
            n = 1 if number in ("a", "an") else NUMBER[number]
            assert len(phrase.split()) == 3 and len(_select(phrase, objs, plural=n > 1)) == n
            total += n
        assert total == len(objs), caption
        return "scene"
    if m := re.fullmatch(r"there (is|are) (\w+) (objects?)", caption):
        assert NUMBER[m[2]] == len(objs) and (m[1] == "is") == (m[2] == "one"), caption
        return "count"
    if m := re.fullmatch(r"(one|two|three|four) (.+)", caption):
        assert len(_select(m[2], objs, plural=m[1] != "one")) == NUMBER[m[1]], caption
        return "count"
    if m := re.fullmatch(r"(?:there is |a picture of )?an? (.+)", caption):
        assert _select(m[1], objs, plural=False), caption
        return "attribute or existence"
    raise AssertionError(f"unknown caption form: {caption!r}")


def test_captions_are_true_of_their_scene(splits):
    forms = set()
    for split, d in splits.items():
        for i, caps in enumerate(d["captions"]):
            objs = _objects(d, i)
            assert len(caps) == sw.NUM_CAPTIONS == len(set(caps))
            for k, cap in enumerate(caps):
                forms.add(_caption_is_true(cap, objs, first=k == 0))
            if len(objs) == 1:  # the first caption of a one-object image is its class
                o = objs[0]
                article = "an" if o["size"][0] in "aeiou" else "a"
                assert caps[0] == f"{article} {o['size']} {o['colour']} {o['shape']}"
    assert forms == {"relation", "scene", "count", "attribute or existence"}


def _answer(question, objs):
    _check_article(question)
    if m := re.fullmatch(r"what colour is the (.+)\?", question):
        return "colour", _one(m[1], objs)["colour"]
    if m := re.fullmatch(r"what shape is the (.+ object)\?", question):
        return "shape", _one(m[1], objs)["shape"]
    if m := re.fullmatch(r"how many (.+) are there\?", question):
        return "count", list(NUMBER)[len(_select(m[1], objs, plural=True))]
    if m := re.fullmatch(r"is there an? (.+)\?", question):
        return "existence", "yes" if _select(m[1], objs, plural=False) else "no"
    if m := re.fullmatch(r"where is the (.+) relative to the (.+)\?", question):
        return "relation", _relation(_one(m[1], objs), _one(m[2], objs))
    if m := re.fullmatch(rf"is the (.+) ({REL}) the (.+)\?", question):
        rel = _relation(_one(m[1], objs), _one(m[3], objs))
        assert rel is not None, question  # only clear relations are asked about
        return "relation", "yes" if rel == m[2] else "no"
    raise AssertionError(f"unknown question form: {question!r}")


def test_answers_are_true_of_their_scene(splits):
    types, answers = [], []
    for split, d in splits.items():
        rows = zip(d["questions"], d["answers"], d["question_types"])
        for i, (qs, ans, kinds) in enumerate(rows):
            objs = _objects(d, i)
            assert len(qs) == len(ans) == len(kinds) >= 2
            assert kinds == sorted(kinds, key=list(sw.QUESTION_TEMPLATES).index)  # one per type
            for q, a, kind in zip(qs, ans, kinds):
                assert _answer(q, objs) == (kind, a), (split, i, q, a)
                assert a in sw.ANSWERS
            types += kinds
            answers += ans
    assert set(types) == set(sw.QUESTION_TEMPLATES)
    yes, no = answers.count("yes"), answers.count("no")
    assert 0.3 < yes / (yes + no) < 0.7 and "zero" in answers


# --- tokenizer ------------------------------------------------------------------------------

def test_tokenizer_file_round_trip_and_special_tokens(data_dir, splits):
    from tokenizers import Tokenizer

    tok = sw.tokenizer(32, data_dir)
    path = pathlib.Path(sw.builder(32, data_dir).data_dir) / "tokenizer.json"
    again = Tokenizer.from_file(str(path))
    assert [tok.token_to_id(t) for t in sw.SPECIAL_TOKENS] == list(range(7))
    assert (sw.PAD, sw.BOS, sw.EOS) == (0, tok.token_to_id("[BOS]"), tok.token_to_id("[EOS]"))
    bos, eos = tok.token_to_id("[BOS]"), tok.token_to_id("[EOS]")
    texts = [t for d in splits.values() for k in ("captions", "questions", "answers")
             for row in d[k] for t in row]
    encodings = tok.encode_batch(texts)
    for enc, text in zip(encodings, texts):
        assert enc.ids[0] == bos and enc.ids[-1] == eos and bos not in enc.ids[1:-1]
        assert tok.decode(enc.ids) == text  # exact; [BOS] / [EOS] are skipped
        assert len(enc.ids) <= sw.MAX_TEXT_TOKENS
    assert [e.ids for e in again.encode_batch(texts)] == [e.ids for e in encodings]
    # Words seen in training are single tokens (the first word of a text has its own form).
    pieces = [len(tok.encode(w, add_special_tokens=False).ids) for w in ("what", "a red circle")]
    assert pieces == [1, 3]
    assert tok.encode("A RED Circle").ids == tok.encode("a red circle").ids  # lowercased
    assert 256 + 7 < tok.get_vocab_size() <= sw.TOKENIZER_VOCAB_SIZE


def test_encode_pads_truncates_and_keeps_eos(data_dir):
    tok = sw.tokenizer(32, data_dir)
    bos, eos, pad = (tok.token_to_id(t) for t in ("[BOS]", "[EOS]", "[PAD]"))
    texts = ["a small blue square above a green triangle", "two yellow stars", ""]
    full = [tok.encode(t).ids for t in texts]
    ids, lengths = sw.encode(tok, texts, max_len=6)
    assert ids.shape == (3, 6) and ids.dtype == np.int32 and lengths.dtype == np.int32
    assert lengths.tolist() == [6, min(6, len(full[1])), 2]
    assert ids[0].tolist() == full[0][:5] + [eos]  # truncated: [BOS] + 4 tokens + [EOS]
    assert ids[2].tolist() == [bos, eos, pad, pad, pad, pad]
    wide, wide_len = sw.encode(tok, texts, max_len=16)
    for row, n, want in zip(wide, wide_len, full):
        assert row[:n].tolist() == want and np.all(row[n:] == pad) and row[n - 1] == eos
    assert tok.decode(wide[1].tolist()) == "two yellow stars"
    with pytest.raises(ValueError, match="max_len"):
        sw.encode(tok, texts, max_len=1)


# --- picture and command line ---------------------------------------------------------------

def test_picture_has_the_documented_size_boxes_and_captions(splits, tmp_path):
    from PIL import Image

    data = splits["train"]
    path = sw.save_picture(tmp_path / "sw.png", data, num=6, ncols=4, scale=4)
    cell_w, cell_h = 128 + R.PAD, 128 + R.TEXT_HEIGHT + R.PAD
    with Image.open(path) as im:
        assert im.size == (4 * cell_w + R.PAD, 2 * cell_h + R.PAD)
        pixels = np.asarray(im.convert("RGB"))
    for i in range(6):
        left, top = R.PAD + (i % 4) * cell_w, R.PAD + (i // 4) * cell_h
        x0, y0, x1, y1 = (data["boxes"][i, 0] * 4).astype(int)
        assert np.all(pixels[top + y0, left + x0:left + x1] == 255)  # the box's top edge
        assert np.all(pixels[top + y1 - 1, left + x0:left + x1] == 255)  # and its bottom edge
        text = pixels[top + 128:top + 128 + R.TEXT_HEIGHT, left:left + 128]
        assert np.any(text < 128)  # the caption was written
    assert np.all(pixels[:, -R.PAD:] == 255)  # the right margin is blank


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "jaxzoo.data.shapeworld", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_command_line_writes_the_picture_and_reports_bad_arguments_in_one_line(tmp_path, capsys):
    out = tmp_path / "shapeworld.png"
    proc = _run_cli("--out", str(out), "--num", "8", "--image_size", "64")
    assert proc.returncode == 0, proc.stderr
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (4 * (256 + R.PAD) + R.PAD, 2 * (256 + R.TEXT_HEIGHT + R.PAD) + R.PAD)
    proc = _run_cli("--out", str(out), "--image_size", "48")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: image_size=48; allowed: (32, 64)\n"
    for argv, message in [(["--out", "x.png", "--split", "val"], "split='val'"),
                          (["--out", "x.png", "--image_size", "big"], "invalid int value: 'big'"),
                          (["--out", "x.png", "--colour", "red"], "unrecognized arguments"),
                          ([], "required: --out"),
                          (["--out", str(tmp_path / "missing" / "x.png")], "does not exist"),
                          (["--out", "x.png", "--num", "0"], "num=0")]:
        with pytest.raises(SystemExit) as e:
            sw.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and message in err, argv
        assert err.count("\n") == 1, err
