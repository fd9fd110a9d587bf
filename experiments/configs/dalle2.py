"""DALL-E 2 / unCLIP (Ramesh et al. 2022, arXiv 2204.06125): a diffusion prior from CLIP text
embeddings to CLIP image embeddings, and a GLIDE-style decoder from CLIP image embeddings (and
the caption) to images.

Variants:
  cpu    The frozen CLIP is the one trained on ShapeWorld (`clip.workdir`, or the cached
         `clip.training.shapeworld_recipe` model: 64-d embeddings of 32x32 images). Prior
         (Sec. 2.1): a causal transformer (width 128, 4 blocks, 4 heads) over [CLIP text token
         outputs, CLIP text embedding, timestep, noised image embedding, query], predicting the
         unnoised image embedding (scaled by sqrt(64) so each coordinate has about unit
         variance), cosine schedule, T = 1000, text dropped 10% of the time; two samples per
         caption, the one with the larger dot product with the text embedding kept. Decoder:
         GLIDE's text-conditioned U-Net at 16x16 (the ShapeWorld images averaged over 2x2 pixels)
         with the CLIP image embedding projected into the timestep embedding and into four
         extra context tokens; the embedding dropped 10% and the caption 50% of the time.
           python -m experiments.dalle2 --config=experiments/configs/dalle2.py:cpu --workdir=workdirs/dalle2
         Prior: batch 64, 2,000 steps, AdamW 1e-3; decoder: batch 32, 3,000 steps, AdamW 1e-3,
         EMA 0.995. Measured (2 cores, scoring CLIP and probe cached; prior 4 min 50 s, decoder
         about 10 min, evaluation 4 min): the prior works: cosine between its image embedding
         for a test caption and the CLIP embedding of the image the caption describes 0.825
         (best of two samples; one sample 0.790), where the caption's own text embedding scores
         0.679. The decoder is the bottleneck and not yet at the goal (single-object caption
         accuracy >= 0.8): 0.167 at its best setting (10 steps, guidance 3), colour 0.800,
         shape 0.333, FD on probe features 7.816 (real test images 0.03, noise 59.95); fed the
         real images' own CLIP embeddings it scores no better (single 0.167, shape 0.267), so
         the U-Net, not the prior or the text, fails to draw shapes at this budget.
  paper  DALL-E 2's shapes (Table 3 / App. C): the decoder at 64x64 with 3.5B parameters in
         the paper (here GLIDE's 64x64 base U-Net shapes), a prior of width 2048 and 24 blocks,
         batch 4096 (prior) / 2048 (decoder); needs a CLIP run (`clip.workdir`).
"""

import ml_collections

from jaxzoo.diffusion import gaussian, samplers
from jaxzoo.train.config import AtLeast, base_config

VARIANTS = ("cpu", "paper")
CHOICES = {
    "data.name": ("shapeworld",),
    "data.image_size": (16, 32, 64),
    "data.max_len": AtLeast(3),
    "data.max_objects": AtLeast(1),
    "diffusion.schedule": gaussian.SCHEDULES,
    "diffusion.prediction": gaussian.PREDICTIONS,
    "prior.total_steps": AtLeast(1),
    "prior.batch_size": AtLeast(1),
    "prior.num_samples": AtLeast(1),
    "eval.method": samplers.METHODS,
    "eval.spacing": samplers.SAMPLE_SPACINGS,
    "eval.num_steps": AtLeast(1),
    "eval.sweep_steps": AtLeast(1),
    "eval.per_category": AtLeast(1),
    "eval.batch_size": AtLeast(1),
    "eval.threshold": ("", "static", "dynamic"),
    "clip.steps": AtLeast(1),
    "probe.steps": AtLeast(1),
}


def get_config(variant=None):
    c = base_config(variant, VARIANTS)
    variant = c.variant
    c.data = ml_collections.ConfigDict(dict(name="shapeworld", data_dir="", image_size=16, max_len=24,
                                            max_objects=2))
    c.diffusion = ml_collections.ConfigDict(dict(schedule="cosine", num_train_steps=1000,
                                                 beta_start=1e-4, beta_end=0.02, prediction="eps"))
    # The decoder trains in workdir/decoder/ with the top-level settings, the prior in
    # workdir/prior/ with those of `prior`.
    c.embed_dropout, c.caption_dropout = 0.1, 0.5  # Sec. 2.1: CLIP embedding 10%, caption 50%
    c.model = ml_collections.ConfigDict(dict(
        text_width=64, text_depth=2, text_heads=4, channels=32, channel_mult=(1, 2, 2),
        num_res_blocks=1, attention_resolutions=(8, 4), num_heads=4, num_groups=8, dropout=0.0,
        num_cond_tokens=4))
    c.batch_size, c.total_steps, c.ema_decay = 32, 3000, 0.995
    c.optim = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=100, weight_decay=0.0,
                                             grad_clip=1.0))
    c.prior = ml_collections.ConfigDict(dict(
        width=128, depth=4, num_heads=4, text_dropout=0.1, batch_size=64, total_steps=2000,
        ema_decay=0.995, lr=1e-3, warmup_steps=100, weight_decay=0.0, num_samples=2,
        guidance_scale=1.0, num_steps=25, schedule="cosine"))
    c.eval = ml_collections.ConfigDict(dict(
        method="dpmpp_2m", spacing="trailing", num_steps=(10, 25, 50), guidance_scale=3.0,
        guidance_scales=(1.0, 2.0, 3.0, 5.0), sweep_steps=25, threshold="static",
        per_category=30, batch_size=256, seed=0, num_variations=6))
    c.clip = ml_collections.ConfigDict(dict(workdir="", steps=1200, seed=0))
    c.probe = ml_collections.ConfigDict(dict(widths=(32, 64, 128), feature_dim=128, steps=1200,
                                             batch_size=64, lr=1e-2, seed=0))  # the scoring probe
    c.log_every, c.checkpoint_every = 100, 1000
    if variant == "paper":
        c.data.image_size, c.data.max_len, c.data.max_objects = 64, 77, 4
        c.model.update(dict(text_width=512, text_depth=16, text_heads=8, channels=192,
                            channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                            attention_resolutions=(32, 16, 8), num_heads=3, num_groups=32))
        c.batch_size, c.total_steps, c.ema_decay = 2048, 800_000, 0.9999
        c.optim.update(dict(lr=1.2e-4, warmup_steps=10_000))
        c.prior.update(dict(width=2048, depth=24, num_heads=32, batch_size=4096,
                            total_steps=1_000_000, lr=1.1e-4, warmup_steps=10_000,
                            weight_decay=6e-2, num_steps=64))
        c.log_every, c.checkpoint_every = 1000, 10_000
    c.lock()
    return c
