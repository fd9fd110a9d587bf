"""Imagen launcher: a frozen text encoder, a base text-to-image diffusion model and a
super-resolution (SR) model with noise conditioning augmentation, scored by the shared
text-to-image evaluation.

    python -m experiments.imagen --config=experiments/configs/imagen.py:cpu --workdir=workdirs/imagen

Trains the base model in workdir/base/, the SR model in workdir/sr/ and (sr.compare_without_aug)
one trained without noise augmentation in workdir/sr_without_aug/, each resumable. eval.json:
* the base model at every setting `steps<N>_w<weight>_<static|dynamic>` (the steps of
  `eval.num_steps` at `eval.guidance_scale` with `eval.threshold`, and every weight of
  `eval.guidance_scales` at `eval.sweep_steps` steps with both thresholds: Sec. 2.3's claim is
  that dynamic thresholding keeps quality at large weights where static thresholding
  saturates), with the metrics of
  `jaxzoo.diffusion.text_to_image.evaluate` at 16x16;
* `cascade_*`: the base model's best setting followed by the SR model, scored at 32x32 (caption
  accuracy per category, CLIP score, FD), for each SR model (`cascade_without_aug_*`);
* `sr_psnr`, `sr_fd_probe` (and `_without_aug`): the SR model on real 16x16 test images against
  the real 32x32 ones, and the real images' own `sr_fd_probe_floor_test`.
Pictures: samples.png (base, best setting), settings.png, cascade.png (16x16 base samples above
their 32x32 SR outputs).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxzoo import viz
from jaxzoo.clip import training as clip_training
from jaxzoo.core import image_metrics
from jaxzoo.data import shapeworld
from jaxzoo.diffusion import gaussian, text_to_image as t2i
from jaxzoo.diffusion.unet import UNet
from jaxzoo.train import cli, loop, mesh as mesh_lib, metrics as metrics_lib


def make_unet(m, context_dim: int, super_res: bool = False) -> UNet:
    return UNet(out_channels=3, channels=m.channels, channel_mult=tuple(m.channel_mult),
                num_res_blocks=tuple(m.num_res_blocks) if not isinstance(m.num_res_blocks, int)
                else m.num_res_blocks, attention_resolutions=tuple(m.attention_resolutions),
                num_heads=m.num_heads, dropout=m.dropout, num_groups=m.num_groups,
                scale_shift_norm=True, context_dim=context_dim, super_res=super_res,
                skip_scale=m.skip_scale)


def stage_config(config, stage: str, **sr_overrides) -> ml_collections.ConfigDict:
    """The run config of one stage: the base model's is `config`; an SR stage's has the top-level
    batch size, steps, EMA, learning rate, prediction and model of `config.sr` (with
    `sr_overrides`)."""
    c = ml_collections.ConfigDict(config.to_dict())
    if stage != "base":
        s = c.sr
        s.update(sr_overrides)
        c.model = s.model
        c.batch_size, c.total_steps, c.ema_decay = s.batch_size, s.total_steps, s.ema_decay
        c.optim.lr, c.optim.warmup_steps = s.lr, s.warmup_steps
        c.diffusion.prediction = s.prediction
    c.lock()
    return c


def _downsample(x):
    """[B, 2h, 2w, C] -> [B, h, w, C], the mean of each 2x2 square (as `shapeworld.downsample`)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4))


def _aug_noise(schedule, low, aug_t, key):
    """The low-resolution image noised to level ``aug_t`` (the forward process, Sec. 2.4)."""
    return gaussian.q_sample(schedule, low, aug_t, jax.random.normal(key, low.shape, low.dtype))


def make_task(config, model: UNet, encoder: t2i.TextEncoder, loader, super_res: bool) -> loop.Task:
    """The base model learns images from text; the SR model (``super_res``) learns the image
    from text and its 2x2-averaged copy, noised to a random level when `sr.noise_aug`."""
    schedule = t2i.make_schedule(config)
    max_aug = int(config.sr.max_aug * schedule.num_train_steps) if config.sr.noise_aug else 0

    def conditioning(batch, key):
        key_drop, key_aug, key_noise = jax.random.split(key, 3)
        b = len(batch["tokens"])
        out = dict(encoder.encode(batch["tokens"]), drop=t2i.drop_mask(key_drop, config.caption_dropout, b))
        if super_res:
            aug_t = jax.random.randint(key_aug, (b,), 0, max(max_aug, 1))
            out["aug_t"] = aug_t
            out["low_res"] = _aug_noise(schedule, _downsample(batch["image"]), aug_t, key_noise)
        return out

    size = config.data.sr_size if super_res else config.data.image_size
    L = config.data.max_len

    def init(key):
        x = jnp.zeros((1, size, size, 3))
        extra = {"low_res": jnp.zeros((1, size // 2, size // 2, 3)), "aug_t": jnp.zeros((1,), jnp.int32)}
        return model.init(key, x, jnp.zeros((1,), jnp.int32), **encoder.encode(jnp.zeros((1, L), jnp.int32)),
                          **(extra if super_res else {}))

    return loop.Task(init_params=init, loss_fn=t2i.denoising_loss_fn(config, model, conditioning),
                     tx=t2i.optimizer(config), loader=loader)


def train_stage(config, workdir: pathlib.Path, stage: str, encoder, tok, data: dict, hooks=(),
                **sr_overrides):
    """Trains one stage in workdir/<stage>; returns (model, EMA params, run config) or None if
    preempted."""
    run = stage_config(config, stage, **sr_overrides)
    super_res = stage != "base"
    model = make_unet(run.model, encoder.width, super_res)
    loader = clip_training.training_loader(run, t2i.pairs(run, data, tok))
    result = loop.train(run, workdir / stage, make_task(run, model, encoder, loader, super_res),
                        hooks=hooks)
    if result.preempted:
        return None
    state = result.state
    params = mesh_lib.to_host(state.ema_params if state.ema_params is not None else state.params)
    return model, params, run, result.step


def super_resolve(config, model, params, low_uint8, text: dict, key) -> np.ndarray:
    """SR samples ``[N, 2h, 2w, 3]`` in [-1, 1] from uint8 low-resolution images, their inputs
    noised to the fixed level `sr.sample_aug * T` (0 without augmentation)."""
    schedule = t2i.make_schedule(config)
    level = int(config.sr.sample_aug * schedule.num_train_steps) if config.sr.noise_aug else 0
    low = jnp.asarray(t2i.to_model_range(low_uint8))
    aug_t = jnp.full((len(low),), level, jnp.int32)
    low = np.asarray(_aug_noise(schedule, low, aug_t, jax.random.fold_in(key, 7)))
    size = config.data.sr_size
    e = config.eval
    return t2i.sample(config, model, params, dict(text, low_res=low, aug_t=np.asarray(aug_t)), key,
                      (size, size, 3), num_steps=e.sr_steps, guidance_scale=e.sr_guidance_scale,
                      threshold="static")


def evaluate_sr(config, stage, sr, encoder, tok, base_images, bench16, bench32, score32, key) -> dict:
    """Cascade and SR-alone metrics of one SR model (`stage` names the keys)."""
    model, params, run, _ = sr
    suffix = "" if stage == "sr" else "_without_aug"
    text = encoder.encode_numpy(bench16.tokens)
    out = {}
    cascade = t2i.to_uint8(super_resolve(run, model, params, base_images, text, key))
    out.update({f"cascade{suffix}_{k}": v for k, v in score32.scores(cascade, bench32).items()})
    # SR alone: real 16x16 test images (and their first captions) against the real 32x32 ones.
    n = config.eval.num_sr_test
    test32 = shapeworld.load("test", config.data.sr_size, config.data.data_dir or None)
    real32, low = test32["image"][:n], shapeworld.downsample(test32["image"][:n], config.data.image_size)
    tokens = shapeworld.encode(tok, [c[0] for c in test32["captions"][:n]], config.data.max_len)[0]
    up = t2i.to_uint8(super_resolve(run, model, params, low, encoder.encode_numpy(tokens), key))
    psnr = image_metrics.psnr(up.astype(np.float32) / 255.0, real32.astype(np.float32) / 255.0)
    out[f"sr_psnr{suffix}"] = float(np.mean(psnr))
    out[f"sr_fd_probe{suffix}"] = score32.fd(up)
    return out, cascade


def save_cascade(workdir, low, high, num: int = 8):
    if jax.process_index() != 0:
        return
    up = np.repeat(np.repeat(low[:num], 2, 1), 2, 2)
    rows = np.concatenate([up, high[:num]]).astype(np.float32) / 255.0
    viz.save_png(pathlib.Path(workdir) / "cascade.png", viz.image_grid(rows, num), scale=4)


def train_and_evaluate(config, workdir, hooks=()):
    """Trains the stages, then evaluates and writes eval.json. Returns the eval dict (None if
    preempted)."""
    workdir = pathlib.Path(workdir)
    t2i.check_image_size(config.data.image_size)
    if config.data.sr_size != 2 * config.data.image_size:
        from jaxzoo.errors import ConfigError

        raise ConfigError(f"data.sr_size={config.data.sr_size} must be twice data.image_size="
                          f"{config.data.image_size} (one 2x SR stage)")
    encoder, tok = t2i.text_encoder(config, config.text_encoder)
    dd = config.data.data_dir or None
    base = train_stage(config, workdir, "base", encoder, tok,
                       shapeworld.load("train", config.data.image_size, dd), hooks)
    stages = {}
    if config.sr.total_steps > 0:
        train32 = shapeworld.load("train", config.data.sr_size, dd)
        stages["sr"] = train_stage(config, workdir, "sr", encoder, tok, train32, hooks)
        if config.sr.compare_without_aug:
            stages["sr_without_aug"] = train_stage(config, workdir, "sr_without_aug", encoder, tok,
                                                   train32, hooks, noise_aug=False)
    if base is None or any(s is None for s in stages.values()):
        return None
    model, params, _, step = base
    size = config.data.image_size
    key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)

    def generate(tokens, key, **setting):
        return t2i.sample(config, model, params, encoder.encode_numpy(tokens), key, (size, size, 3),
                          **setting)

    bench = t2i.benchmark(config, tok)
    settings = t2i.settings(config, weight_thresholds=("static", "dynamic"))
    metrics, images = t2i.evaluate(config, generate, settings, bench, t2i.scorer(config), key)
    t2i.save_pictures(workdir, images, bench, metrics["best_setting"])
    if stages:
        config32 = stage_config(config, "sr")
        with config32.unlocked():
            config32.data.image_size = config.data.sr_size
        bench32 = t2i.benchmark(config32, tok)
        score32 = t2i.scorer(config32)
        metrics.update({f"real32_{k}": v for k, v in score32.scores(bench32.real, bench32).items()
                        if k != "fd_probe"})
        test32 = shapeworld.load("test", config.data.sr_size, dd)["image"]
        metrics["sr_fd_probe_floor_test"] = score32.fd(test32)
        base_images = images[metrics["best_setting"]]
        for stage, sr in stages.items():
            out, cascade = evaluate_sr(config, stage, sr, encoder, tok, base_images, bench, bench32,
                                       score32, key)
            metrics.update(out)
            if stage == "sr":
                save_cascade(workdir, base_images, cascade)
    metrics_lib.write_eval(workdir, metrics, step)
    return metrics


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
