"""NeRF (Mildenhall et al. 2020) on Blender-format scenes, LLFF scenes, or the embedded scene.

Variants:
  cpu    the embedded procedural scene (64x64, 100 train / 25 test views, generated and cached on
         first use), rays in [2.5, 5.5] (the scene's bounding ball), a smaller MLP (4 x 64, skip
         before layer 2, 8 position frequencies) with 24 coarse + 24 fine samples, 512 rays per
         batch, 3600 steps of Adam 5e-3 decaying exponentially to 5e-4 (on a CPU-only machine the
         launcher makes each core a device, so the batch is split across the 2 cores).
           python -m experiments.nerf --config=experiments/configs/nerf.py:cpu --workdir=workdirs/nerf
         Rays pass through pixel centres (data.pixel_center = 0.5), as the scene was rendered.
         Measured (2 CPU cores, the README's main-job command, scene generation and eval included):
         mean test PSNR 25.49 dB, SSIM 0.941 over the 25 test views (worst view 23.73 dB) in
         5 min 18 s. Target: >= 25 dB within 10 minutes.
  paper  NeRF Sec. 5.3 on a Blender scene at 800x800: 8 x 256 MLP, 64 coarse + 128 fine samples,
         4096 rays per batch, Adam 5e-4 decaying exponentially to 5e-5 over 300k steps (the paper
         trains 100-300k). Needs the scene on disk:
           --config.data.format=blender --config.data.root=/path/to/nerf_synthetic/lego
         For LLFF scenes: --config.data.format=llff --config.data.root=/path/to/fern
         --config.model.noise_std=1 (NDC rays, every 8th image held out for testing, and the
         paper's sigma noise for real scenes).
"""

import ml_collections

from jaxzoo.train.config import AtLeast, base_config

VARIANTS = ("cpu", "paper")
CHOICES = {
    "data.format": ("embedded", "blender", "llff"),
    "data.image_size": AtLeast(11),  # SSIM's window
    "data.downscale": AtLeast(1),
    "data.llff_hold": AtLeast(1),
    "eval.chunk": AtLeast(1),
    "eval.max_views": AtLeast(0),
    "eval.num_pictures": AtLeast(0),
    "video.num_frames": AtLeast(1),
}


def get_config(variant=None):
    c = base_config(variant, VARIANTS)
    variant = c.variant

    c.data = ml_collections.ConfigDict()
    c.data.format = "embedded"  # embedded | blender | llff
    c.data.root = ""  # scene directory for blender / llff
    c.data.cache_dir = ""  # embedded scene cache; empty: ~/.cache/jaxzoo/nerf_scenes
    c.data.image_size = 64  # embedded scene resolution
    c.data.downscale = 1  # blender: integer downscale of the images
    c.data.llff_factor = 8  # llff: use images_<factor> (the paper's 504x378 for factor 8)
    c.data.llff_hold = 8  # llff: every n-th image is a test view
    c.data.near = 0.0  # ray bounds; 0: the scene's own (2 and 6 for Blender scenes)
    c.data.far = 0.0
    c.data.pixel_center = 0.5  # rays through pixel centres (multinerf); 0: the official NeRF code

    c.model = ml_collections.ConfigDict()
    c.model.xyz_freqs = 10
    c.model.dir_freqs = 4
    c.model.lindisp = False
    c.model.noise_std = 0.0

    c.optim = ml_collections.ConfigDict()

    c.eval = ml_collections.ConfigDict()
    c.eval.chunk = 4096  # rays rendered at once; independent of the training batch
    c.eval.max_views = 0  # 0: every test view
    c.eval.num_pictures = 4  # test views saved as (truth | render | depth) PNGs

    c.video = ml_collections.ConfigDict()
    c.video.num_frames = 40
    c.video.elevation_deg = 30.0
    c.video.radius = 4.0

    if variant == "cpu":
        # The embedded scene lies inside a ball of radius 1.4 seen from 4 units away: rays only
        # need [2.5, 5.5], which puts every sample where the objects can be.
        c.data.near = 2.5
        c.data.far = 5.5
        c.model.xyz_freqs = 8  # 2^7 rad/unit already exceeds the 64-pixel images' Nyquist rate
        c.model.depth = 4
        c.model.width = 64
        c.model.skips = (2,)
        c.model.num_coarse = 24
        c.model.num_fine = 24
        c.batch_size = 512
        c.total_steps = 3600
        c.optim.lr = 5e-3
        c.optim.final_lr = 5e-4
        c.log_every = 100
        c.checkpoint_every = 1000
    else:
        c.data.format = "blender"
        c.model.depth = 8
        c.model.width = 256
        c.model.skips = (4,)
        c.model.num_coarse = 64
        c.model.num_fine = 128
        c.batch_size = 4096
        c.total_steps = 300_000
        c.optim.lr = 5e-4
        c.optim.final_lr = 5e-5
        c.log_every = 1000
        c.checkpoint_every = 10_000
        c.eval.chunk = 16384
    c.lock()
    return c
