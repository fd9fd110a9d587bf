"""The procedural Blender-format scene: exact ray casting, files, caching, and the loader."""

import json

import numpy as np
import pytest
from PIL import Image

from jaxzoo.nerf import scene as ns
from jaxzoo.nerf.blender import load_blender

SIZE = 16
COUNTS = dict(num_train=4, num_val=1, num_test=2)


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return ns.generate_scene(tmp_path_factory.mktemp("scene"), image_size=SIZE, seed=3, **COUNTS)


def pixel_ray(c2w, i, j, size, focal):
    """The ray through the centre of pixel (i, j) in the NeRF/Blender camera frame, written out
    independently of the module."""
    d_cam = np.array([(i + 0.5 - size / 2) / focal, -(j + 0.5 - size / 2) / focal, -1.0])
    return c2w[:3, 3], c2w[:3, :3] @ d_cam


# ------------------------------------------------------------------ brute-force references
def inside(obj, p):
    """Point-membership of [..., 3] points in a solid object (independent of the module)."""
    if isinstance(obj, ns.Sphere):
        return np.sum((p - obj.center) ** 2, -1) < obj.radius**2
    if isinstance(obj, ns.Box):
        c, s = np.cos(obj.yaw), np.sin(obj.yaw)
        q = p - obj.center
        local = np.stack([c * q[..., 0] + s * q[..., 1], -s * q[..., 0] + c * q[..., 1],
                          q[..., 2]], -1)
        return np.all(np.abs(local) < obj.half_size, -1)
    raise TypeError(obj)


def march(obj, o, d, t_max=9.0, step=2e-4):
    """First t (to within `step`) where the ray enters `obj`; inf if it never does."""
    t = np.arange(0.0, t_max, step)
    p = o + t[:, None] * d
    if isinstance(obj, ns.Disc):
        above = p[:, 2] > obj.center[2]
        cross = np.flatnonzero(above[1:] != above[:-1])
        for k in cross + 1:  # first sample past the plane, as for the solids
            if np.sum((p[k, :2] - obj.center[:2]) ** 2) <= obj.radius**2:
                return t[k]
        return np.inf
    hits = np.flatnonzero(inside(obj, p))
    return t[hits[0]] if len(hits) else np.inf


def random_rays(n, seed):
    """Rays from the camera sphere aimed at random points near (and past) the objects."""
    rng = np.random.default_rng(seed)
    poses = ns.sample_poses(n, rng)
    centers = np.array([obj.center for obj in ns.SCENE])
    targets = centers[rng.integers(0, len(centers), n)] + rng.uniform(-0.6, 0.6, (n, 3))
    o = poses[:, :3, 3]
    d = targets - o
    return o, d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_intersections_match_marching():
    o, d = random_rays(24, seed=0)
    step = 2e-4
    n_hits = 0
    for obj in ns.SCENE:
        if isinstance(obj, ns.Sphere):
            t = ns.intersect_sphere(o, d, obj.center, obj.radius)
        elif isinstance(obj, ns.Box):
            t, _ = ns.intersect_box(o, d, obj.center, obj.half_size, obj.yaw)
        else:
            t = ns.intersect_disc(o, d, obj.center, obj.radius)
        for k in range(len(o)):
            ref = march(obj, o[k], d[k], step=step)
            if np.isinf(ref):
                assert np.isinf(t[k]), (obj, k)
            else:
                n_hits += 1
                assert t[k] <= ref + 1e-12 and ref - t[k] < step + 1e-12, (obj, k, t[k], ref)
    assert n_hits >= 15  # the rays really exercise the hit branch


def test_cast_rays_nearest_object_and_normals():
    o, d = random_rays(24, seed=1)
    t, obj_id, normal = ns.cast_rays(o, d)
    for k in range(len(o)):
        refs = [march(obj, o[k], d[k]) for obj in ns.SCENE]
        best = int(np.argmin(refs))
        if np.isinf(refs[best]):
            assert obj_id[k] == -1 and np.isinf(t[k])
            continue
        assert obj_id[k] == best and abs(t[k] - refs[best]) < 2e-4 + 1e-12
        np.testing.assert_allclose(np.linalg.norm(normal[k]), 1.0, atol=1e-12)
        assert normal[k] @ d[k] < 0  # faces the viewer
        p = o[k] + t[k] * d[k]
        if not isinstance(ns.SCENE[best], ns.Disc):  # outward: stepping along n leaves the solid
            assert inside(ns.SCENE[best], p - 1e-6 * normal[k])
            assert not inside(ns.SCENE[best], p + 1e-6 * normal[k])


def test_box_normal_outward_for_axis_rays():
    box = ns.Box(center=(0.0, 0.0, 0.0), half_size=(1.0, 2.0, 3.0), yaw=0.0, color=(1, 1, 1))
    o = np.array([[5.0, 0, 0], [0, -5.0, 0], [0, 0, 5.0]])
    t, n = ns.intersect_box(o, -o / 5.0, box.center, box.half_size, box.yaw)
    np.testing.assert_allclose(t, [4.0, 3.0, 2.0])
    np.testing.assert_allclose(n, [[1, 0, 0], [0, -1, 0], [0, 0, 1]])


def test_scene_fits_its_stated_bounds():
    for obj in ns.SCENE:
        c = np.asarray(obj.center)
        if isinstance(obj, ns.Sphere):
            extent = np.linalg.norm(c) + obj.radius
        elif isinstance(obj, ns.Box):
            cy, sy = np.cos(obj.yaw), np.sin(obj.yaw)
            signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
            local = signs * obj.half_size
            corners = np.stack([cy * local[:, 0] - sy * local[:, 1],
                                sy * local[:, 0] + cy * local[:, 1], local[:, 2]], -1) + c
            extent = np.linalg.norm(corners, axis=-1).max()
        else:
            extent = np.hypot(np.linalg.norm(c[:2]) + obj.radius, c[2])
        assert extent <= ns.SCENE_RADIUS, obj
    # every surface lies in [near, far] from any camera on the sphere
    assert ns.CAMERA_RADIUS - ns.SCENE_RADIUS >= ns.NEAR
    assert ns.CAMERA_RADIUS + ns.SCENE_RADIUS <= ns.FAR


def test_files_and_json_layout(scene_dir):
    for split, n in zip(ns.SPLITS, COUNTS.values()):
        meta = json.loads((scene_dir / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == ns.CAMERA_ANGLE_X
        assert len(meta["frames"]) == n
        for k, frame in enumerate(meta["frames"]):
            assert frame["file_path"] == f"./{split}/r_{k}"
            pose = np.asarray(frame["transform_matrix"])
            assert pose.shape == (4, 4)
            np.testing.assert_allclose(pose[3], [0, 0, 0, 1])
            rot, pos = pose[:3, :3], pose[:3, 3]
            np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
            assert np.linalg.det(rot) == pytest.approx(1.0)
            assert np.linalg.norm(pos) == pytest.approx(ns.CAMERA_RADIUS)
            # looks at the origin down its -z axis, upright (camera y has a +z component)
            np.testing.assert_allclose(rot @ [0, 0, -1], -pos / np.linalg.norm(pos), atol=1e-12)
            assert rot[2, 1] > 0 and pos[2] > 0
            with Image.open(scene_dir / f"{split}/r_{k}.png") as img:
                assert img.mode == "RGBA" and img.size == (SIZE, SIZE)


def test_pixels_hit_expected_objects(scene_dir):
    """The pixel nearest the floating sphere's centre shows that sphere, shaded exactly."""
    meta = json.loads((scene_dir / "transforms_train.json").read_text())
    focal = 0.5 * SIZE / np.tan(0.5 * meta["camera_angle_x"])
    sphere = max((o for o in ns.SCENE if isinstance(o, ns.Sphere)), key=lambda o: o.center[2])
    c = np.asarray(sphere.center)
    for k, frame in enumerate(meta["frames"]):
        c2w = np.asarray(frame["transform_matrix"])
        rgba = np.asarray(Image.open(scene_dir / f"train/r_{k}.png"), dtype=np.float64) / 255
        # every corner ray misses the scene (it passes > SCENE_RADIUS from the origin)
        for j, i in [(0, 0), (0, SIZE - 1), (SIZE - 1, 0), (SIZE - 1, SIZE - 1)]:
            assert rgba[j, i, 3] == 0.0
        # project the centre with the pinhole model: x_cam = R^T (c - o)
        x_cam = c2w[:3, :3].T @ (c - c2w[:3, 3])
        i = int(round(focal * x_cam[0] / -x_cam[2] + SIZE / 2))
        j = int(round(-focal * x_cam[1] / -x_cam[2] + SIZE / 2))
        o, d = pixel_ray(c2w, i, j, SIZE, focal)
        d = d / np.linalg.norm(d)
        b = d @ (o - c)
        t = -b - np.sqrt(b**2 - (np.sum((o - c) ** 2) - sphere.radius**2))
        n = (o + t * d - c) / sphere.radius
        expected = np.asarray(sphere.color) * (ns.AMBIENT + (1 - ns.AMBIENT) *
                                               max(n @ ns.LIGHT_DIR, 0.0))
        assert rgba[j, i, 3] == 1.0
        np.testing.assert_allclose(rgba[j, i, :3], expected, atol=0.5 / 255 + 1e-9)


def test_generation_is_deterministic(scene_dir, tmp_path):
    again = ns.generate_scene(tmp_path / "again", image_size=SIZE, seed=3, **COUNTS)
    files = sorted(p.relative_to(scene_dir) for p in scene_dir.rglob("*") if p.is_file())
    assert len(files) == 3 + 1 + sum(COUNTS.values())
    for rel in files:
        assert (scene_dir / rel).read_bytes() == (again / rel).read_bytes(), rel
    other = ns.generate_scene(tmp_path / "other", image_size=SIZE, seed=4, **COUNTS)
    assert (other / "transforms_train.json").read_bytes() != \
        (scene_dir / "transforms_train.json").read_bytes()


def test_ensure_scene_caches(tmp_path):
    kw = dict(image_size=8, num_train=2, num_val=1, num_test=1, seed=0)
    first = ns.ensure_scene(tmp_path, **kw)
    (first / "sentinel").write_text("kept")
    assert ns.ensure_scene(tmp_path, **kw) == first
    assert (first / "sentinel").read_text() == "kept"  # reused, not re-rendered
    second = ns.ensure_scene(tmp_path, **{**kw, "seed": 1})
    assert second != first and (second / "transforms_train.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, second.name])
    with pytest.raises(ValueError, match="image_size"):
        ns.ensure_scene(tmp_path, image_size=0)


def test_supersampling_is_centred_on_the_pixel_ray():
    pose = ns.look_at_pose([1.0, -3.0, 2.0])
    focal = ns.focal_from_fov(8)
    o1, d1 = ns.pixel_rays(pose, 8, 8, focal, 1)
    o3, d3 = ns.pixel_rays(pose, 8, 8, focal, 3)
    np.testing.assert_allclose(d3.mean(2), d1[:, :, 0], atol=1e-12)
    _, d_ref = pixel_ray(pose, 5, 2, 8, focal)
    np.testing.assert_allclose(d1[2, 5, 0], d_ref, atol=1e-12)
    rgba = ns.render_view(ns.look_at_pose([0.0, -3.5, 2.0]), 12, 12, ns.focal_from_fov(12), 2)
    quarters = rgba[..., 3] * 4
    np.testing.assert_allclose(quarters, np.round(quarters), atol=1e-12)
    assert np.any((rgba[..., 3] > 0) & (rgba[..., 3] < 1))  # antialiased edges exist


def test_near_far_bracket_rendered_depths(scene_dir):
    meta = json.loads((scene_dir / "transforms_test.json").read_text())
    focal = ns.focal_from_fov(SIZE)
    for frame in meta["frames"]:
        o, d = ns.pixel_rays(np.asarray(frame["transform_matrix"]), SIZE, SIZE, focal)
        d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        t, obj_id, _ = ns.cast_rays(o, d)
        assert np.any(obj_id >= 0)
        assert np.all((t[obj_id >= 0] >= meta["near"]) & (t[obj_id >= 0] <= meta["far"]))


def test_load_blender_round_trip(scene_dir):
    for white in (True, False):
        data = load_blender(scene_dir, "train", white_background=white)
        meta = json.loads((scene_dir / "transforms_train.json").read_text())
        assert data.images.shape == (4, SIZE, SIZE, 3) and data.images.dtype == np.float32
        assert (data.height, data.width, data.near, data.far) == (SIZE, SIZE, 2.0, 6.0)
        assert data.focal == pytest.approx(0.5 * SIZE / np.tan(0.5 * ns.CAMERA_ANGLE_X))
        np.testing.assert_allclose(
            data.poses, np.asarray([f["transform_matrix"] for f in meta["frames"]])[:, :3],
            rtol=1e-6)
        for k in range(4):
            raw = np.asarray(Image.open(scene_dir / f"train/r_{k}.png"), np.float64) / 255
            rgb, a = raw[..., :3], raw[..., 3:]
            expected = rgb * a + (1 - a) if white else rgb * a
            np.testing.assert_allclose(data.images[k], expected, atol=1e-6)
            np.testing.assert_allclose(data.alphas[k], a[..., 0], atol=1e-6)
        if white:
            assert np.all(data.images[:, 0, 0] == 1.0)  # background corners are white
    half = load_blender(scene_dir, "train", downscale=2)
    full = load_blender(scene_dir, "train")
    assert half.images.shape == (4, SIZE // 2, SIZE // 2, 3)
    assert half.focal == pytest.approx(full.focal / 2)
    np.testing.assert_allclose(half.images[:, 1, 2], full.images[:, 2:4, 4:6].mean((1, 2)),
                               atol=1e-6)


def test_load_blender_errors(scene_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="transforms_nope.json"):
        load_blender(scene_dir, "nope")
    with pytest.raises(ValueError, match="downscale=3"):
        load_blender(scene_dir, "train", downscale=3)
    meta = json.loads((scene_dir / "transforms_val.json").read_text())
    meta["frames"][0]["file_path"] = "./val/missing"
    (tmp_path / "transforms_val.json").write_text(json.dumps(meta))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_blender(tmp_path, "val")


def test_textures_and_shadows():
    floor = next(o for o in ns.SCENE if isinstance(o, ns.Disc))
    red = next(o for o in ns.SCENE if isinstance(o, ns.Sphere) and o.color[0] > 0.8
               and o.color[1] < 0.3)
    fz, light = floor.center[2], ns.LIGHT_DIR
    # A floor point whose light ray passes through the red sphere's centre is in shadow.
    c = np.asarray(red.center)
    shadowed = c - light * (c[2] - fz) / light[2]
    # A floor point whose light ray misses everything (checked by marching) is fully lit.
    lit = np.array([0.0, -1.1, fz])
    assert all(np.isinf(march(obj, lit + 1e-6 * light, light)) for obj in ns.SCENE
               if not isinstance(obj, ns.Disc))
    pts = np.stack([shadowed, lit])
    rgb, alpha = ns.render_rays(pts + [0, 0, 1e-3], np.tile([0.0, 0, -1], (2, 1)))
    np.testing.assert_array_equal(alpha, [1, 1])

    def checker(p):  # the colour of the square containing p
        parity = (np.floor(p[0] / floor.checker_size) + np.floor(p[1] / floor.checker_size)) % 2
        return np.asarray(floor.color if parity == 0 else floor.checker_color)

    np.testing.assert_allclose(rgb[0], checker(shadowed) * ns.AMBIENT, atol=1e-12)
    np.testing.assert_allclose(rgb[1], checker(lit) * (ns.AMBIENT + (1 - ns.AMBIENT) * light[2]),
                               atol=1e-12)
    # Neighbouring floor squares alternate colours.
    q = np.array([[0.1, 0.1, fz], [0.1 + floor.checker_size, 0.1, fz]])
    cols = ns.albedo(q, np.tile([0.0, 0, 1], (2, 1)), np.zeros(2, int))
    np.testing.assert_allclose(cols, [floor.color, floor.checker_color])
    # The striped sphere alternates colour between latitude bands.
    k, striped = next((k, o) for k, o in enumerate(ns.SCENE)
                      if isinstance(o, ns.Sphere) and o.stripe_color is not None)
    lat = (np.arange(striped.num_stripes) + 0.5) / striped.num_stripes * np.pi - np.pi / 2
    normals = np.stack([np.cos(lat), 0 * lat, np.sin(lat)], -1)
    cols = ns.albedo(np.asarray(striped.center) + striped.radius * normals, normals,
                     np.full(len(lat), k))
    expected = [striped.color if b % 2 == 0 else striped.stripe_color for b in range(len(lat))]
    np.testing.assert_allclose(cols, expected)
