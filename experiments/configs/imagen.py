"""Imagen (Saharia et al. 2022, arXiv 2205.11487): a frozen text encoder, a text-conditioned base
diffusion model and a text-conditioned super-resolution model with noise conditioning
augmentation, sampled with classifier-free guidance and static or dynamic thresholding.

Variants:
  cpu    ShapeWorld: the base model at 16x16 (32x32 images averaged over 2x2 pixels), the
         super-resolution (SR) model 16 -> 32, the images with at most two objects and all five
         captions. The frozen text encoder is the text tower of the CLIP trained on ShapeWorld
         (`clip.workdir`, or the cached `clip.training.shapeworld_recipe` model: width 64, two
         blocks); `text_encoder=random` freezes a randomly initialised tower of the same shape
         instead (the floor of Imagen's text-encoder ablation, Sec. 4.4). Its token outputs are
         attended to by every U-Net attention layer and its pooled output is added to the
         timestep embedding (Sec. 2.1, App. B). Efficient U-Net details (App. B.1): skip
         connections scaled by 1/sqrt(2), more ResBlocks at lower resolution. Cosine schedule,
         T = 1000, eps prediction, 10% of captions dropped. SR: the low-resolution image noised
         to a level drawn uniformly from [0, sr.max_aug * T) in training, that level given to
         the network, and a fixed level `sr.sample_aug * T` at sampling (Sec. 2.4); a second SR
         model trained without augmentation for the comparison (sr.compare_without_aug).
           python -m experiments.imagen --config=experiments/configs/imagen.py:cpu --workdir=workdirs/imagen
         Base: batch 32, 3,000 steps, AdamW 1e-3, EMA 0.995; SR: batch 32, 600 steps. Measured
         (2 cores, scoring CLIP and probe cached; base about 10 min, each SR model about 3 min
         30 s, evaluation 4 min): the frozen CLIP text encoder helps where GLIDE's jointly
         trained one does not: single-object caption accuracy 0.367 at the best setting (10
         steps, guidance 5, dynamic thresholding; colour 0.967, shape 0.333, FD on probe
         features 3.413), against GLIDE's 0.133; still short of the goal (0.8). Thresholding
         behaves as Sec. 2.3 says: at guidance 20, FD 15.851 with dynamic and 142.914 with static
         thresholding (at guidance 5: 3.682 and 13.892). The SR stage does not work yet: its
         samples are noise (PSNR 9.514 dB against the real 32x32 images, 10.256 without
         augmentation), although its x0 predictions from noised real images reach 17.8-33.6 dB
         for t <= 700; the cascade figures in eval.json are therefore not meaningful yet. A side
         run of the SR model with v prediction (Salimans & Ho 2022) and EMA 0.99, now the
         defaults (sr.prediction, sr.ema_decay), reaches 20.64 dB: it samples images, but
         bilinear upsampling scores 30.26 dB, so the SR model needs far more training.
  paper  Imagen's 64x64 base model (2B parameters in the paper; here its U-Net shapes, App. F):
         512 channels, multipliers (1, 2, 3, 4), 3 ResBlocks per level, attention at 32/16/8,
         T5-XXL in the paper (here the text tower of `clip.workdir`, which must be given),
         batch 2048, Adafactor-free AdamW 1e-4 with 10k warm-up steps, 2.5M steps; SR 64 -> 256
         with Efficient U-Net shapes (128 channels, multipliers (1, 2, 4, 8), blocks
         (2, 4, 8, 8)). Needs ShapeWorld at 64 (generated) or TFDS pairs as for GLIDE.
"""

import ml_collections

from jaxzoo.diffusion import gaussian, samplers
from jaxzoo.train.config import AtLeast, base_config

VARIANTS = ("cpu", "paper")
CHOICES = {
    "data.name": ("shapeworld",),
    "data.image_size": (16, 32, 64),
    "data.sr_size": (32, 64),
    "data.max_len": AtLeast(3),
    "data.max_objects": AtLeast(1),
    "text_encoder": ("clip", "random"),
    "diffusion.schedule": gaussian.SCHEDULES,
    "diffusion.prediction": gaussian.PREDICTIONS,
    "sr.total_steps": AtLeast(0),
    "sr.batch_size": AtLeast(1),
    "eval.method": samplers.METHODS,
    "eval.spacing": samplers.SAMPLE_SPACINGS,
    "eval.num_steps": AtLeast(1),
    "eval.sweep_steps": AtLeast(1),
    "eval.sr_steps": AtLeast(1),
    "eval.per_category": AtLeast(1),
    "eval.batch_size": AtLeast(1),
    "eval.num_sr_test": AtLeast(1),
    "eval.threshold": ("static", "dynamic"),
    "sr.prediction": gaussian.PREDICTIONS,
    "clip.steps": AtLeast(1),
    "probe.steps": AtLeast(1),
}


def _model(**kw):
    return ml_collections.ConfigDict(dict(dict(
        channels=32, channel_mult=(1, 2, 2), num_res_blocks=(1, 2, 2), attention_resolutions=(8, 4),
        num_heads=4, num_groups=8, dropout=0.0, skip_scale=2 ** -0.5), **kw))


def get_config(variant=None):
    c = base_config(variant, VARIANTS)
    variant = c.variant
    c.data = ml_collections.ConfigDict(dict(name="shapeworld", data_dir="", image_size=16, sr_size=32,
                                            max_len=24, max_objects=2))
    c.text_encoder = "clip"  # clip (frozen CLIP text tower) | random (frozen random tower)
    c.caption_dropout = 0.1  # Imagen drops 10% of captions (App. F)
    c.diffusion = ml_collections.ConfigDict(dict(schedule="cosine", num_train_steps=1000,
                                                 beta_start=1e-4, beta_end=0.02, prediction="eps"))
    # The base model trains in workdir/base/ with the top-level settings; the SR model in
    # workdir/sr/ (and workdir/sr_without_aug/) with those of `sr`.
    c.model = _model()
    c.batch_size, c.total_steps, c.ema_decay = 32, 3000, 0.995
    c.sr = ml_collections.ConfigDict(dict(
        model=_model(channels=16, channel_mult=(1, 2, 2), num_res_blocks=(1, 1, 2),
                     attention_resolutions=(8,)),
        batch_size=32, total_steps=600, ema_decay=0.99, lr=1e-3, warmup_steps=50, prediction="v",
        noise_aug=True, max_aug=0.5, sample_aug=0.2, compare_without_aug=True))
    c.optim = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=100, weight_decay=0.0,
                                             grad_clip=1.0))
    c.eval = ml_collections.ConfigDict(dict(
        method="dpmpp_2m", spacing="trailing", num_steps=(10, 25, 50), guidance_scale=5.0,
        guidance_scales=(1.0, 5.0, 20.0), sweep_steps=25, threshold="dynamic",
        sr_steps=25, sr_guidance_scale=1.0, num_sr_test=200, per_category=30, batch_size=256,
        seed=0))
    c.clip = ml_collections.ConfigDict(dict(workdir="", steps=1200, seed=0))
    c.probe = ml_collections.ConfigDict(dict(widths=(32, 64, 128), feature_dim=128, steps=1200,
                                             batch_size=64, lr=1e-2, seed=0))  # the scoring probe
    c.log_every = 100
    c.checkpoint_every = 1000
    if variant == "paper":
        c.data.image_size, c.data.sr_size, c.data.max_len, c.data.max_objects = 64, 64, 128, 4
        c.model = _model(channels=512, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                         attention_resolutions=(32, 16, 8), num_heads=8, num_groups=32)
        c.batch_size, c.total_steps, c.ema_decay = 2048, 2_500_000, 0.9999
        c.optim.update(dict(lr=1e-4, warmup_steps=10_000))
        c.sr.total_steps = 0  # the 64 -> 256 stage needs 256x256 data (not in ShapeWorld)
        c.log_every, c.checkpoint_every = 1000, 10_000
    c.lock()
    return c
