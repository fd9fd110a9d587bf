"""DDPM (Ho et al. 2020, arXiv 2006.11239) image generation, sampled with DDIM and DPM-Solver++.

Variants:
  cpu    scikit-learn's digits, bilinearly upsampled from 8x8 to 16x16 (1500 train / 297 test,
         embedded: no download), a small U-Net (32 channels, multipliers (1, 2), one ResBlock
         per level, attention at 8x8, dropout 0.1), T = 1000 linear betas, eps prediction,
         Adam 1e-3 (warm-up 200 steps, clipping 1), batch 64, 1500 steps, EMA 0.995.
           python -m experiments.ddpm --config=experiments/configs/ddpm.py:cpu --workdir=/tmp/ddpm
         Scored by a Frechet distance on the features of a small CNN trained on the same digits
         (not Inception FID) for DDIM and DPM-Solver++(2M) at 10, 20 and 50 steps, with 297
         samples each (= the test split). Reached (seed 0): DPM-Solver++ 4.9 / 5.0 / 5.2 and DDIM
         8.7 / 6.2 / 5.5 at 10 / 20 / 50 steps, against a floor of 2.3 (held-out test digits) and
         a ceiling of 593 (clipped noise). Measured on 2 idle CPU cores: 6 min 38 s wall
         including the Frechet classifier (11 s) and evaluation (46 s); about 4.6 steps/s.
  paper  DDPM's CIFAR-10 model (Sec. 4, App. B): 128 channels, multipliers (1, 2, 2, 2), two
         ResBlocks per level, attention at 16x16, dropout 0.1, T = 1000 linear betas 1e-4..0.02,
         Adam 2e-4 with 5000 warm-up steps, gradient clipping 1, batch 128, random horizontal
         flips, EMA 0.9999, 800k steps (35.7M parameters). Needs CIFAR-10 prepared in TFDS
         (array_record): `tfds build cifar10 --file_format=array_record`.
"""

import ml_collections

from jaxzoo.diffusion import gaussian, samplers
from jaxzoo.train.config import AtLeast, base_config

VARIANTS = ("cpu", "paper")
CHOICES = {
    "data.name": ("digits16", "cifar10"),
    "diffusion.schedule": gaussian.SCHEDULES,
    "diffusion.prediction": gaussian.PREDICTIONS,
    "diffusion.loss_weight": gaussian.LOSS_WEIGHTS,
    "eval.methods": samplers.METHODS,
    "eval.spacing": samplers.SAMPLE_SPACINGS,
    "eval.num_steps": AtLeast(1),
    "eval.num_samples": AtLeast(1),
    "eval.batch_size": AtLeast(0),
    "eval.grid_size": AtLeast(1),
    "fd.steps": AtLeast(1),
    "fd.batch_size": AtLeast(1),
    "fd.feature_dim": AtLeast(1),
    "fd.widths": AtLeast(1),
    "fd.max_reference": AtLeast(0),
}


def get_config(variant=None):
    c = base_config(variant, VARIANTS)
    variant = c.variant

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = ""  # empty: $JAXZOO_DATA_DIR or ~/.cache/jaxzoo/tensorflow_datasets

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.schedule = "linear"  # linear | cosine | scaled_linear
    c.diffusion.num_train_steps = 1000
    c.diffusion.beta_start = 1e-4
    c.diffusion.beta_end = 0.02
    c.diffusion.prediction = "eps"  # what the network predicts: eps | x0 | v
    c.diffusion.loss_weight = "uniform"  # uniform (DDPM's L_simple) | min_snr

    c.model = ml_collections.ConfigDict()
    c.model.num_heads = 1
    c.model.dropout = 0.1
    c.model.num_groups = 32
    c.model.scale_shift_norm = False
    c.model.num_classes = 0  # > 0: class-conditional, trained with label dropout for guidance
    c.label_dropout = 0.1  # classifier-free guidance: probability a label is dropped in training

    c.optim = ml_collections.ConfigDict()
    c.optim.grad_clip = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999

    c.eval = ml_collections.ConfigDict()
    c.eval.methods = ("ddim", "dpmpp_2m")
    c.eval.num_steps = (10, 20, 50)
    c.eval.spacing = "trailing"  # timestep spacing of the samplers
    c.eval.guidance_scale = 1.0  # class-conditional models only; 1: the conditional model
    c.eval.grid_size = 64  # samples in samples.png

    # The Frechet-distance feature network: a small CNN trained on the training images (cached
    # in the workdir as fd_classifier.msgpack, deterministic for a fixed seed).
    c.fd = ml_collections.ConfigDict()
    c.fd.widths = (16, 32)
    c.fd.feature_dim = 64
    c.fd.batch_size = 128
    c.fd.lr = 2e-3
    c.fd.seed = 0

    if variant == "cpu":
        c.data.name = "digits16"
        c.data.random_flip = False  # digits are not mirror-symmetric
        c.model.channels = 32
        c.model.channel_mult = (1, 2)
        c.model.num_res_blocks = 1
        c.model.attention_resolutions = (8,)
        c.model.num_groups = 8
        c.optim.lr = 1e-3
        c.optim.warmup_steps = 200
        c.batch_size = 64
        c.total_steps = 1500
        c.ema_decay = 0.995
        c.log_every = 100
        c.checkpoint_every = 1000
        c.eval.num_samples = 297  # = the test split: the FD floor has the same sample-size bias
        c.eval.batch_size = 297
        c.fd.steps = 500  # about 10 s on CPU, ~95% test accuracy on the digits
        c.fd.max_reference = 0  # 0: every training image
    else:
        c.data.name = "cifar10"
        c.data.random_flip = True
        c.model.channels = 128
        c.model.channel_mult = (1, 2, 2, 2)
        c.model.num_res_blocks = 2
        c.model.attention_resolutions = (16,)
        c.optim.lr = 2e-4
        c.optim.warmup_steps = 5000
        c.batch_size = 128
        c.total_steps = 800_000
        c.ema_decay = 0.9999
        c.log_every = 1000
        c.checkpoint_every = 20_000
        c.eval.num_samples = 10_000
        c.eval.batch_size = 1000
        c.fd.widths = (64, 128)
        c.fd.feature_dim = 128
        c.fd.steps = 5000
        c.fd.max_reference = 10_000
    c.lock()
    return c
