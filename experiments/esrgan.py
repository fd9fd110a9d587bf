"""ESRGAN launcher (Wang et al. 2018, arXiv 1809.00219): x4 super-resolution in two stages.

    python -m experiments.esrgan --config=experiments/configs/esrgan.py:cpu_psnr --workdir=workdirs/esrgan_psnr
    python -m experiments.esrgan --config=experiments/configs/esrgan.py:cpu_gan --workdir=workdirs/esrgan_gan \
        --config.init_from=workdirs/esrgan_psnr

Stage `psnr` trains RRDBNet with the L1 loss. Stage `gan` starts the generator from the psnr
run's newest checkpoint and trains it against a discriminator with
L_G = L_percep + 5e-3 L_G^Ra + 1e-2 L_1 (ESRGAN Eq. 3), both networks in one step (see
`jaxzoo.train.sr`). Writes to the workdir: config.json, metrics.jsonl (+ tensorboard/),
checkpoints/, eval.json (`test_psnr`, `test_ssim`, `bicubic_psnr`, `bicubic_ssim`: means over
the test images on the Y channel with 4 pixels shaved, and their `*_per_image` lists) and
test_<k>_<name>.png triptychs (bicubic | output | ground truth).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import jax
import jax.numpy as jnp
import optax

from jaxzoo.core import sr_losses
from jaxzoo.models.rrdb import RRDBNet
from jaxzoo.models.srresnet import SRGANDiscriminator
from jaxzoo.models.vgg import VGGFeatures
from jaxzoo.train import config as config_lib
from jaxzoo.train import loop, mesh as mesh_lib, metrics as metrics_lib, sr as sr_lib


def make_generator(config) -> RRDBNet:
    m = config.model
    return RRDBNet(num_blocks=m.num_blocks, features=m.features, growth=m.growth, scale=config.data.scale)


def _adam(config):
    return optax.adam(sr_lib.multistep_schedule(config.optim.lr, config.optim.milestones),
                      b1=config.optim.b1, b2=config.optim.b2)


def _lr_shape(config):
    p = config.data.patch_size // config.data.scale
    return (1, p, p, 3)


def psnr_task(config, loader=None) -> loop.Task:
    model = make_generator(config)

    def loss_fn(params, batch, key):
        l1 = sr_losses.l1_loss(model.apply(params, batch["lr"]), batch["hr"])
        return l1, {"l1": l1}

    return loop.Task(init_params=lambda key: model.init(key, jnp.zeros(_lr_shape(config))),
                     loss_fn=loss_fn, tx=_adam(config), loader=loader)


def feature_extractor(config):
    """`x -> VGG19 features` (pre-activation, `loss.percep_layer`), frozen."""
    loss = config.loss
    net = VGGFeatures("vgg19", loss.percep_layer, base_features=loss.percep_base_features)
    if config.vgg_weights:
        from jaxzoo.models.sr_import import load_vgg_pth

        if not pathlib.Path(config.vgg_weights).is_file():
            raise FileNotFoundError(f"vgg_weights={config.vgg_weights!r} does not exist")
        variables = load_vgg_pth(config.vgg_weights, net)
    elif loss.percep_random_init:
        variables = net.init(jax.random.key(config.seed + 1), jnp.zeros((1, 32, 32, 3)))
    else:
        raise config_lib.ConfigError("the gan stage's perceptual loss needs VGG19 weights: "
                         "--config.vgg_weights=/path/to/vgg19.pth (torchvision state dict), or "
                         "--config.loss.percep_random_init=true for a random-feature stand-in")
    return lambda x: net.apply(variables, x)


def make_discriminator(config) -> SRGANDiscriminator:
    return SRGANDiscriminator(features=tuple(config.disc.features), dense_features=config.disc.dense_features,
                              patch_size=config.data.patch_size)


def gan_task(config, loader=None) -> loop.Task:
    generator, disc = make_generator(config), make_discriminator(config)
    hr_shape = (1, config.data.patch_size, config.data.patch_size, 3)
    discriminate = sr_lib.discriminator_apply(disc, hr_shape)
    features = feature_extractor(config)
    w = config.loss

    def generator_loss(sr, hr, real, fake):
        pixel = sr_losses.l1_loss(sr, hr)
        percep = sr_losses.perceptual_loss(features(sr), jax.lax.stop_gradient(features(hr)))
        adv = 0.5 * sr_losses.ragan_generator_loss(real, fake)  # 0.5: the released code's mean
        total = w.percep_weight * percep + w.adv_weight * adv + w.pixel_weight * pixel
        return total, {"l1": pixel, "percep": percep, "adv_g": adv}

    def discriminator_loss(real, fake):
        loss = 0.5 * sr_losses.ragan_discriminator_loss(real, fake)
        return loss, {"d_real_logit": jnp.mean(real), "d_fake_logit": jnp.mean(fake)}

    generator_params = sr_lib.restore_generator(config.init_from, config, psnr_task)

    def init_params(key):
        return {"generator": generator_params,
                "discriminator": disc.init(key, jnp.zeros(hr_shape))["params"]}

    loss_fn = sr_lib.gan_loss_fn(generator.apply, discriminate, generator_loss, discriminator_loss)
    return loop.Task(init_params=init_params, loss_fn=loss_fn,
                     tx=sr_lib.gan_optimizer(_adam(config), _adam(config)), loader=loader)


def train_and_evaluate(config, workdir, hooks=()):
    """Trains the configured stage, then evaluates and writes eval.json (None if preempted)."""
    workdir = pathlib.Path(workdir)
    # The task first (a gan stage checks init_from and the VGG weights), then the data.
    task = psnr_task(config) if config.stage == "psnr" else gan_task(config)
    train_pairs, test_pairs = sr_lib.load_data(config)
    task = dataclasses.replace(task, loader=sr_lib.make_loader(config, train_pairs))
    result = loop.train(config, workdir, task, hooks=hooks)
    if result.preempted:
        return None
    params = mesh_lib.to_host(result.state.params)
    generator = make_generator(config)
    if config.stage == "gan":
        params = params["generator"]
    metrics = sr_lib.evaluate(config, generator.apply, params, test_pairs, workdir)
    metrics["step"] = result.step
    metrics_lib.write_json(workdir / "eval.json", metrics)
    print(f"[jaxzoo] eval: test_psnr={metrics['test_psnr']:.2f} dB (bicubic {metrics['bicubic_psnr']:.2f}) "
          f"test_ssim={metrics['test_ssim']:.4f} (bicubic {metrics['bicubic_ssim']:.4f}) "
          f"over {metrics['num_test_images']} images", flush=True)
    return metrics


def main(argv):
    args = config_lib.cli(argv)
    try:
        train_and_evaluate(args.config, args.workdir)
    except (FileNotFoundError, config_lib.ConfigError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main(sys.argv)
