"""A tiny procedural NeRF scene, ray cast exactly in NumPy and written in the Blender format.

The scene is a handful of analytic objects (three spheres, a box turned about the vertical axis
and a checkerboard floor disc), all inside the ball of radius `SCENE_RADIUS` = 1.4 around the
origin, shaded with Lambert + ambient under one fixed directional light with hard shadows.
Shading does not depend on the viewing direction, so a perfect radiance field can reproduce the
views exactly. Rays that miss every object get alpha 0 (transparent background).

Conventions (the same as the Blender NeRF data and `jaxzoo.nerf.render`):
  * world frame: z is up; cameras sit on a sphere of radius `CAMERA_RADIUS` = 4 in the upper
    hemisphere (elevation 15..80 degrees) and look at the origin;
  * `c2w` is a 4x4 camera-to-world matrix whose rotation columns are the camera's
    [right, up, back] axes: the camera looks down its -z axis with y up;
  * pixel (i, j) (column i, row j) of a W x H image looks along
    c2w[:3, :3] @ ((i + 0.5 - W/2) / f, -(j + 0.5 - H/2) / f, -1), through the pixel's centre
    (`render.get_ray_directions` with its default pixel_center=0.5), and
    f = 0.5 * W / tan(0.5 * camera_angle_x).
With `supersample=s > 1` each pixel averages s x s rays spread evenly over a one-pixel square
centred on that pixel's own ray (so the footprint stays centred where the renderer casts).
The default `supersample=1` casts exactly the renderer's ray, which makes the images exact.

Ray arrays: `origins`, `dirs` are [N, 3] float64 (dirs need not be unit length); distances
`t` are in units of |dir|, +inf on a miss.

Layout written by `generate_scene(out_dir)` (as in the NeRF synthetic release):
  out_dir/transforms_{train,val,test}.json  keys camera_angle_x, near, far, frames[*] with
      file_path "./<split>/r_<k>" (no extension) and transform_matrix (4x4 c2w)
  out_dir/<split>/r_<k>.png                 8-bit RGBA, straight (unassociated) alpha
  out_dir/scene_params.json                 the parameters and generator version
near = 2 and far = 6 (as Blender's) bracket the scene: every surface lies 2.6..5.4 from a camera.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

GENERATOR_VERSION = 2  # 2: rays through pixel centres (1: through pixel corners)
CAMERA_ANGLE_X = 0.6911112070083618  # the horizontal field of view of the Blender scenes
CAMERA_RADIUS = 4.0
ELEVATION_RANGE_DEG = (15.0, 80.0)
SCENE_RADIUS = 1.4  # every object lies inside this ball around the origin
NEAR, FAR = 2.0, 6.0
LIGHT_DIR = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])
AMBIENT = 0.25
SPLITS = ("train", "val", "test")
_T_MIN = 1e-9
_SHADOW_OFFSET = 1e-6


@dataclasses.dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]
    stripe_color: tuple[float, float, float] | None = None  # latitude bands when set
    num_stripes: int = 6


@dataclasses.dataclass(frozen=True)
class Box:
    center: tuple[float, float, float]
    half_size: tuple[float, float, float]
    yaw: float  # rotation about world z, radians
    color: tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Disc:
    """Horizontal disc (normal +z), seen from both sides, with a checkerboard in world x, y."""
    center: tuple[float, float, float]
    radius: float
    color: tuple[float, float, float]
    checker_color: tuple[float, float, float]
    checker_size: float


SCENE = (
    Disc(center=(0.0, 0.0, -0.6), radius=1.25, color=(0.85, 0.85, 0.8),
         checker_color=(0.25, 0.3, 0.4), checker_size=0.3125),
    Sphere(center=(0.45, -0.4, -0.15), radius=0.45, color=(0.9, 0.15, 0.1)),
    Sphere(center=(-0.55, 0.3, -0.25), radius=0.35, color=(0.1, 0.45, 0.9),
           stripe_color=(0.95, 0.95, 0.95)),
    Box(center=(0.3, 0.65, -0.35), half_size=(0.25, 0.25, 0.25), yaw=np.pi / 6,
        color=(0.2, 0.7, 0.3)),
    Sphere(center=(-0.1, -0.2, 0.55), radius=0.25, color=(0.95, 0.8, 0.1)),  # floating
)


# ----------------------------------------------------------------------------- intersections
def intersect_sphere(origins, dirs, center, radius, t_min=_T_MIN):
    """First hit t > t_min of rays o + t d with a sphere; [N] float64, +inf on a miss."""
    oc = origins - np.asarray(center, dtype=np.float64)
    a = np.einsum("ni,ni->n", dirs, dirs)
    half_b = np.einsum("ni,ni->n", dirs, oc)
    c = np.einsum("ni,ni->n", oc, oc) - radius**2
    disc = half_b**2 - a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    t0, t1 = (-half_b - root) / a, (-half_b + root) / a
    t = np.where(t0 > t_min, t0, np.where(t1 > t_min, t1, np.inf))
    return np.where(disc >= 0.0, t, np.inf)


def _yaw_matrix(yaw):
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def intersect_box(origins, dirs, center, half_size, yaw, t_min=_T_MIN):
    """Slab test against a box turned by `yaw` about z. Returns (t [N], outward normal [N, 3])."""
    rot = _yaw_matrix(yaw)  # local -> world
    o = (origins - np.asarray(center, dtype=np.float64)) @ rot  # world -> local (rows @ R)
    d = dirs @ rot
    h = np.asarray(half_size, dtype=np.float64)
    safe_d = np.where(d == 0.0, 1e-300, d)
    ta, tb = (-h - o) / safe_d, (h - o) / safe_d
    t_lo, t_hi = np.minimum(ta, tb), np.maximum(ta, tb)
    t_near, t_far = t_lo.max(-1), t_hi.min(-1)
    hit = (t_near <= t_far) & (t_far > t_min)
    use_near = t_near > t_min
    t = np.where(hit, np.where(use_near, t_near, t_far), np.inf)
    axis = np.where(use_near, t_lo.argmax(-1), t_hi.argmin(-1))
    sign = np.where(use_near, -np.sign(safe_d[np.arange(len(d)), axis]),
                    np.sign(safe_d[np.arange(len(d)), axis]))
    normal_local = np.zeros_like(d)
    normal_local[np.arange(len(d)), axis] = sign
    return t, normal_local @ rot.T


def intersect_disc(origins, dirs, center, radius, t_min=_T_MIN):
    """Hit t > t_min of rays with the horizontal disc z = center_z, |xy - center_xy| <= radius."""
    c = np.asarray(center, dtype=np.float64)
    dz = dirs[:, 2]
    safe_dz = np.where(dz == 0.0, 1.0, dz)
    t = (c[2] - origins[:, 2]) / safe_dz
    p = origins[:, :2] + t[:, None] * dirs[:, :2]
    inside = np.sum((p - c[:2]) ** 2, -1) <= radius**2
    return np.where((dz != 0.0) & (t > t_min) & inside, t, np.inf)


def _intersect(obj, origins, dirs, t_min):
    """(t [N], normal [N, 3] or None) for one object; sphere and disc normals come later."""
    if isinstance(obj, Sphere):
        return intersect_sphere(origins, dirs, obj.center, obj.radius, t_min), None
    if isinstance(obj, Box):
        return intersect_box(origins, dirs, obj.center, obj.half_size, obj.yaw, t_min)
    if isinstance(obj, Disc):
        return intersect_disc(origins, dirs, obj.center, obj.radius, t_min), None
    raise TypeError(f"unknown scene object {obj!r}; expected Sphere, Box or Disc")


def cast_rays(origins, dirs, scene=SCENE, t_min=_T_MIN):
    """Nearest hit of each ray. Returns (t [N] (+inf on a miss), object_id [N] (-1 on a miss),
    normal [N, 3]: unit surface normal at the hit, facing the ray for the two-sided disc)."""
    origins = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
    dirs = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
    n = len(origins)
    t_best = np.full(n, np.inf)
    obj_id = np.full(n, -1, dtype=np.int64)
    normal = np.zeros((n, 3))
    for k, obj in enumerate(scene):
        t, nrm = _intersect(obj, origins, dirs, t_min)
        closer = t < t_best
        t_best = np.where(closer, t, t_best)
        obj_id = np.where(closer, k, obj_id)
        if nrm is not None:
            normal = np.where(closer[:, None], nrm, normal)
    points = origins + np.where(np.isfinite(t_best), t_best, 0.0)[:, None] * dirs
    for k, obj in enumerate(scene):
        sel = obj_id == k
        if isinstance(obj, Sphere):
            normal[sel] = (points[sel] - np.asarray(obj.center)) / obj.radius
        elif isinstance(obj, Disc):
            normal[sel] = np.where(dirs[sel, 2:3] < 0.0, 1.0, -1.0) * np.array([0.0, 0.0, 1.0])
    return t_best, obj_id, normal


def albedo(points, normals, obj_id, scene=SCENE):
    """Surface colour [N, 3] at hit points of the given objects (zeros where obj_id = -1)."""
    out = np.zeros((len(points), 3))
    for k, obj in enumerate(scene):
        sel = obj_id == k
        if not np.any(sel):
            continue
        if isinstance(obj, Disc):
            cells = np.floor(points[sel, :2] / obj.checker_size).astype(np.int64).sum(-1)
            out[sel] = np.where((cells % 2 == 0)[:, None], obj.color, obj.checker_color)
        elif isinstance(obj, Sphere) and obj.stripe_color is not None:
            # Latitude bands: num_stripes bands of equal angle between the poles.
            lat = np.arcsin(np.clip(normals[sel, 2], -1.0, 1.0)) + 0.5 * np.pi
            band = np.minimum(np.floor(lat / np.pi * obj.num_stripes), obj.num_stripes - 1)
            out[sel] = np.where((band.astype(np.int64) % 2 == 0)[:, None], obj.color,
                                obj.stripe_color)
        else:
            out[sel] = obj.color
    return out


def render_rays(origins, dirs, scene=SCENE, shadows=True):
    """Colour and coverage of rays: (rgb [N, 3] in [0, 1], alpha [N] in {0, 1}).

    rgb = albedo * (AMBIENT + (1 - AMBIENT) * max(n . l, 0) * visible), where `visible` is 0 when
    a shadow ray towards the light hits an object. rgb is 0 where alpha is 0.
    """
    origins = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
    dirs = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
    t, obj_id, normal = cast_rays(origins, dirs, scene)
    hit = obj_id >= 0
    points = origins + np.where(hit, t, 0.0)[:, None] * dirs
    diffuse = np.maximum(normal @ LIGHT_DIR, 0.0)
    if shadows:
        lit = hit & (diffuse > 0.0)
        shadow_o = points[lit] + _SHADOW_OFFSET * normal[lit]
        _, blocker, _ = cast_rays(shadow_o, np.broadcast_to(LIGHT_DIR, shadow_o.shape), scene)
        diffuse[np.flatnonzero(lit)[blocker >= 0]] = 0.0
    shade = AMBIENT + (1.0 - AMBIENT) * diffuse
    rgb = albedo(points, normal, obj_id, scene) * shade[:, None]
    return np.where(hit[:, None], rgb, 0.0), hit.astype(np.float64)


# ----------------------------------------------------------------------------- cameras
def focal_from_fov(width, camera_angle_x=CAMERA_ANGLE_X):
    """Pinhole focal length in pixels: 0.5 * W / tan(0.5 * camera_angle_x)."""
    return 0.5 * width / np.tan(0.5 * camera_angle_x)


def look_at_pose(position, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)):
    """4x4 c2w with columns [right, up, back, position]; the camera's -z points at `target`."""
    position = np.asarray(position, dtype=np.float64)
    back = position - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    right = np.cross(np.asarray(up, dtype=np.float64), back)
    right /= np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, :4] = np.stack([right, np.cross(back, right), back, position], 1)
    return pose


def sample_poses(num, rng, radius=CAMERA_RADIUS, elevation_deg=ELEVATION_RANGE_DEG):
    """`num` c2w [num, 4, 4] looking at the origin, uniform in area over the spherical band."""
    azimuth = rng.uniform(0.0, 2.0 * np.pi, num)
    lo, hi = np.sin(np.deg2rad(elevation_deg))
    elevation = np.arcsin(rng.uniform(lo, hi, num))
    pos = radius * np.stack([np.cos(elevation) * np.cos(azimuth),
                             np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1)
    return np.stack([look_at_pose(p) for p in pos]) if num else np.zeros((0, 4, 4))


def pixel_rays(c2w, height, width, focal, supersample=1):
    """Rays of every pixel: (origins, dirs), each [H, W, s*s, 3] (dirs not normalised).

    The pixel's ray passes through its centre (i + 0.5, j + 0.5); sub-ray offsets are
    ((a + 0.5) / s - 0.5) pixels for a in 0..s-1, centred on that ray.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    off = (np.arange(supersample) + 0.5) / supersample - 0.5
    ox, oy = np.meshgrid(off, off, indexing="xy")
    j, i = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                       indexing="ij")
    u = i[:, :, None] + 0.5 + ox.reshape(-1)  # [H, W, s*s]
    v = j[:, :, None] + 0.5 + oy.reshape(-1)
    cam = np.stack([(u - 0.5 * width) / focal, -(v - 0.5 * height) / focal, -np.ones_like(u)], -1)
    dirs = cam @ c2w[:3, :3].T
    return np.broadcast_to(c2w[:3, 3], dirs.shape), dirs


def render_view(c2w, height, width, focal, supersample=1, scene=SCENE):
    """RGBA image [H, W, 4] float64 with straight alpha (colour = mean over the covered rays)."""
    origins, dirs = pixel_rays(c2w, height, width, focal, supersample)
    rgb, alpha = render_rays(origins.reshape(-1, 3), dirs.reshape(-1, 3), scene)
    rgb = rgb.reshape(height, width, -1, 3).sum(2)
    alpha = alpha.reshape(height, width, -1).sum(2)
    rgb = rgb / np.maximum(alpha, 1.0)[..., None]
    return np.concatenate([rgb, (alpha / supersample**2)[..., None]], -1)


# ----------------------------------------------------------------------------- dataset files
def _params(image_size, num_train, num_val, num_test, seed, supersample):
    for name, value, low in (("image_size", image_size, 1), ("num_train", num_train, 0),
                             ("num_val", num_val, 0), ("num_test", num_test, 0),
                             ("supersample", supersample, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return dict(generator_version=GENERATOR_VERSION, image_size=int(image_size),
                num_train=int(num_train), num_val=int(num_val), num_test=int(num_test),
                seed=int(seed), supersample=int(supersample))


def generate_scene(out_dir, *, image_size=80, num_train=100, num_val=25, num_test=25, seed=0,
                   supersample=1) -> Path:
    """Render the scene from random cameras and write a Blender-format dataset into `out_dir`.

    Deterministic in the arguments: split k of the cameras is drawn from
    numpy.random.default_rng([seed, k]). Returns `Path(out_dir)`.
    """
    params = _params(image_size, num_train, num_val, num_test, seed, supersample)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    focal = focal_from_fov(image_size)
    counts = dict(train=num_train, val=num_val, test=num_test)
    for k, split in enumerate(SPLITS):
        poses = sample_poses(counts[split], np.random.default_rng([seed, k]))
        (out / split).mkdir(exist_ok=True)
        frames = []
        for idx, pose in enumerate(poses):
            rgba = render_view(pose, image_size, image_size, focal, supersample)
            pixels = np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)
            Image.fromarray(pixels).save(out / split / f"r_{idx}.png")  # uint8 [H, W, 4]: RGBA
            frames.append({"file_path": f"./{split}/r_{idx}", "transform_matrix": pose.tolist()})
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "near": NEAR, "far": FAR, "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
    (out / "scene_params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    return out


def ensure_scene(cache_dir, **kw) -> Path:
    """Path of the scene for these `generate_scene` keywords, rendering it on first use.

    The scene lives in `cache_dir/nerf_scene_<hash>` where the hash covers the keywords and the
    generator version, so different parameters never share a directory. It is rendered into a
    temporary sibling directory and renamed into place, so a reader never sees a partial scene.
    """
    params = _params(**{**dict(image_size=80, num_train=100, num_val=25, num_test=25, seed=0,
                               supersample=1), **kw})
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    final = cache_dir / f"nerf_scene_{digest}"
    marker = final / "scene_params.json"
    if final.exists():
        if marker.is_file() and json.loads(marker.read_text()) == params:
            return final
        raise RuntimeError(f"{final} exists but its scene_params.json does not match {params}; "
                           "delete the directory to re-render it")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
    try:
        generate_scene(tmp, **{k: v for k, v in params.items() if k != "generator_version"})
        tmp.chmod(0o755)  # mkdtemp makes it private
        os.rename(tmp, final)
    except OSError:
        if not marker.is_file():  # not a lost race with another writer: a real error
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
