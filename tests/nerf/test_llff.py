"""LLFF loading and NeRF's pose preprocessing, on synthetic poses_bounds.npy files."""

import numpy as np
import pytest
from PIL import Image

from jaxzoo.nerf import llff


def rot_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def rot_x(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def forward_facing_cameras(n, seed):
    """[n, 3, 3] right/up/back frames (columns) and [n, 3] centres of a forward-facing rig
    looking roughly along world +y from around y = -3 (z is world up)."""
    rng = np.random.default_rng(seed)
    base = np.stack([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]], 1)  # right = x, up = z, back = -y
    frames = np.stack([rot_z(a) @ rot_x(b) @ base
                       for a, b in rng.uniform(-0.2, 0.2, (n, 2))])
    centers = np.array([0.0, -3.0, 0.5]) + rng.uniform(-0.5, 0.5, (n, 3))
    return frames, centers


def write_scene(root, frames, centers, bounds, hwf, image_wh, folder="images", ext=".png"):
    """poses_bounds.npy in LLFF layout ([down, right, back, t, hwf] rows) + tiny images."""
    n = len(frames)
    down = -frames[:, :, 1:2]
    mats = np.concatenate([down, frames[:, :, 0:1], frames[:, :, 2:3], centers[:, :, None],
                           np.broadcast_to(np.asarray(hwf, float)[:, None], (n, 3, 1))], -1)
    np.save(root / "poses_bounds.npy", np.concatenate([mats.reshape(n, 15), bounds], -1))
    (root / folder).mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, image_wh[1], image_wh[0], 3), dtype=np.uint8)
    for k in range(n):
        Image.fromarray(pixels[k]).save(root / folder / f"IMG_{k:03d}{ext}")
    return pixels


@pytest.fixture
def scene(tmp_path):
    frames, centers = forward_facing_cameras(5, seed=0)
    bounds = np.random.default_rng(1).uniform(2.0, 20.0, (5, 2))
    bounds.sort(-1)
    pixels = write_scene(tmp_path, frames, centers, bounds, (3024, 4032, 3260), (504, 378),
                         folder="images_8")
    return tmp_path, frames, centers, bounds, pixels


def test_focal_images_and_bounds(scene):
    root, _, _, bounds, pixels = scene
    data = llff.load_llff(root, factor=8)
    assert data.focal == pytest.approx(3260 * 504 / 4032) and data.focal == pytest.approx(407.5)
    assert (data.height, data.width) == (378, 504)
    assert data.images.shape == (5, 378, 504, 3) and data.images.dtype == np.float32
    np.testing.assert_allclose(data.images, pixels / 255.0, atol=1e-7)
    assert data.bounds.min() == pytest.approx(1 / 0.75)
    assert data.scale == pytest.approx(0.75 * bounds.min())
    np.testing.assert_allclose(data.bounds, bounds / data.scale, rtol=1e-6)


def test_axis_swap_without_recentring(scene):
    root, frames, centers, bounds, _ = scene
    data = llff.load_llff(root, factor=8, recenter=False)
    scale = 0.75 * bounds.min()
    # [down, right, back] -> [right, up, back]: right was column 1, up is minus column 0 (down)
    np.testing.assert_allclose(data.poses[:, :, :3], frames, atol=1e-6)
    np.testing.assert_allclose(data.poses[:, :, 3], centers / scale, rtol=1e-6)
    # sign: these cameras are upright, so their up axis points along world +z
    assert np.all(data.poses[:, 2, 1] > 0.9)
    raw = np.load(root / "poses_bounds.npy")[:, :15].reshape(-1, 3, 5)
    assert np.all(raw[:, 2, 0] < -0.9)  # LLFF's first column (down) points to world -z


def test_centred_poses(scene):
    root, frames, centers, bounds, _ = scene
    data = llff.load_llff(root, factor=8)
    avg = llff.average_pose(data.poses)
    np.testing.assert_allclose(avg, np.eye(3, 4), atol=1e-6)
    # Each pose is the rigid transform inv(avg) applied to the converted pose, then scaled.
    a_rot, a_c = data.pose_avg[:, :3], data.pose_avg[:, 3]
    np.testing.assert_allclose(a_rot.T @ a_rot, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(data.poses[:, :, :3], np.einsum("ji,njk->nik", a_rot, frames),
                               atol=1e-6)
    np.testing.assert_allclose(data.poses[:, :, 3],
                               (centers - a_c) @ a_rot / data.scale, atol=1e-6)
    for k in range(5):  # rotations stay rotations
        r = data.poses[k, :, :3].astype(np.float64)
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-5)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)


def test_average_pose_closed_forms():
    # identical rotations: the average is that rotation, centred at the mean translation
    r = rot_z(0.3) @ rot_x(-0.7)
    t = np.random.default_rng(2).normal(size=(4, 3))
    poses = np.concatenate([np.broadcast_to(r, (4, 3, 3)), t[:, :, None]], -1)
    np.testing.assert_allclose(llff.average_pose(poses), np.concatenate([r, t.mean(0)[:, None]],
                                                                       1), atol=1e-12)
    # two cameras tilted by +-a about world x: mean z, y are along the untilted axes
    pair = np.stack([np.concatenate([rot_x(s * 0.4), np.zeros((3, 1))], 1) for s in (1, -1)])
    np.testing.assert_allclose(llff.average_pose(pair), np.eye(3, 4), atol=1e-12)
    np.testing.assert_allclose(llff.normalize([3.0, 4.0]), [0.6, 0.8])
    centred, avg = llff.center_poses(poses)
    np.testing.assert_allclose(centred[:, :, :3], np.broadcast_to(np.eye(3), (4, 3, 3)),
                               atol=1e-12)
    np.testing.assert_allclose(centred[:, :, 3], (t - t.mean(0)) @ r, atol=1e-12)


def test_recenter_scale_commutes_with_original_order():
    frames, centers = forward_facing_cameras(6, seed=3)
    poses = np.concatenate([frames, centers[:, :, None]], -1)
    bounds = np.random.default_rng(4).uniform(1.5, 9.0, (6, 2))
    out, b, _, s = llff.recenter_scale(poses, bounds)
    assert b.min() == pytest.approx(1 / 0.75) and s == pytest.approx(0.75 * bounds.min())
    scaled = poses.copy()
    scaled[:, :, 3] /= s  # the original NeRF code scales first, then recentres
    np.testing.assert_allclose(out, llff.center_poses(scaled)[0], atol=1e-12)
    converted = llff.llff_to_right_up_back(np.concatenate(
        [-frames[:, :, 1:2], frames[:, :, 0:1], frames[:, :, 2:3], centers[:, :, None]], -1))
    np.testing.assert_allclose(converted, poses, atol=1e-15)


def test_full_resolution_and_in_memory_resize(tmp_path):
    frames, centers = forward_facing_cameras(3, seed=5)
    bounds = np.tile([1.0, 4.0], (3, 1))
    write_scene(tmp_path, frames, centers, bounds, (6, 8, 10.0), (8, 6), ext=".jpg")
    data = llff.load_llff(tmp_path)
    assert (data.height, data.width, data.focal) == (6, 8, 10.0)
    half = llff.load_llff(tmp_path, factor=2)  # no images_2/: resized from images/
    assert (half.height, half.width, half.focal) == (3, 4, 5.0)


def test_errors(tmp_path, scene):
    with pytest.raises(FileNotFoundError, match="poses_bounds.npy"):
        llff.load_llff(tmp_path / "nowhere")
    root = scene[0]
    with pytest.raises(FileNotFoundError, match="images"):
        llff.load_llff(root)  # only images_8/ exists
    (root / "images_8" / "IMG_000.png").unlink()
    with pytest.raises(ValueError, match="4 images"):
        llff.load_llff(root, factor=8)
    np.save(root / "poses_bounds.npy", np.zeros((5, 15)))
    with pytest.raises(ValueError, match=r"\[N, 17\]"):
        llff.load_llff(root, factor=8)
    with pytest.raises(ValueError, match="bounds"):
        llff.recenter_scale(np.zeros((1, 3, 4)), np.array([[0.0, 1.0]]))
