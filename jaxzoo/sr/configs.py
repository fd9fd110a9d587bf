"""The config keys experiments/configs/esrgan.py and srgan.py share, and their allowed values."""

import ml_collections

from jaxzoo.sr import data as sr_data
from jaxzoo.sr.vgg import conv_names
from jaxzoo.train.config import AtLeast, base_config

VARIANTS = ("cpu_psnr", "cpu_gan", "paper_psnr", "paper_gan")
# The enumerated keys and their allowed values (`jaxzoo.train.config.validate`).
CHOICES = {
    "stage": ("psnr", "gan"),
    "model.arch": ("rrdbnet", "srresnet"),
    "loss.pixel": ("l1", "mse"),
    "data.source": sr_data.SOURCES,
    "data.test_source": sr_data.SOURCES,
    "data.scale": (2, 3, 4, 8),
    "loss.percep_layer": conv_names("vgg19"),
    "data.patch_size": AtLeast(1),
    "data.max_train_images": AtLeast(0),
    "eval.max_images": AtLeast(0),
    "eval.num_pictures": AtLeast(0),
}


def sr_config(variant, patch_size: int, arch: str, pixel: str) -> tuple[ml_collections.ConfigDict, str]:
    """(unlocked config, size) for `variant` = `<size>_<stage>` (size cpu | paper, stage psnr |
    gan): data, eval, optimiser and loss keys with the values common to both papers, HR patches
    of `patch_size` (64 for cpu), the generator `arch` trained on the pixel loss `pixel`, and
    for cpu the small discriminator and random narrow VGG19 stand-in. The paper's file fills in
    the model sizes, disc, loss weights, lr and schedule."""
    c = base_config(variant, VARIANTS)
    size, stage = c.variant.split("_")
    c.stage = stage
    c.init_from = ""  # gan stage: the workdir of the psnr-stage run
    c.vgg_weights = ""  # gan stage: torchvision VGG19 state dict (.pth)

    c.data = ml_collections.ConfigDict()
    c.data.source = "embedded"  # embedded | div2k | dir
    c.data.test_source = "embedded"
    c.data.train_dir = ""  # HR images for source=dir
    c.data.test_dir = ""  # HR images for test_source=dir (Set5 / Set14 / BSD100)
    c.data.tfds_dir = ""  # TFDS data dir for div2k; empty: $JAXZOO_DATA_DIR or the default
    c.data.scale = 4
    c.data.patch_size = patch_size  # HR patch side
    c.data.augment = True  # random flips and 90-degree rotations
    c.data.max_train_images = 0  # > 0: only the first n training images (embedded, dir)

    c.model = ml_collections.ConfigDict()
    c.model.arch = arch  # rrdbnet (ESRGAN) | srresnet (SRGAN)
    c.disc = ml_collections.ConfigDict()
    c.loss = ml_collections.ConfigDict()
    c.loss.pixel = pixel  # the psnr stage's loss: l1 | mse
    c.loss.percep_layer = "conv5_4"
    c.loss.percep_base_features = 64
    c.loss.percep_random_init = False

    c.optim = ml_collections.ConfigDict()
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.gamma = 0.5  # lr factor at each milestone

    c.eval = ml_collections.ConfigDict()
    c.eval.max_images = 0  # 0: every test image
    c.eval.num_pictures = 4  # triptychs saved

    c.batch_size = 16
    if size == "cpu":
        c.data.patch_size = 64
        c.disc.features = (16, 16, 32, 32, 64, 64)
        c.disc.dense_features = 64
        c.loss.percep_layer = "conv3_4"
        c.loss.percep_base_features = 8
        c.loss.percep_random_init = True
        c.log_every = 100
        c.checkpoint_every = 500
    else:
        c.data.source = c.data.test_source = "div2k"
        c.log_every = 1000
        c.checkpoint_every = 10_000
    return c, size
