"""The ShapeWorld attribute probe: its targets and loss, what each caption requires (on
hand-made readings), captions in ShapeWorld's own phrasing, batched reading, the cache, and a
tiny probe that learns to read real images."""

import json

import flax.serialization
import jax
import numpy as np
import pytest

from jaxzoo.data import shapeworld as sw
from jaxzoo.diffusion import probe
from jaxzoo.diffusion.probe import CaptionSpec, Group, Reading


@pytest.fixture(scope="module")
def splits():
    return {s: sw.load(s, 32) for s in ("train", "test", "test_compositional")}


@pytest.fixture(scope="module")
def specs(splits):
    return probe.caption_specs(splits["test"], splits["test_compositional"], per_category=40)


def _reading(objects: dict, n_images: int = 1) -> Reading:
    """A reading of one image (repeated): {(shape, colour): (count, (x, y), large)}."""
    count = np.zeros((1, probe.NUM_PAIRS), np.int32)
    center = np.zeros((1, probe.NUM_PAIRS, 2), np.float32)
    large = np.zeros((1, probe.NUM_PAIRS), bool)
    for (shape, colour), (n, xy, big) in objects.items():
        k = sw.pair_index(shape, colour)
        count[0, k], center[0, k], large[0, k] = n, xy, big
    rep = lambda a: np.repeat(a, n_images, 0)  # noqa: E731
    return Reading(rep(count), rep(center), rep(large), np.zeros((n_images, 4), np.float32))


def _oracle(data: dict, rows) -> Reading:
    """The reading a perfect probe gives of images ``rows`` of a `shapeworld.load` dict."""
    sub = {k: np.asarray(data[k])[rows] for k in ("image", "shape", "colour", "size", "center")}
    t = probe.targets(sub)
    return Reading(t["count"], t["center"], t["large"] > 0.5, np.zeros((len(rows), 4), np.float32))


# --- targets and loss ------------------------------------------------------------------------

def test_targets_of_a_hand_made_scene():
    circle, small, large = sw.SHAPES.index("circle"), 0, 1
    red, blue, green = (sw.COLOUR_NAMES.index(c) for c in ("red", "blue", "green"))
    star, square = sw.SHAPES.index("star"), sw.SHAPES.index("square")
    data = {  # image 0: a large and a small red circle, a small blue star; image 1: a green square
        "image": np.zeros((2, 32, 32, 3), np.uint8),
        "shape": np.array([[circle, circle, star, -1], [square, -1, -1, -1]]),
        "colour": np.array([[red, red, blue, -1], [green, -1, -1, -1]]),
        "size": np.array([[large, small, small, -1], [large, -1, -1, -1]]),
        "center": np.array([[[8, 8], [24, 16], [16, 24], [0, 0]],
                            [[4, 28], [0, 0], [0, 0], [0, 0]]], np.float32),
    }
    t = probe.targets(data)
    red_circle, blue_star = sw.pair_index("circle", "red"), sw.pair_index("star", "blue")
    green_square = sw.pair_index("square", "green")
    count = np.zeros((2, 36), np.int32)
    count[0, red_circle], count[0, blue_star], count[1, green_square] = 2, 1, 1
    np.testing.assert_array_equal(t["count"], count)
    center = np.zeros((2, 36, 2), np.float32)
    center[0, red_circle], center[0, blue_star] = (0.5, 0.375), (0.5, 0.75)
    center[1, green_square] = (0.125, 0.875)
    np.testing.assert_allclose(t["center"], center, atol=1e-7)
    expected_large = np.zeros((2, 36), np.float32)
    expected_large[0, red_circle], expected_large[1, green_square] = 0.5, 1.0
    np.testing.assert_array_equal(t["large"], expected_large)
    assert t["count"].dtype == np.int32 and t["center"].dtype == t["large"].dtype == np.float32


def test_targets_of_real_examples_count_every_object():
    data = sw.collate([sw.example("train", i, 32) for i in range(12)])
    t = probe.targets(data)
    np.testing.assert_array_equal(t["count"].sum(1), data["num_objects"])
    for i in range(12):
        for k in range(int(data["num_objects"][i])):
            assert t["count"][i, data["label"][i, k]] >= 1


def test_loss_ignores_centre_and_size_of_absent_pairs():
    t = {"count": np.zeros((2, 36), np.int32), "center": np.zeros((2, 36, 2), np.float32),
         "large": np.zeros((2, 36), np.float32)}
    t["count"][0, 5], t["center"][0, 5], t["large"][0, 5] = 1, (0.3, 0.6), 1.0
    rng = np.random.default_rng(0)
    out = {"count": rng.normal(size=(2, 36, 5)).astype(np.float32),
           "center": rng.uniform(size=(2, 36, 2)).astype(np.float32),
           "large": rng.normal(size=(2, 36)).astype(np.float32)}
    base = float(probe.probe_loss(out, t))
    assert np.isfinite(base)
    moved = {**out, "center": out["center"].copy(), "large": out["large"].copy()}
    moved["center"][0, 6] += 0.3
    moved["large"][1, 5] += 3.0
    assert float(probe.probe_loss(moved, t)) == pytest.approx(base, rel=1e-6)
    moved["center"][0, 5] += 0.3
    assert float(probe.probe_loss(moved, t)) > base + 0.1


# --- what a caption requires -----------------------------------------------------------------

def test_single_colour_shape_and_unseen_use_wildcards_and_size():
    r = _reading({("circle", "red"): (1, (0.5, 0.5), True), ("square", "blue"): (1, (0.2, 0.2), False)})
    ok = lambda *groups, **kw: probe.satisfied(CaptionSpec("", "single", groups, **kw), r, 0)  # noqa: E731
    assert ok(Group("circle", "red", "large"))
    assert not ok(Group("circle", "red", "small"))
    assert not ok(Group("circle", "blue", "large"))
    assert ok(Group("circle", "red", None))
    assert ok(Group(None, "red", None)) and ok(Group(None, "blue", None))
    assert not ok(Group(None, "green", None))
    assert ok(Group("square", None, "small")) and not ok(Group("square", None, "large"))
    assert ok(Group(None, None, None, 2)) and not ok(Group(None, None, None, 3))
    assert ok(Group(None, None, "large")) and not ok(Group(None, None, "large", 2))
    # a held-out pair is read like any other
    held = _reading({("circle", "purple"): (1, (0.5, 0.5), False)})
    assert probe.satisfied(CaptionSpec("", "unseen", (Group("circle", "purple", "small"),)), held, 0)
    assert not probe.satisfied(CaptionSpec("", "unseen", (Group("circle", "red", "small"),)), held, 0)


def test_counts_sum_over_matching_pairs_at_least_or_exactly():
    r = _reading({("star", "blue"): (2, (0.5, 0.5), False), ("circle", "blue"): (1, (0.1, 0.1), True),
                  ("star", "red"): (3, (0.8, 0.8), False)})
    ok = lambda g, exact: probe.satisfied(CaptionSpec("", "counting", (g,), exact=exact), r, 0)  # noqa: E731
    assert ok(Group("star", "blue", None, 2), True) and ok(Group("star", "blue", None, 2), False)
    assert ok(Group("star", "blue", None, 1), False) and not ok(Group("star", "blue", None, 1), True)
    assert not ok(Group("star", "blue", None, 3), False)
    assert ok(Group(None, "blue", None, 3), True)  # two stars and a circle
    assert ok(Group("star", None, None, 5), True) and not ok(Group("star", None, None, 4), True)
    assert ok(Group(None, "blue", "small", 2), True)  # the large circle does not count
    assert not ok(Group(None, "blue", "large", 2), False)


def test_long_captions_need_every_group_exactly():
    r = _reading({("diamond", "orange"): (1, (0.2, 0.2), True), ("cross", "green"): (2, (0.7, 0.7), False),
                  ("circle", "yellow"): (3, (0.5, 0.2), True)})
    spec = lambda *groups: CaptionSpec("", "long", groups, exact=True)  # noqa: E731
    diamond, crosses = Group("diamond", "orange", "large"), Group("cross", "green", "small", 2)
    assert probe.satisfied(spec(diamond, crosses), r, 0)
    assert probe.satisfied(spec(diamond, crosses, Group("circle", "yellow", None, 3)), r, 0)
    assert not probe.satisfied(spec(diamond, Group("cross", "green", "small", 1)), r, 0)
    assert not probe.satisfied(spec(Group("diamond", "orange", "small"), crosses), r, 0)
    assert not probe.satisfied(spec(diamond, crosses, Group("star", "red", "small")), r, 0)


@pytest.mark.parametrize("rel, a, b", [
    ("above", (0.5, 0.2), (0.55, 0.8)), ("below", (0.5, 0.8), (0.4, 0.2)),
    ("left of", (0.1, 0.5), (0.9, 0.3)), ("right of", (0.9, 0.5), (0.2, 0.6)),
    ("left of", (0.3, 0.45), (0.6, 0.5)),  # nearly level: the dominant axis decides
])
def test_relations_hold_one_way_only(rel, a, b):
    r = _reading({("circle", "red"): (1, a, False), ("star", "blue"): (1, b, True)})
    groups = (Group("circle", "red", "small"), Group("star", "blue", "large"))
    for other in sw.RELATIONS:
        spec = CaptionSpec("", "spatial", groups, other)
        assert probe.satisfied(spec, r, 0) == (other == rel), other
        swapped = CaptionSpec("", "spatial", groups[::-1], other)
        assert probe.satisfied(swapped, r, 0) == (other == sw.OPPOSITE[rel]), other
    # both objects must be there (with their sizes) for the relation to count
    missing = CaptionSpec("", "spatial", (groups[0], Group("star", "blue", "small")), rel)
    assert not probe.satisfied(missing, r, 0)


def test_relation_matches_shapeworld_on_its_ties():
    # shapeworld_render.relation prefers the vertical axis when |dy| >= ratio * |dx|; with the
    # ratio dropped a tie is vertical too.
    r = _reading({("circle", "red"): (1, (0.3, 0.3), False), ("star", "blue"): (1, (0.5, 0.5), False)})
    groups = (Group("circle", "red", None), Group("star", "blue", None))
    assert probe.satisfied(CaptionSpec("", "spatial", groups, "above"), r, 0)
    assert not probe.satisfied(CaptionSpec("", "spatial", groups, "left of"), r, 0)


def test_caption_accuracy_per_category_and_all():
    r = _reading({("circle", "red"): (1, (0.5, 0.5), True)}, n_images=3)
    specs = [CaptionSpec("a large red circle", "single", (Group("circle", "red", "large"),)),
             CaptionSpec("a blue shape", "colour", (Group(None, "blue", None),)),
             CaptionSpec("a red shape", "colour", (Group(None, "red", None),))]
    assert probe.caption_accuracy(specs, r) == {"single": 1.0, "colour": 0.5, "all": 2 / 3}
    with pytest.raises(ValueError):
        probe.caption_accuracy(specs[:2], r)


# --- captions from real scenes ---------------------------------------------------------------

def _templates_of(split: str, index: int) -> set[str]:
    """Every caption ShapeWorld's templates make for that scene (relations aside)."""
    objects = sw.scene(split, index).objects
    pools = sw._caption_candidates(objects, np.random.default_rng(0))
    return {sw._articles(c) for family in ("attribute", "count") for c in pools[family]}


def test_caption_specs_counts_sources_and_phrasing(splits, specs):
    test, comp = splits["test"], splits["test_compositional"]
    by_cat = {c: [s for s in specs if s.category == c] for c in probe.CATEGORIES}
    assert [s.category for s in specs] == [c for c in probe.CATEGORIES for _ in by_cat[c]]
    assert all(len(v) == 40 for v in by_cat.values())
    for s in specs:
        split, i = s.source
        data = comp if s.category == "unseen" else test
        assert split == ("test_compositional" if s.category == "unseen" else "test")
        n = int(data["num_objects"][i])
        objects = [(sw.SHAPES[data["shape"][i, k]], sw.COLOUR_NAMES[data["colour"][i, k]],
                    sw.SIZES[data["size"][i, k]]) for k in range(n)]
        if s.category in ("single", "unseen", "spatial", "long"):
            assert s.text == data["captions"][i][0]  # the scene caption itself
        else:
            assert s.text in _templates_of(split, i)
        if s.category in ("single", "colour", "shape", "unseen"):
            assert n == 1 and not s.exact and s.relation is None
            (shape, colour, size), = objects
            want = {"single": (shape, colour, size), "unseen": (shape, colour, size),
                    "colour": (None, colour, None), "shape": (shape, None, size)}[s.category]
            assert s.groups == (Group(*want),)
        if s.category == "unseen":
            assert i >= len(comp["image"]) // 2 and (shape, colour) in sw.HELD_OUT_PAIRS
        elif s.category != "colour" and s.category != "shape":
            assert all((g.shape, g.colour) in sw.SEEN_PAIRS for g in s.groups)
        if s.category == "counting":
            (g,) = s.groups
            assert s.exact and g.count >= 2 and g.size is None
            assert g.count == sum(o[:2] == (g.shape, g.colour) for o in objects)
            assert s.text.startswith(sw.NUMBERS[g.count] + " ")
        if s.category == "spatial":
            assert n == 2 and s.relation in sw.RELATIONS and f" {s.relation} " in s.text
            assert s.groups == tuple(Group(*o) for o in objects) and objects[0][:2] != objects[1][:2]
        if s.category == "long":
            assert n >= 3 and s.exact and sum(g.count for g in s.groups) == n


def test_caption_specs_are_true_of_their_own_scenes(splits, specs):
    # a perfect probe satisfies every caption on the image it was made from
    rows = {"test": [], "test_compositional": []}
    for s in specs:
        rows[s.source[0]].append(s.source[1])
    readings = {k: _oracle(splits[k], v) for k, v in rows.items()}
    at = {k: {i: j for j, i in enumerate(v)} for k, v in rows.items()}
    for s in specs:
        split, i = s.source
        assert probe.satisfied(s, readings[split], at[split][i]), s
    images = probe.source_images(specs, splits)
    assert images.shape == (len(specs), 32, 32, 3)
    np.testing.assert_array_equal(images[-1], splits[specs[-1].source[0]]["image"][specs[-1].source[1]])


def test_caption_specs_are_deterministic_and_mixed_sizes_drop_size(splits, specs):
    test, comp = splits["test"], splits["test_compositional"]
    assert probe.caption_specs(test, comp, per_category=40) == specs
    other = probe.caption_specs(test, comp, per_category=40, seed=1)
    assert [s.source for s in other] != [s.source for s in specs]
    every = probe.caption_specs(test, comp, per_category=10_000)
    assert sum(s.category == "single" for s in every) == int(np.sum(test["num_objects"] == 1))
    mixed = [s for s in every if s.category == "long" and any(g.size is None for g in s.groups)]
    assert mixed  # e.g. "two large yellow circles and a small yellow circle"
    for s in mixed:
        for g in s.groups:
            if g.size is None:
                assert "large" in s.text and "small" in s.text


# --- reading images and training the probe ---------------------------------------------------

def test_read_in_batches_equals_one_call_and_accepts_uint8_or_float():
    model = probe.Probe(widths=(8, 16), feature_dim=16)
    images = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    params = model.init(jax.random.key(0), images[:1].astype(np.float32))
    whole = probe.read(model, params, images)
    parts = probe.read(model, params, images, batch_size=3)
    as_float = probe.read(model, params, images.astype(np.float32) / 127.5 - 1.0, batch_size=4)
    for r in (parts, as_float):
        np.testing.assert_array_equal(r.count, whole.count)
        np.testing.assert_array_equal(r.large, whole.large)
        np.testing.assert_allclose(r.center, whole.center, atol=1e-5)
        np.testing.assert_allclose(r.features, whole.features, atol=1e-5)
    assert whole.count.shape == whole.large.shape == (7, 36) and whole.large.dtype == bool
    assert whole.center.shape == (7, 36, 2) and whole.features.shape == (7, 16)
    assert whole.features.dtype == np.float32


def test_cached_probe_reuses_matching_settings_and_retrains_otherwise(tmp_path, monkeypatch):
    fake = {"train": sw.collate([sw.example("train", i, 32) for i in range(6)]),
            "test_compositional": sw.collate([sw.example("test_compositional", i, 32) for i in range(4)])}
    monkeypatch.setattr(probe.shapeworld, "load", lambda split, image_size, data_dir=None: fake[split])
    fits = []
    real_fit = probe.fit_probe

    def fit(model, images, targets, **kw):
        fits.append((images, kw))
        return real_fit(model, images, targets, **kw)

    monkeypatch.setattr(probe, "fit_probe", fit)
    path = tmp_path / "probe.msgpack"
    settings = dict(widths=(4, 8), feature_dim=8, batch_size=4)
    _, first = probe.cached_probe(path, steps=2, **settings)
    assert len(fits) == 1 and path.exists()
    images, kw = fits[0]  # the whole train split and the first half of test_compositional
    np.testing.assert_array_equal(images, np.concatenate([fake["train"]["image"],
                                                          fake["test_compositional"]["image"][:2]]))
    assert kw["steps"] == 2
    _, again = probe.cached_probe(path, steps=2, **settings)
    assert len(fits) == 1
    jax.tree.map(np.testing.assert_array_equal, again, first)
    _, other = probe.cached_probe(path, steps=3, **settings)
    assert len(fits) == 2
    stored = flax.serialization.msgpack_restore(path.read_bytes())
    assert json.loads(stored["meta"])["steps"] == 3
    leaves = zip(jax.tree.leaves(first), jax.tree.leaves(other))
    assert any(not np.array_equal(a, b) for a, b in leaves)


@pytest.mark.slow
def test_a_tiny_probe_reads_real_test_images(splits, specs):
    train = splits["train"]
    model = probe.Probe(widths=(16, 32, 64), feature_dim=64)
    params = probe.fit_probe(model, train["image"][:3000], probe.targets(
        {k: train[k][:3000] for k in ("image", "shape", "colour", "size", "center")}),
        steps=500, batch_size=64, lr=1e-2, seed=0)
    single = [s for s in specs if s.category in ("single", "colour")]
    reading = probe.read(model, params, probe.source_images(single, splits))
    acc = probe.caption_accuracy(single, reading)
    # chance for "single" is about 1 / (36 x 2) (any pair, either size); this probe reads 0.86 of
    # all 710 single-object test scenes and 0.90 of their colours (a full one: 1.0 and 1.0)
    assert acc["single"] > 0.6 and acc["colour"] > 0.6, acc
