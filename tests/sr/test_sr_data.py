"""Super-resolution data: HR/LR pairs, aligned augmented patches, determinism, sources."""

import numpy as np
import pytest
from PIL import Image

from jaxzoo.errors import DataError
from jaxzoo.sr import data as sr_images


def _nearest_pair(rng, h=12, w=16, scale=4, name="x"):
    """A pair whose HR is the LR repeated scale x scale: patches align iff hr_patch == repeat(lr_patch)."""
    lr = rng.random((h, w, 3)).astype(np.float32)
    hr = np.repeat(np.repeat(lr, scale, 0), scale, 1)
    return sr_images.Pair(name, hr, lr)


def _repeat(x, s):
    return np.repeat(np.repeat(x, s, -3), s, -2)


def test_mod_crop_keeps_top_left_multiple():
    img = np.arange(10 * 7 * 3).reshape(10, 7, 3)
    out = sr_images.mod_crop(img, 4)
    assert out.shape == (8, 4, 3) and np.array_equal(out, img[:8, :4])


def test_downsample_reproduces_a_linear_ramp_at_matlab_sample_positions():
    # Bicubic weights sum to one and are symmetric, so away from the border a linear image is
    # sampled exactly; LR pixel i (0-based) sits at HR coordinate 4 i + 1.5.
    h, w, s = 32, 40, 4
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    hr = np.stack([0.01 * yy, 0.02 * xx, 0.005 * (yy + xx)], -1).astype(np.float32)
    lr = sr_images.downsample(hr, s)
    assert lr.shape == (h // s, w // s, 3)
    iy, ix = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")
    cy, cx = s * iy + 1.5, s * ix + 1.5
    expected = np.stack([0.01 * cy, 0.02 * cx, 0.005 * (cy + cx)], -1)
    np.testing.assert_allclose(lr[2:-2, 2:-2], expected[2:-2, 2:-2], atol=1e-5)
    with pytest.raises(ValueError, match="mod_crop"):
        sr_images.downsample(hr[:30], s)


def test_bicubic_upsample_keeps_constants_and_clips():
    lr = np.full((5, 6, 3), 0.3, np.float32)
    np.testing.assert_allclose(sr_images.upsample_bicubic(lr, 4), 0.3, atol=1e-6)
    checker = (np.indices((6, 6)).sum(0) % 2).astype(np.float32)[..., None].repeat(3, -1)
    up = sr_images.upsample_bicubic(checker, 4)
    assert up.shape == (24, 24, 3) and up.min() >= 0 and up.max() <= 1  # overshoot is clipped


@pytest.mark.parametrize("k", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_augment_is_the_same_symmetry_on_lr_and_hr(k, flip):
    pair = _nearest_pair(np.random.default_rng(0), 4, 4)
    lr, hr = sr_images.augment(pair.lr, pair.hr, k, flip)
    np.testing.assert_array_equal(hr, _repeat(lr, 4))
    ref = np.rot90(pair.lr[:, ::-1] if flip else pair.lr, k)
    np.testing.assert_array_equal(lr, ref)


def test_patches_are_aligned_inside_the_image_and_cover_all_symmetries():
    rng = np.random.default_rng(1)
    pairs = [_nearest_pair(rng, 12, 16, name="a"), _nearest_pair(rng, 9, 7, name="b")]
    sampler = sr_images.PatchSampler(pairs, patch_size=16, scale=4)
    out = sampler({"index": np.array([0, 1, 0, 1] * 50)}, np.random.default_rng(2))
    assert out["lr"].shape == (200, 4, 4, 3) and out["hr"].shape == (200, 16, 16, 3)
    assert out["lr"].dtype == out["hr"].dtype == np.float32
    np.testing.assert_array_equal(out["hr"], _repeat(out["lr"], 4))
    # Each LR patch is some dihedral image of a window of its source image.
    seen = set()
    for j, i in enumerate([0, 1, 0, 1] * 50):
        src, patch = pairs[i].lr, out["lr"][j]
        hits = [(k, f, y, x) for k in range(4) for f in (False, True)
                for y in range(src.shape[0] - 3) for x in range(src.shape[1] - 3)
                if np.array_equal(sr_images.augment(src[y:y + 4, x:x + 4], src[y:y + 4, x:x + 4], k, f)[0], patch)]
        assert hits, f"patch {j} is not a window of image {i}"
        seen.update((k, f) for k, f, _, _ in hits)
    assert len(seen) == 8


def test_sampler_is_deterministic_in_its_rng_and_rejects_bad_sizes():
    pairs = [_nearest_pair(np.random.default_rng(3), 10, 10)]
    sampler = sr_images.PatchSampler(pairs, patch_size=16)
    a = sampler({"index": np.zeros(4, int)}, np.random.default_rng(7))
    b = sampler({"index": np.zeros(4, int)}, np.random.default_rng(7))
    c = sampler({"index": np.zeros(4, int)}, np.random.default_rng(8))
    assert all(np.array_equal(a[k], b[k]) for k in a) and not np.array_equal(a["lr"], c["lr"])
    with pytest.raises(ValueError, match="multiple of scale"):
        sr_images.PatchSampler(pairs, patch_size=18)
    with pytest.raises(ValueError, match="smaller than the LR patch"):
        sr_images.PatchSampler(pairs, patch_size=48)({"index": np.zeros(1, int)}, np.random.default_rng(0))


def test_uint8_pairs_are_converted_per_patch():
    pair = _nearest_pair(np.random.default_rng(4), 8, 8)
    q = sr_images.Pair("q", np.round(pair.hr * 255).astype(np.uint8), np.round(pair.lr * 255).astype(np.uint8))
    out = sr_images.PatchSampler([q], 16, augment=False)({"index": np.zeros(2, int)}, np.random.default_rng(0))
    assert out["lr"].dtype == np.float32 and 0 <= out["lr"].min() and out["lr"].max() <= 1
    np.testing.assert_array_equal(out["hr"], _repeat(out["lr"], 4))


def test_training_loader_batches_depend_only_on_step():
    pairs = [_nearest_pair(np.random.default_rng(5), 8, 8, name=str(i)) for i in range(3)]
    loader = sr_images.training_loader(pairs, batch_size=5, patch_size=8, seed=3)
    a, b, c = loader.batch(4), loader.batch(4), loader.batch(5)
    assert a["lr"].shape == (5, 2, 2, 3) and a["hr"].shape == (5, 8, 8, 3)
    assert np.array_equal(a["hr"], b["hr"]) and not np.array_equal(a["hr"], c["hr"])


def test_embedded_test_split_is_held_out_and_well_formed():
    assert not set(sr_images.EMBEDDED_TRAIN) & set(sr_images.EMBEDDED_TEST)
    pairs = sr_images.embedded_pairs("test")
    assert [p.name for p in pairs] == list(sr_images.EMBEDDED_TEST)
    for p in pairs:
        assert p.hr.shape[0] == 4 * p.lr.shape[0] and p.hr.shape[1] == 4 * p.lr.shape[1]
        assert p.hr.dtype == np.float32 and 0 <= p.hr.min() and p.hr.max() <= 1
        # The LR image is a blurred, smaller version: its mean matches the HR mean closely.
        assert abs(p.hr.mean() - p.lr.mean()) < 0.01
    assert [p.name for p in sr_images.embedded_pairs("train", limit=1)] == [sr_images.EMBEDDED_TRAIN[0]]
    with pytest.raises(ValueError, match="split"):
        sr_images.embedded_pairs("val")


def test_directory_pairs_read_grey_and_rgba_and_crop(tmp_path):
    rng = np.random.default_rng(6)
    Image.fromarray((rng.random((18, 21)) * 255).astype(np.uint8)).save(tmp_path / "b_grey.png")
    Image.fromarray((rng.random((16, 16, 4)) * 255).astype(np.uint8)).save(tmp_path / "a_rgba.png")
    (tmp_path / "notes.txt").write_text("not an image")
    pairs = sr_images.directory_pairs(tmp_path)
    assert [p.name for p in pairs] == ["a_rgba", "b_grey"]
    assert pairs[1].hr.shape == (16, 20, 3) and pairs[1].lr.shape == (4, 5, 3)
    np.testing.assert_array_equal(pairs[1].hr[..., 0], pairs[1].hr[..., 2])
    assert len(sr_images.load_pairs("dir", "test", root=str(tmp_path), limit=1)) == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        sr_images.directory_pairs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sr_images.directory_pairs(tmp_path / "missing")
    with pytest.raises(ValueError, match="allowed"):
        sr_images.load_pairs("imagenet", "train")


def test_missing_div2k_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build div2k/bicubic_x4"):
        sr_images.load_pairs("div2k", "train", data_dir=str(tmp_path))
