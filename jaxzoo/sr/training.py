"""What the super-resolution launchers (experiments/esrgan.py, experiments/srgan.py) and
experiments/sr_interpolate.py share: the generator and pixel loss named by the config, data, the
psnr-stage and gan-stage tasks, restoring a trained generator from a workdir, and evaluation
(eval.json + PNG triptychs). Each launcher supplies only its paper's gan-stage losses.

The gan stage trains generator and discriminator in one step of the shared runtime
(`jaxzoo.train.gan` explains why that equals ESRGAN's alternating updates).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxzoo import viz
from jaxzoo.core import image_metrics
from jaxzoo.errors import ConfigError, DataError, MissingFileError
from jaxzoo.sr import data as sr_images, losses
from jaxzoo.sr.configs import CHOICES
from jaxzoo.sr.ops import rgb_to_y, shave
from jaxzoo.sr.rrdb import RRDBNet
from jaxzoo.sr.srresnet import SRGANDiscriminator, SRResNet
from jaxzoo.sr.vgg import VGGFeatures
from jaxzoo.train import gan, loop, mesh as mesh_lib, metrics as metrics_lib
from jaxzoo.train.progress import progress

# ----------------------------------------------------------------------------- data


def _check_source(config, source: str, field: str) -> None:
    if source not in sr_images.SOURCES:
        raise ConfigError(f"data source {source!r}; allowed: {sr_images.SOURCES}")
    if source == "dir" and not config.data[field]:
        raise ConfigError(f"data source 'dir' needs --config.data.{field}=/path/to/HR/images")


def load_test_pairs(config):
    """The test pairs of `config.data` (test_source, test_dir, ...), `eval.max_images` of them."""
    d = config.data
    _check_source(config, d.test_source, "test_dir")
    return sr_images.load_pairs(d.test_source, "test", scale=d.scale, root=d.test_dir, data_dir=d.tfds_dir,
                                limit=config.eval.max_images)


def load_data(config):
    """(train pairs, test pairs) for `config.data` (source, test_source, test_dir, ...)."""
    d = config.data
    _check_source(config, d.source, "train_dir")
    _check_source(config, d.test_source, "test_dir")
    train = sr_images.load_pairs(d.source, "train", scale=d.scale, root=d.train_dir, data_dir=d.tfds_dir,
                                 limit=d.max_train_images)
    return train, load_test_pairs(config)


def make_loader(config, train_pairs):
    return sr_images.training_loader(train_pairs, config.batch_size, config.data.patch_size,
                                     seed=config.seed, scale=config.data.scale,
                                     augment=config.data.augment)


# ----------------------------------------------------------------------------- models and optimisers


PIXEL_LOSSES = {"l1": losses.l1_loss, "mse": losses.l2_loss}


def make_generator(config):
    """The generator `config.model.arch` names: ESRGAN's RRDBNet (num_blocks, features, growth)
    or SRGAN's SRResNet (num_blocks, features; no BatchNorm, as ESRGAN Sec. 3.1 recommends)."""
    m = config.model
    if m.arch == "rrdbnet":
        return RRDBNet(num_blocks=m.num_blocks, features=m.features, growth=m.growth,
                       scale=config.data.scale)
    if m.arch == "srresnet":
        return SRResNet(num_blocks=m.num_blocks, features=m.features, scale=config.data.scale,
                        use_batchnorm=False)
    raise ConfigError(f"model.arch={m.arch!r}; allowed: {CHOICES['model.arch']}")


def pixel_loss(config) -> Callable:
    """The psnr stage's pixel loss `loss.pixel`: 'l1' (ESRGAN) or 'mse' (SRGAN Eq. 4)."""
    if config.loss.pixel not in PIXEL_LOSSES:
        raise ConfigError(f"loss.pixel={config.loss.pixel!r}; allowed: {tuple(PIXEL_LOSSES)}")
    return PIXEL_LOSSES[config.loss.pixel]


def multistep_schedule(lr: float, milestones, gamma: float = 0.5) -> optax.Schedule:
    """`lr`, multiplied by `gamma` at each step in `milestones` (PyTorch's MultiStepLR; ESRGAN
    halves, gamma 0.5)."""
    return optax.piecewise_constant_schedule(lr, {int(m): gamma for m in milestones})


def adam(config) -> optax.GradientTransformation:
    """Adam(b1, b2) with `optim.lr` multiplied by `optim.gamma` at each of `optim.milestones`."""
    o = config.optim
    return optax.adam(multistep_schedule(o.lr, o.milestones, o.gamma), b1=o.b1, b2=o.b2)


def make_discriminator(config) -> SRGANDiscriminator:
    return SRGANDiscriminator(features=tuple(config.disc.features), dense_features=config.disc.dense_features,
                              patch_size=config.data.patch_size)


def vgg_features(config, loss_name: str) -> Callable:
    """`x -> VGG19 pre-activation features` at `loss.percep_layer`, frozen: torchvision weights
    from `config.vgg_weights`, or a random stand-in if `loss.percep_random_init`; else a
    ConfigError naming both options (`loss_name` says which loss needs them)."""
    loss = config.loss
    net = VGGFeatures("vgg19", loss.percep_layer, base_features=loss.percep_base_features)
    if config.vgg_weights:
        from jaxzoo.sr.importers import load_vgg_pth

        if not pathlib.Path(config.vgg_weights).is_file():
            raise MissingFileError(f"vgg_weights={config.vgg_weights!r} does not exist")
        try:
            variables = load_vgg_pth(config.vgg_weights, net)
        except ValueError as e:  # a malformed or hostile file, or weights of another network
            raise DataError(f"vgg_weights={config.vgg_weights!r}: {e}") from None
    elif loss.percep_random_init:
        variables = net.init(jax.random.key(config.seed + 1), jnp.zeros((1, 32, 32, 3)))
    else:
        raise ConfigError(f"the gan stage's {loss_name} needs VGG19 weights: --config.vgg_weights="
                          "/path/to/vgg19.pth (torchvision state dict), or "
                          "--config.loss.percep_random_init=true for a random-feature stand-in")
    return lambda x: net.apply(variables, x)


# ----------------------------------------------------------------------------- tasks


def lr_shape(config) -> tuple[int, int, int, int]:
    p = config.data.patch_size // config.data.scale
    return (1, p, p, 3)


def psnr_task(config, loader=None) -> loop.Task:
    """The psnr stage: the config's generator trained on its pixel loss (logged as `loss.pixel`)."""
    generator, loss = make_generator(config), pixel_loss(config)

    def loss_fn(params, batch, key):
        value = loss(generator.apply(params, batch["lr"]), batch["hr"])
        return value, {config.loss.pixel: value}

    return loop.Task(init_params=lambda key: generator.init(key, jnp.zeros(lr_shape(config))),
                     loss_fn=loss_fn, tx=adam(config), loader=loader)


def gan_task(config, generator_loss: Optional[Callable], discriminator_loss: Optional[Callable],
             generator_params=None, loader=None) -> loop.Task:
    """The gan stage: the config's generator against `make_discriminator(config)`, both trained
    in one step (`jaxzoo.train.gan`), each with its own `adam(config)`. The generator starts from
    `generator_params` (the psnr stage's), or from a fresh init if None: that task only gives the
    state's layout, e.g. to restore a finished gan run (losses may then be None)."""
    generator, disc = make_generator(config), make_discriminator(config)
    hr_shape = (1, config.data.patch_size, config.data.patch_size, 3)
    discriminate = gan.discriminator_apply(disc, hr_shape)

    def init_params(key):
        g = generator_params
        if g is None:  # the layout only
            key, kg = jax.random.split(key)
            g = generator.init(kg, jnp.zeros(lr_shape(config)))
        return {"generator": g, "discriminator": disc.init(key, jnp.zeros(hr_shape))["params"]}

    loss_fn = gan.gan_loss_fn(generator.apply, discriminate, generator_loss, discriminator_loss)
    return loop.Task(init_params=init_params, loss_fn=loss_fn,
                     tx=gan.gan_optimizer(adam(config), adam(config)), loader=loader)


def check_model(config, run_config, workdir) -> None:
    """A ConfigError unless the run in `workdir` (`run_config`) has the model of `config`."""
    ours, theirs = config.model.to_dict(), run_config.model.to_dict()
    if json.loads(json.dumps(ours, default=str)) != theirs:
        raise ConfigError(f"config.model {ours} differs from the {run_config.get('stage')} run's model "
                          f"{theirs} ({workdir}/config.json)")


def restore_trained_generator(workdir, *, stage: Optional[str] = None, config=None,
                              what: str = "init_from"):
    """(step, generator params) of the newest checkpoint of the run in `workdir`, whose own
    config.json gives the layout. `stage`, if given, must be the run's stage, and
    `config.model`, if given, its model; either mismatch is a ConfigError naming `what` (the
    flag that gave `workdir`)."""
    run_config = loop.read_run_config(workdir, what)
    run_stage = run_config.get("stage")
    if stage is not None and run_stage != stage:
        raise ConfigError(f"{what}={str(workdir)!r} holds a {run_stage!r}-stage run; it must be a "
                          f"{stage}-stage workdir")
    if config is not None:
        check_model(config, run_config, workdir)
    task = psnr_task(run_config) if run_stage == "psnr" else gan_task(run_config, None, None)
    step, state = loop.restore_state(run_config, workdir, task)
    params = mesh_lib.to_host(state.params)
    return step, params if run_stage == "psnr" else params["generator"]


def restore_generator(config):
    """The generator params of the newest checkpoint of the psnr-stage run in `config.init_from`,
    whose model settings must equal `config.model` (the gan stage continues that network)."""
    if not config.init_from:
        raise ConfigError("the gan stage starts from a trained psnr-stage model: set "
                          "--config.init_from=/path/to/psnr/workdir")
    step, params = restore_trained_generator(config.init_from, stage="psnr", config=config)
    print(f"[jaxzoo] generator initialised from {config.init_from} (psnr step {step})", flush=True)
    return params


# ----------------------------------------------------------------------------- evaluation


def quantize(img) -> np.ndarray:
    """Clip to [0, 1] and round to 8-bit levels, as saved images (and SR benchmarks) are."""
    return np.round(np.clip(np.asarray(img, np.float32), 0.0, 1.0) * 255.0) / 255.0


def y_metrics(pred, truth, border: int) -> tuple[float, float]:
    """(PSNR, SSIM) on the BT.601 luma of [H, W, 3] images after shaving `border` pixels."""
    a = shave(rgb_to_y(jnp.asarray(pred, jnp.float32)), border)
    b = shave(rgb_to_y(jnp.asarray(truth, jnp.float32)), border)
    return float(image_metrics.psnr(a, b)), float(image_metrics.ssim(a, b))


def evaluate(config, generate: Callable, params, test_pairs, workdir=None,
             on_image: Optional[Callable] = None) -> dict:
    """PSNR/SSIM of the model and of bicubic upsampling on each test image (Y channel, `scale`
    pixels shaved), their means, and, if `workdir` is given, `test_<k>_<name>.png` triptychs
    (bicubic | output | truth) of the first `eval.num_pictures` images.

    generate: `(params, lr [1, h, w, 3]) -> [1, scale h, scale w, 3]`.
    on_image: called as `on_image(k, name, bicubic, output, truth)` with quantized [H, W, 3]
      images for every test image.
    """
    scale, border = config.data.scale, config.data.scale
    count = len(test_pairs) if not config.eval.max_images else min(config.eval.max_images, len(test_pairs))
    run = jax.jit(generate)
    out = {k: [] for k in ("test_psnr_per_image", "test_ssim_per_image", "bicubic_psnr_per_image",
                           "bicubic_ssim_per_image", "test_images")}
    with progress(count, desc="eval", unit="image") as bar:
        for k in range(count):
            pair = test_pairs[k]
            hr, lr = sr_images.to_float(pair.hr), sr_images.to_float(pair.lr)
            pred = quantize(run(params, jnp.asarray(lr[None]))[0])
            bicubic = quantize(sr_images.upsample_bicubic(lr, scale))
            p, s = y_metrics(pred, hr, border)
            bp, bs = y_metrics(bicubic, hr, border)
            for name, v in (("test_psnr", p), ("test_ssim", s), ("bicubic_psnr", bp), ("bicubic_ssim", bs)):
                out[f"{name}_per_image"].append(v)
            out["test_images"].append(pair.name)
            if workdir is not None and k < config.eval.num_pictures and jax.process_index() == 0:
                viz.save_png(pathlib.Path(workdir) / f"test_{k}_{pair.name}.png",
                             np.concatenate([bicubic, pred, hr], 1))
            if on_image is not None:
                on_image(k, pair.name, bicubic, pred, hr)
            bar.update(1)
    for name in ("test_psnr", "test_ssim", "bicubic_psnr", "bicubic_ssim"):
        out[name] = float(np.mean(out[f"{name}_per_image"]))
    out["num_test_images"] = count
    return out


# ----------------------------------------------------------------------------- launcher


def train_and_evaluate(config, workdir, gan_losses: Callable, hooks=()):
    """Trains the configured stage, then evaluates the generator and writes eval.json (None if
    preempted). The psnr stage trains `psnr_task(config)`; the gan stage trains `gan_task` with
    the paper's `gan_losses(config) -> (generator_loss, discriminator_loss)`, its generator
    restored from the psnr run `init_from`."""
    workdir = pathlib.Path(workdir)
    # The task first (a gan stage checks the VGG weights and init_from), then the data.
    if config.stage == "psnr":
        task = psnr_task(config)
    else:
        task = gan_task(config, *gan_losses(config), restore_generator(config))
    train_pairs, test_pairs = load_data(config)
    task = dataclasses.replace(task, loader=make_loader(config, train_pairs))
    result = loop.train(config, workdir, task, hooks=hooks)
    if result.preempted:
        return None
    params = mesh_lib.to_host(result.state.params)
    if config.stage == "gan":
        params = params["generator"]
    metrics = evaluate(config, make_generator(config).apply, params, test_pairs, workdir)
    return metrics_lib.write_eval(workdir, metrics, result.step)
