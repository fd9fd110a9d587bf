"""SRGAN (Ledig et al. 2017, arXiv 1609.04802): x4 SRResNet trained with MSE, then as a GAN.

Variants `<size>_<stage>`, size cpu | paper, stage psnr | gan:
  cpu_psnr   SRResNet without BatchNorm, 4 residual blocks of 32 features, MSE loss, on the
             scikit-image photographs (7 train / 2 test images), 64-pixel HR patches, batch 16,
             Adam(0.9, 0.999) 5e-4 halved at 3000 and 4000 steps, 5000 steps.
               python -m experiments.srgan --config=experiments/configs/srgan.py:cpu_psnr \\
                   --workdir=workdirs/srgan_psnr
             Reaches test PSNR 29.89 dB / SSIM 0.802 against bicubic 29.39 dB / 0.786 (chelsea
             32.01 vs 31.48, coffee 27.77 vs 27.29 dB; SSIM 0.827 / 0.778 vs 0.807 / 0.765) in
             7 min 37 s on 2 idle CPU cores, about 11.4 steps/s. (2000 steps reached 29.56 dB;
             lr 1e-3 diverged.)
  cpu_gan    from cpu_psnr: L = content + 1e-3 adversarial, content = MSE of post-ReLU
             features / 12.75 of a *randomly initialised*, frozen, narrow VGG19 trunk (base
             width 8, conv3_4): a stand-in, as no pretrained VGG19 can be downloaded here;
             a 6-conv discriminator; 500 steps at 1e-4.
               python -m experiments.srgan --config=experiments/configs/srgan.py:cpu_gan \\
                   --workdir=workdirs/srgan_gan --config.init_from=workdirs/srgan_psnr
  paper_psnr SRGAN Sec. 3.2: SRResNet (16 blocks, 64 features), MSE, 96-pixel HR patches,
             batch 16, Adam(beta1 0.9) lr 1e-4, 1e6 steps; DIV2K from TFDS here (the paper
             used 350k ImageNet images), tested on DIV2K validation or, with
             --config.data.test_source=dir --config.data.test_dir=..., on Set5/Set14/BSD100.
  paper_gan  SRGAN-VGG54 from paper_psnr: content loss = MSE of VGG19 conv5_4 features after
             ReLU, rescaled by 1/12.75 (Sec. 3.2), + 1e-3 x adversarial BCE (Eq. 3, 6); 1e5
             steps at lr 1e-4 then 1e5 at 1e-5; VGG19 weights from --config.vgg_weights (.pth).

Deviations, all on purpose: the generator has no BatchNorm (the runtime keeps parameters only,
no running statistics; BasicSR's MSRResNet makes the same choice), the discriminator runs its
BatchNorm on batch statistics (as in training, the only place it is used), and both LR input
and HR target are in [0, 1] (the paper scales HR to [-1, 1]).
"""

from jaxzoo.sr import configs as sr_configs

VARIANTS = sr_configs.VARIANTS
CHOICES = sr_configs.CHOICES


def get_config(variant=None):
    c, size = sr_configs.sr_config(variant, arch="srresnet", pixel="mse", patch_size=96)
    c.loss.adv_weight = 1e-3
    c.loss.content_scale = 1.0 / 12.75
    if size == "cpu":
        c.model.num_blocks, c.model.features = 4, 32
        if c.stage == "psnr":
            c.total_steps = 5000
            c.optim.lr = 5e-4  # 1e-3 diverged near step 1000 (no BatchNorm, no clipping)
            c.optim.milestones = (3000, 4000)
        else:
            c.total_steps = 500
            c.optim.lr = 1e-4
            c.optim.milestones = (250,)
    else:
        c.model.num_blocks, c.model.features = 16, 64
        c.disc.features = (64, 64, 128, 128, 256, 256, 512, 512)
        c.disc.dense_features = 1024
        c.optim.lr = 1e-4
        if c.stage == "psnr":
            c.total_steps = 1_000_000
            c.optim.milestones = ()
        else:
            c.total_steps = 200_000
            c.optim.milestones = (100_000,)
            c.optim.gamma = 0.1
    c.lock()
    return c
