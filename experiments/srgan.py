"""SRGAN launcher (Ledig et al. 2017, arXiv 1609.04802): x4 super-resolution in two stages.

    python -m experiments.srgan --config=experiments/configs/srgan.py:cpu_psnr --workdir=workdirs/srgan_psnr
    python -m experiments.srgan --config=experiments/configs/srgan.py:cpu_gan --workdir=workdirs/srgan_gan \
        --config.init_from=workdirs/srgan_psnr

Stage `psnr` trains SRResNet with the pixel MSE (SRGAN Eq. 4). Stage `gan` starts from the psnr
run's newest checkpoint and minimises l_VGG54 + 1e-3 l_Gen (Eq. 3, 5, 6) against the SRGAN
discriminator (BCE, Eq. 2), both networks in one step (see `jaxzoo.train.gan`). Writes the same
files as experiments/esrgan.py: config.json, metrics.jsonl, checkpoints/, eval.json (`test_psnr`,
`test_ssim`, `bicubic_psnr`, `bicubic_ssim`, Y channel, 4 pixels shaved, means and per image)
and test_<k>_<name>.png triptychs (bicubic | output | ground truth).
"""

from __future__ import annotations

import jax

from jaxzoo.core.gan_losses import bce_discriminator_loss, nonsaturating_generator_loss
from jaxzoo.sr import losses as sr_losses, training as sr_training
from jaxzoo.train import cli


def feature_extractor(config):
    """`x -> VGG19 features after ReLU` at `loss.percep_layer` (SRGAN's phi_{5,4}), frozen."""
    features = sr_training.vgg_features(config, "VGG content loss")
    return lambda x: jax.nn.relu(features(x))


def gan_losses(config):
    """(generator_loss, discriminator_loss) of the gan stage, for `jaxzoo.sr.training.gan_task`:
    content + 1e-3 adversarial (SRGAN Eq. 3, 5, 6) for G, the BCE of Eq. 2 for D."""
    features = feature_extractor(config)
    w = config.loss

    def generator_loss(sr, hr, real, fake):
        del real  # the standard GAN generator loss only scores the fakes
        content = sr_losses.perceptual_loss(w.content_scale * features(sr),
                                            jax.lax.stop_gradient(w.content_scale * features(hr)), "l2")
        adv = nonsaturating_generator_loss(fake)
        return content + w.adv_weight * adv, {"content": content, "adv_g": adv,
                                              "mse": sr_losses.l2_loss(sr, hr)}

    def discriminator_loss(real, fake):
        return bce_discriminator_loss(real, fake), {}

    return generator_loss, discriminator_loss


def train_and_evaluate(config, workdir, hooks=()):
    """Trains the configured SRGAN stage, then evaluates its generator and writes eval.json
    (None if preempted)."""
    return sr_training.train_and_evaluate(config, workdir, gan_losses, hooks=hooks)


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
