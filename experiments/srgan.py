"""SRGAN launcher (Ledig et al. 2017, arXiv 1609.04802): x4 super-resolution in two stages.

    python -m experiments.srgan --config=experiments/configs/srgan.py:cpu_psnr --workdir=workdirs/srgan_psnr
    python -m experiments.srgan --config=experiments/configs/srgan.py:cpu_gan --workdir=workdirs/srgan_gan \
        --config.init_from=workdirs/srgan_psnr

Stage `psnr` trains SRResNet with the pixel MSE (SRGAN Eq. 4). Stage `gan` starts from the psnr
run's newest checkpoint and minimises l_VGG54 + 1e-3 l_Gen (Eq. 3, 5, 6) against the SRGAN
discriminator (BCE, Eq. 2), both networks in one step (see `jaxzoo.train.sr`). Writes the same
files as experiments/esrgan.py: config.json, metrics.jsonl, checkpoints/, eval.json (`test_psnr`,
`test_ssim`, `bicubic_psnr`, `bicubic_ssim`, Y channel, 4 pixels shaved, means and per image)
and test_<k>_<name>.png triptychs (bicubic | output | ground truth).
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import jax
import jax.numpy as jnp
import optax

from jaxzoo.core import sr_losses
from jaxzoo.models.srresnet import SRGANDiscriminator, SRResNet
from jaxzoo.models.vgg import VGGFeatures
from jaxzoo.train import config as config_lib
from jaxzoo.train import loop, mesh as mesh_lib, metrics as metrics_lib, sr as sr_lib


def make_generator(config) -> SRResNet:
    m = config.model
    return SRResNet(num_blocks=m.num_blocks, features=m.features, scale=config.data.scale,
                    use_batchnorm=False)


def _adam(config):
    o = config.optim
    return optax.adam(sr_lib.multistep_schedule(o.lr, o.milestones, o.gamma), b1=o.b1, b2=o.b2)


def _lr_shape(config):
    p = config.data.patch_size // config.data.scale
    return (1, p, p, 3)


def psnr_task(config, loader=None) -> loop.Task:
    model = make_generator(config)

    def loss_fn(params, batch, key):
        mse = sr_losses.l2_loss(model.apply(params, batch["lr"]), batch["hr"])
        return mse, {"mse": mse}

    return loop.Task(init_params=lambda key: model.init(key, jnp.zeros(_lr_shape(config))),
                     loss_fn=loss_fn, tx=_adam(config), loader=loader)


def feature_extractor(config):
    """`x -> VGG19 features after ReLU` at `loss.percep_layer` (SRGAN's phi_{5,4}), frozen."""
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
        raise config_lib.ConfigError(
            "the gan stage's VGG content loss needs VGG19 weights: --config.vgg_weights=/path/to/"
            "vgg19.pth (torchvision state dict), or --config.loss.percep_random_init=true for a "
            "random-feature stand-in")
    return lambda x: jax.nn.relu(net.apply(variables, x))


def gan_task(config, loader=None) -> loop.Task:
    generator = make_generator(config)
    disc = SRGANDiscriminator(features=tuple(config.disc.features),
                              dense_features=config.disc.dense_features, patch_size=config.data.patch_size)
    hr_shape = (1, config.data.patch_size, config.data.patch_size, 3)
    discriminate = sr_lib.discriminator_apply(disc, hr_shape)
    features = feature_extractor(config)
    w = config.loss

    def generator_loss(sr, hr, real, fake):
        del real  # the standard GAN generator loss only scores the fakes
        content = sr_losses.perceptual_loss(w.content_scale * features(sr),
                                            jax.lax.stop_gradient(w.content_scale * features(hr)), "l2")
        adv = sr_losses.srgan_generator_loss(fake)
        return content + w.adv_weight * adv, {"content": content, "adv_g": adv,
                                              "mse": sr_losses.l2_loss(sr, hr)}

    def discriminator_loss(real, fake):
        loss = sr_losses.srgan_discriminator_loss(real, fake)
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
    if config.stage == "gan":
        params = params["generator"]
    metrics = sr_lib.evaluate(config, make_generator(config).apply, params, test_pairs, workdir)
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
