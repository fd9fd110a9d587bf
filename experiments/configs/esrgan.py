"""ESRGAN (Wang et al. 2018, arXiv 1809.00219): x4 super-resolution, PSNR stage then GAN stage.

Variants `<size>_<stage>`, size cpu | paper, stage psnr | gan:
  cpu_psnr   RRDBNet with 2 RRDBs, 32 features, growth 16, L1 loss, on the scikit-image
             photographs (7 train / 2 test images), 64-pixel HR patches (16-pixel LR), batch
             16, Adam(0.9, 0.999) 1e-3 halved at 1000 and 1250 steps, 1400 steps.
               python -m experiments.esrgan --config=experiments/configs/esrgan.py:cpu_psnr \\
                   --workdir=workdirs/esrgan_psnr
             Reaches test PSNR 30.01 dB / SSIM 0.808 against bicubic 29.39 dB / 0.786 (mean of
             chelsea 32.01 vs 31.48 and coffee 28.00 vs 27.29 dB; Y channel, 4 pixels shaved)
             in 3 min 2 s wall on 2 idle CPU cores (about 8.6 steps/s).
  cpu_gan    starts from cpu_psnr; a small 6-conv discriminator on 64-pixel patches;
             L = L_percep + 5e-3 L_G^Ra + 1e-2 L_1 where L_percep uses a *randomly initialised*,
             frozen, narrow VGG19 trunk (base width 8, conv3_4 pre-activation): a stand-in, as
             no pretrained VGG19 can be downloaded here. Give real weights with
             --config.vgg_weights=vgg19.pth --config.loss.percep_base_features=64
             --config.loss.percep_layer=conv5_4 --config.loss.percep_random_init=false.
               python -m experiments.esrgan --config=experiments/configs/esrgan.py:cpu_gan \\
                   --workdir=workdirs/esrgan_gan --config.init_from=workdirs/esrgan_psnr
             500 steps at 1e-4 (halved at 250), about 2.4 steps/s, 4 min wall: test PSNR falls
             from 30.01 to 28.09 dB (SSIM 0.778), below bicubic, as perceptual/GAN training
             trades PSNR for texture; with random VGG features the result is not a faithful
             ESRGAN and is only a pipeline check.
  paper_psnr ESRGAN Sec. 4.1: 23 RRDBs, 64 features, growth 32; L1; HR patch 128, batch 16;
             Adam(0.9, 0.999) lr 2e-4 halved every 200k of 1M steps; DIV2K (TFDS
             div2k/bicubic_x4, prepared beforehand), tested on its validation split or on
             Set5/Set14/BSD100 with --config.data.test_source=dir --config.data.test_dir=...
  paper_gan  from paper_psnr: L = L_percep + 5e-3 L_G^Ra + 1e-2 L_1, L_percep = L1 of VGG19
             conv5_4 features before activation (weights from --config.vgg_weights=<torchvision
             vgg19 .pth>, required); lr 1e-4 for both networks, halved at 50k, 100k, 200k, 300k
             of 400k steps; Adam(0.9, 0.999). The relativistic losses are scaled by 0.5 as in the
             released code (jaxzoo.sr.losses). Discriminator: 10 convs (64..512, stride 2
             every second), BN, dense 100, as ESRGAN's VGG_128 but with 3x3 stride-2 kernels
             (the released model uses 4x4).
"""

from jaxzoo.sr import configs as sr_configs

VARIANTS = sr_configs.VARIANTS
CHOICES = sr_configs.CHOICES


def get_config(variant=None):
    c, size = sr_configs.sr_config(variant, arch="rrdbnet", pixel="l1", patch_size=128)
    c.loss.pixel_weight = 1e-2
    c.loss.adv_weight = 5e-3
    c.loss.percep_weight = 1.0
    if size == "cpu":
        c.model.num_blocks, c.model.features, c.model.growth = 2, 32, 16
        if c.stage == "psnr":
            c.total_steps = 1400
            c.optim.lr = 1e-3
            c.optim.milestones = (1000, 1250)
        else:
            c.total_steps = 500
            c.optim.lr = 1e-4
            c.optim.milestones = (250,)
    else:
        c.model.num_blocks, c.model.features, c.model.growth = 23, 64, 32
        c.disc.features = (64, 64, 128, 128, 256, 256, 512, 512, 512, 512)
        c.disc.dense_features = 100
        if c.stage == "psnr":
            c.total_steps = 1_000_000
            c.optim.lr = 2e-4
            c.optim.milestones = (200_000, 400_000, 600_000, 800_000)
        else:
            c.total_steps = 400_000
            c.optim.lr = 1e-4
            c.optim.milestones = (50_000, 100_000, 200_000, 300_000)
    c.lock()
    return c
