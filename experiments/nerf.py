"""NeRF launcher: trains on a Blender, LLFF or the embedded scene; evaluates; renders videos.

    python -m experiments.nerf --config=experiments/configs/nerf.py:cpu --workdir=workdirs/nerf
    python -m experiments.nerf --config=experiments/configs/nerf.py:cpu --workdir=workdirs/nerf --render_video

Writes to the workdir: config.json, metrics.jsonl (+ tensorboard/), checkpoints/, eval.json
(`test_psnr`, `test_ssim` means and `test_psnr_per_view`, `test_ssim_per_view`), and
test_view_<k>.png pictures (truth | render | depth). `--render_video` renders a turntable GIF of
RGB and depth (`video.gif`) from the newest checkpoint without training.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from jaxzoo import viz
from jaxzoo.core import image_metrics
from jaxzoo.data import pipeline
from jaxzoo.errors import ConfigError, DataError, MissingFileError
from jaxzoo.nerf import blender, llff, render, scene as nerf_scene
from jaxzoo.nerf.model import NeRF, render_image
from jaxzoo.train import cli, loop, mesh as mesh_lib, metrics as metrics_lib
from jaxzoo.train.progress import progress


@dataclasses.dataclass
class Scene:
    train_images: np.ndarray  # [N, H, W, 3]
    train_poses: np.ndarray  # [N, 3, 4]
    test_images: np.ndarray
    test_poses: np.ndarray
    height: int
    width: int
    focal: float
    near: float
    far: float
    ndc: bool  # rays are mapped to NDC (LLFF); near, far are then 0, 1
    pixel_center: float  # where each ray crosses its pixel (`render.get_ray_directions`)


def check_config(config) -> None:
    """ConfigError for settings that would only fail after training (the config file's CHOICES
    cover the single keys)."""
    d = config.data
    if (d.near or d.far) and not 0 <= d.near < d.far:
        raise ConfigError(f"data.near={d.near}, data.far={d.far}: need 0 <= near < far (or both 0 "
                          "for the scene's own bounds)")
    if d.format != "embedded" and not d.root:
        raise ConfigError(f"data.format={d.format!r} needs --config.data.root=/path/to/scene")


def load_scene(config) -> Scene:
    """The configured scene; a DataError if its test views are too small to score with SSIM."""
    d = config.data
    if d.format == "llff":
        s = llff.load_llff(d.root, factor=d.llff_factor or None)
        test = np.arange(len(s.images)) % d.llff_hold == 0
        scene = Scene(s.images[~test], s.poses[~test], s.images[test], s.poses[test], s.height,
                      s.width, s.focal, near=0.0, far=1.0, ndc=True, pixel_center=d.pixel_center)
    else:
        if d.format == "blender":
            root = pathlib.Path(d.root)
        else:
            cache = pathlib.Path(d.cache_dir or "~/.cache/jaxzoo/nerf_scenes").expanduser()
            root = nerf_scene.ensure_scene(cache, image_size=d.image_size)
        train, test = (blender.load_blender(root, split, downscale=d.downscale)
                       for split in ("train", "test"))
        scene = Scene(train.images, train.poses, test.images, test.poses, train.height, train.width,
                      train.focal, near=d.near or train.near, far=d.far or train.far, ndc=False,
                      pixel_center=d.pixel_center)
    window = len(image_metrics.gaussian_window())
    if min(scene.height, scene.width) < window:
        raise DataError(f"the images are {scene.width}x{scene.height}, smaller than SSIM's "
                        f"{window}x{window} window: use a smaller data.downscale or llff_factor")
    if not scene.near < scene.far:
        raise DataError(f"near={scene.near} is not below far={scene.far}: set data.near < data.far")
    return scene


def scene_rays(scene: Scene, poses):
    """Rays of every pixel of every pose: (rays_o, rays_d) [N, H, W, 3] (NumPy)."""
    dirs = render.get_ray_directions(scene.height, scene.width, scene.focal, scene.pixel_center)

    @jax.jit
    def rays(pose):
        o, d = render.get_rays(dirs, pose)
        if scene.ndc:  # NeRF's LLFF path (App. C): NDC with near plane 1
            o, d = render.get_ndc_rays(scene.height, scene.width, scene.focal, 1.0, o, d)
        return o, d

    out = [rays(jnp.asarray(p)) for p in poses]
    return np.stack([np.asarray(o) for o, _ in out]), np.stack([np.asarray(d) for _, d in out])


def make_model(config, scene: Scene) -> NeRF:
    m = config.model
    return NeRF(depth=m.depth, width=m.width, skips=tuple(m.skips), xyz_freqs=m.xyz_freqs,
                dir_freqs=m.dir_freqs, num_coarse=m.num_coarse, num_fine=m.num_fine,
                lindisp=m.lindisp, noise_std=m.noise_std, white_background=not scene.ndc)


def make_loss_fn(model: NeRF, scene: Scene):
    def loss_fn(params, batch, key):
        out = model.apply(params, batch["rays_o"], batch["rays_d"], scene.near, scene.far, key)
        terms = {f"mse_{name}": jnp.mean((r.rgb - batch["rgb"]) ** 2) for name, r in out.items()}
        final = terms.get("mse_fine", terms["mse_coarse"])
        return sum(terms.values()), {**terms, "psnr": -10.0 * jnp.log10(final)}

    return loss_fn


def make_task(config, scene: Scene, model: NeRF) -> loop.Task:
    o, d = scene_rays(scene, scene.train_poses)
    rays = {"rays_o": o.reshape(-1, 3), "rays_d": d.reshape(-1, 3),
            "rgb": scene.train_images.reshape(-1, 3).astype(np.float32)}
    schedule = optax.exponential_decay(config.optim.lr, config.total_steps,
                                       config.optim.final_lr / config.optim.lr)
    return loop.Task(
        init_params=lambda key: model.init(key, jnp.zeros((1, 3)), jnp.ones((1, 3)), scene.near, scene.far),
        loss_fn=make_loss_fn(model, scene),
        tx=optax.adam(schedule),
        loader=pipeline.StepIndexedLoader(rays, config.batch_size, seed=config.seed),
    )


def renderer(config, model: NeRF, scene: Scene):
    """Jitted `(params, rays_o, rays_d) -> RenderResult` for whole images, in chunks."""
    fn = functools.partial(render_image, model, near=scene.near, far=scene.far, chunk=config.eval.chunk)
    return jax.jit(lambda params, o, d: fn(params, o, d))


def _depth_picture(depth, acc, near, far):
    """Depth as grey levels (near = white), background (acc ~ 0) black."""
    grey = 1.0 - (np.asarray(depth) - near) / max(far - near, 1e-6)
    return np.clip(grey, 0, 1)[..., None].repeat(3, -1) * np.asarray(acc)[..., None]


def evaluate(config, model: NeRF, params, scene: Scene, workdir: pathlib.Path) -> dict:
    views = len(scene.test_images) if not config.eval.max_views else min(config.eval.max_views, len(scene.test_images))
    o, d = scene_rays(scene, scene.test_poses[:views])
    draw = renderer(config, model, scene)
    psnrs, ssims = [], []
    with progress(views, desc="eval", unit="view") as bar:
        for k in range(views):
            out = draw(params, jnp.asarray(o[k]), jnp.asarray(d[k]))
            pred, truth = np.clip(np.asarray(out.rgb), 0, 1), scene.test_images[k]
            psnrs.append(float(image_metrics.psnr(pred, truth)))
            ssims.append(float(image_metrics.ssim(pred, truth)))
            if k < config.eval.num_pictures and jax.process_index() == 0:
                depth = _depth_picture(out.depth, out.acc, scene.near, scene.far)
                viz.save_png(workdir / f"test_view_{k}.png", np.concatenate([truth, pred, depth], 1), scale=2)
            bar.update(1)
    return {"test_psnr": float(np.mean(psnrs)), "test_ssim": float(np.mean(ssims)),
            "test_psnr_per_view": psnrs, "test_ssim_per_view": ssims, "num_test_views": views}


def turntable_poses(num_frames: int, radius: float, elevation_deg: float) -> np.ndarray:
    """Cameras circling the origin (z up) and looking at it: [num_frames, 3, 4]."""
    angles = np.linspace(0, 2 * np.pi, num_frames, endpoint=False)
    el = np.deg2rad(elevation_deg)
    centres = radius * np.stack([np.cos(angles) * np.cos(el), np.sin(angles) * np.cos(el),
                                 np.full_like(angles, np.sin(el))], -1)
    return np.stack([nerf_scene.look_at_pose(c)[:3] for c in centres]).astype(np.float32)


def video_poses(config, scene: Scene) -> np.ndarray:
    if not scene.ndc:
        return turntable_poses(config.video.num_frames, config.video.radius, config.video.elevation_deg)
    # Forward-facing (LLFF): a small circle of camera centres in front of the average pose.
    t = np.linspace(0, 2 * np.pi, config.video.num_frames, endpoint=False)
    poses = np.repeat(np.eye(4)[None, :3], len(t), axis=0).astype(np.float32)
    radius = 0.1 * np.abs(scene.train_poses[:, :3, 3]).max()
    poses[:, 0, 3], poses[:, 1, 3] = radius * np.cos(t), radius * np.sin(t)
    return poses


def render_video(config, workdir) -> pathlib.Path:
    """Turntable GIF (RGB | depth) from the newest checkpoint; MissingFileError if none."""
    workdir = pathlib.Path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise MissingFileError(f"no checkpoint in {workdir / 'checkpoints'}: train first (same --workdir)")
    check_config(config)
    scene = load_scene(config)
    model = make_model(config, scene)
    step, state = loop.restore_state(config, workdir, make_task(config, scene, model))
    params = mesh_lib.to_host(state.params)
    poses = video_poses(config, scene)
    o, d = scene_rays(scene, poses)
    draw = renderer(config, model, scene)
    frames = []
    with progress(len(poses), desc=f"video (step {step})", unit="frame") as bar:
        for k in range(len(poses)):
            out = draw(params, jnp.asarray(o[k]), jnp.asarray(d[k]))
            rgb = np.clip(np.asarray(out.rgb), 0, 1)
            frame = np.concatenate([rgb, _depth_picture(out.depth, out.acc, scene.near, scene.far)], 1)
            frames.append(Image.fromarray(np.round(frame * 255).astype(np.uint8)).resize(
                (2 * frame.shape[1], 2 * frame.shape[0]), Image.NEAREST))
            bar.update(1)
    path = workdir / "video.gif"
    if jax.process_index() == 0:
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)
        print(f"[jaxzoo] wrote {path} ({len(frames)} frames, step {step})", flush=True)
    return path


def train_and_evaluate(config, workdir, hooks=()):
    """Trains, then evaluates and writes eval.json. Returns the eval dict (None if preempted)."""
    workdir = pathlib.Path(workdir)
    check_config(config)
    scene = load_scene(config)
    model = make_model(config, scene)
    result = loop.train(config, workdir, make_task(config, scene, model), hooks=hooks)
    if result.preempted:
        return None
    metrics = evaluate(config, model, mesh_lib.to_host(result.state.params), scene, workdir)
    return metrics_lib.write_eval(workdir, metrics, result.step)


def main(args):
    if args.flags.get("render_video", "false").lower() in ("true", "1", "yes"):
        render_video(args.config, args.workdir)
    else:
        train_and_evaluate(args.config, args.workdir)


if __name__ == "__main__":
    cli.run(main, flags=("render_video",))
