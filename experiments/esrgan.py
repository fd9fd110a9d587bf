"""ESRGAN launcher (Wang et al. 2018, arXiv 1809.00219): x4 super-resolution in two stages.

    python -m experiments.esrgan --config=experiments/configs/esrgan.py:cpu_psnr --workdir=workdirs/esrgan_psnr
    python -m experiments.esrgan --config=experiments/configs/esrgan.py:cpu_gan --workdir=workdirs/esrgan_gan \
        --config.init_from=workdirs/esrgan_psnr

Stage `psnr` trains RRDBNet with the L1 loss. Stage `gan` starts the generator from the psnr
run's newest checkpoint and trains it against a discriminator with
L_G = L_percep + 5e-3 L_G^Ra + 1e-2 L_1 (ESRGAN Eq. 3), both networks in one step (see
`jaxzoo.train.gan`). Writes to the workdir: config.json, metrics.jsonl (+ tensorboard/),
checkpoints/, eval.json (`test_psnr`, `test_ssim`, `bicubic_psnr`, `bicubic_ssim`: means over
the test images on the Y channel with 4 pixels shaved, and their `*_per_image` lists) and
test_<k>_<name>.png triptychs (bicubic | output | ground truth). Network interpolation between
the two stages (Sec. 3.4): experiments/sr_interpolate.py.
"""

from __future__ import annotations

import jax

from jaxzoo.core.gan_losses import ragan_discriminator_loss, ragan_generator_loss
from jaxzoo.sr import losses as sr_losses, training as sr_training
from jaxzoo.train import cli


def feature_extractor(config):
    """`x -> VGG19 features` (pre-activation, `loss.percep_layer`), frozen."""
    return sr_training.vgg_features(config, "perceptual loss")


def gan_losses(config):
    """(generator_loss, discriminator_loss) of the gan stage, for `jaxzoo.sr.training.gan_task`:
    ESRGAN Eq. 3 for G, the relativistic average discriminator loss (Eq. 1-2) for D."""
    features = feature_extractor(config)
    w = config.loss

    def generator_loss(sr, hr, real, fake):
        pixel = sr_losses.l1_loss(sr, hr)
        percep = sr_losses.perceptual_loss(features(sr), jax.lax.stop_gradient(features(hr)))
        adv = 0.5 * ragan_generator_loss(real, fake)  # 0.5: the released code's mean
        total = w.percep_weight * percep + w.adv_weight * adv + w.pixel_weight * pixel
        return total, {"l1": pixel, "percep": percep, "adv_g": adv}

    def discriminator_loss(real, fake):
        return 0.5 * ragan_discriminator_loss(real, fake), {}

    return generator_loss, discriminator_loss


def train_and_evaluate(config, workdir, hooks=()):
    """Trains the configured ESRGAN stage, then evaluates its generator and writes eval.json
    (None if preempted)."""
    return sr_training.train_and_evaluate(config, workdir, gan_losses, hooks=hooks)


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
