"""ESRGAN launcher (Wang et al. 2018, arXiv 1809.00219): x4 super-resolution in two stages.

    python -m experiments.esrgan --config=experiments/configs/esrgan.py:cpu_psnr --workdir=workdirs/esrgan_psnr
    python -m experiments.esrgan --config=experiments/configs/esrgan.py:cpu_gan --workdir=workdirs/esrgan_gan \
        --config.init_from=workdirs/esrgan_psnr

Stage `psnr` trains RRDBNet with the L1 loss. Stage `gan` starts the generator from the psnr
run's newest checkpoint and trains it against a discriminator with
L_G = L_percep + 5e-3 L_G^Ra + 1e-2 L_1 (ESRGAN Eq. 3), both networks in one step (see
`experiments._sr`). Writes to the workdir: config.json, metrics.jsonl (+ tensorboard/),
checkpoints/, eval.json (`test_psnr`, `test_ssim`, `bicubic_psnr`, `bicubic_ssim`: means over
the test images on the Y channel with 4 pixels shaved, and their `*_per_image` lists) and
test_<k>_<name>.png triptychs (bicubic | output | ground truth). Network interpolation between
the two stages (Sec. 3.4): experiments/sr_interpolate.py.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp

from experiments import _sr
from jaxzoo.core import sr_losses
from jaxzoo.models.rrdb import RRDBNet
from jaxzoo.train import loop


def make_generator(config) -> RRDBNet:
    m = config.model
    return RRDBNet(num_blocks=m.num_blocks, features=m.features, growth=m.growth, scale=config.data.scale)


def psnr_task(config, loader=None) -> loop.Task:
    return _sr.psnr_task(config, make_generator(config), sr_losses.l1_loss, "l1", loader)


def feature_extractor(config):
    """`x -> VGG19 features` (pre-activation, `loss.percep_layer`), frozen."""
    return _sr.vgg_features(config, "perceptual loss")


def gan_losses(config):
    """(generator_loss, discriminator_loss) of the gan stage, for `_sr.gan_task`: ESRGAN Eq. 3
    for G, the relativistic average discriminator loss (Eq. 1-2) for D."""
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

    return generator_loss, discriminator_loss


def train_and_evaluate(config, workdir, hooks=()):
    """Trains the configured stage, then evaluates and writes eval.json (None if preempted)."""
    return _sr.train_and_evaluate(config, workdir, make_generator=make_generator, psnr_task=psnr_task,
                                  gan_losses=gan_losses, hooks=hooks)


def main(argv):
    _sr.main(argv, train_and_evaluate)


if __name__ == "__main__":
    main(sys.argv)
