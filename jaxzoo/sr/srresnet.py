"""SRResNet generator and SRGAN discriminator (Ledig et al., "Photo-Realistic Single Image
Super-Resolution Using a Generative Adversarial Network", CVPR 2017, arXiv 1609.04802).

Images are NHWC, [N, H, W, 3]. Convolutions pad like PyTorch's `padding=k // 2` (explicit
symmetric padding, also for the stride-2 convolutions), so feature maps line up with the
published PyTorch ports. BatchNorm uses PyTorch's defaults (momentum 0.1, eps 1e-5); call with
`train=True` to use batch statistics and update `batch_stats` (`mutable=["batch_stats"]`).
Sub-pixel upsampling is `jaxzoo.sr.ops.pixel_shuffle` (PyTorch channel order).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxzoo.sr.ops import pixel_shuffle

# torch.nn.BatchNorm2d defaults: running = 0.9 running + 0.1 batch.
_BN = dict(momentum=0.9, epsilon=1e-5)


def conv(features: int, kernel: int, stride: int = 1, name: str | None = None, **kw) -> nn.Conv:
    """k x k convolution padded by k // 2 on every side, as PyTorch's Conv2d(padding=k // 2)."""
    p = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((p, p), (p, p)), name=name, **kw)


class PReLU(nn.Module):
    """Parametric ReLU (He et al. 1502.01852): max(x, 0) + a min(x, 0) with one learned slope
    a per layer, initialised to 0.25 (PyTorch's nn.PReLU() default)."""

    init: float = 0.25

    @nn.compact
    def __call__(self, x):
        a = self.param("negative_slope", nn.initializers.constant(self.init), ())
        return jnp.where(x >= 0, x, a.astype(x.dtype) * x)


class ResidualBlock(nn.Module):
    """SRGAN Fig. 4 residual block: conv3x3-BN-PReLU-conv3x3-BN, plus the input."""

    features: int = 64
    use_batchnorm: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = conv(self.features, 3)(x)
        if self.use_batchnorm:
            h = nn.BatchNorm(use_running_average=not train, **_BN)(h)
        h = PReLU()(h)
        h = conv(self.features, 3)(h)
        if self.use_batchnorm:
            h = nn.BatchNorm(use_running_average=not train, **_BN)(h)
        return x + h


class SRResNet(nn.Module):
    """The SRGAN generator (SRGAN Sec. 2.1, Fig. 4).

    conv9x9(features) + PReLU; `num_blocks` residual blocks; conv3x3 + BN; global skip from
    the first conv; log2(scale) stages of conv3x3(features -> 4 features) + PixelShuffle x2 +
    PReLU; conv9x9 -> out_channels. The paper's network is the default (16 blocks, 64
    features, x4, with BatchNorm). `use_batchnorm=False` removes every BN layer (as ESRGAN
    Sec. 3.1 and BasicSR's MSRResNet do). Conv biases are kept in both variants, as in the
    common PyTorch ports. No output activation: the output is the image itself.

    x [N, H, W, in_channels] -> [N, scale H, scale W, out_channels].
    """

    num_blocks: int = 16
    features: int = 64
    scale: int = 4
    in_channels: int = 3
    out_channels: int = 3
    use_batchnorm: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.scale < 2 or self.scale & (self.scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {self.scale}")
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got shape {x.shape}")
        head = PReLU(name="prelu_first")(conv(self.features, 9, name="conv_first")(x))
        h = head
        for i in range(self.num_blocks):
            h = ResidualBlock(self.features, self.use_batchnorm, name=f"body_{i}")(h, train)
        h = conv(self.features, 3, name="conv_body")(h)
        if self.use_batchnorm:
            h = nn.BatchNorm(use_running_average=not train, name="bn_body", **_BN)(h)
        h = h + head
        for i in range(int(math.log2(self.scale))):
            h = conv(4 * self.features, 3, name=f"conv_up{i + 1}")(h)
            h = PReLU(name=f"prelu_up{i + 1}")(pixel_shuffle(h, 2))
        return conv(self.out_channels, 9, name="conv_last")(h)


class SRGANDiscriminator(nn.Module):
    """The SRGAN discriminator (SRGAN Sec. 2.1, Fig. 4), returning logits.

    Eight conv3x3 layers with `features` (default 64, 64, 128, 128, 256, 256, 512, 512) and
    strides 1, 2, 1, 2, ... ; LeakyReLU(0.2) after each and BatchNorm from the second conv on;
    then Dense(dense_features = 1024), LeakyReLU(0.2), Dense(1). The paper's final sigmoid is
    left to the loss (`jaxzoo.sr.losses`, BCE with logits). The dense layer fixes the
    input size: `patch_size` (128, the HR patch of SRGAN/ESRGAN) is checked on every call.
    Flattening is NHWC order, so PyTorch dense weights would need a permutation.

    x [N, patch_size, patch_size, C] -> logits [N, 1].
    """

    features: Sequence[int] = (64, 64, 128, 128, 256, 256, 512, 512)
    dense_features: int = 1024
    patch_size: int = 128
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim != 4 or x.shape[1:3] != (self.patch_size, self.patch_size):
            raise ValueError(f"expected [N, {self.patch_size}, {self.patch_size}, C], "
                             f"got shape {x.shape}")
        h = x
        for i, f in enumerate(self.features):
            h = conv(f, 3, stride=1 if i % 2 == 0 else 2, name=f"conv{i + 1}")(h)
            if i > 0:
                h = nn.BatchNorm(use_running_average=not train, name=f"bn{i + 1}", **_BN)(h)
            h = nn.leaky_relu(h, self.negative_slope)
        h = h.reshape(h.shape[0], -1)
        h = nn.leaky_relu(nn.Dense(self.dense_features, name="dense1")(h), self.negative_slope)
        return nn.Dense(1, name="dense2")(h)
