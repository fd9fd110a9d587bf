"""RRDBNet, the ESRGAN generator (Wang et al., "ESRGAN: Enhanced Super-Resolution Generative
Adversarial Networks", ECCV Workshops 2018, arXiv 1809.00219, Sec. 3.1 and Fig. 4).

Images are NHWC, [N, H, W, C]. No BatchNorm anywhere (ESRGAN Sec. 3.1). Submodule names follow
BasicSR's key layout (conv_first, body_i.rdb{1,2,3}.conv{1..5}, conv_body, conv_up1, conv_up2,
conv_hr, conv_last) so `jaxzoo.sr.importers` maps published weights one to one.

Initialisation (ESRGAN Sec. 3.1, "smaller initialization"): the five convolutions of every
dense block get Kaiming-normal weights (std sqrt(2 / fan_in)) multiplied by `init_scale` = 0.1
and zero biases, as the official `default_init_weights(..., 0.1)`; the other convolutions use
PyTorch's default Conv2d weight init (uniform, bound 1/sqrt(fan_in)) with zero biases.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxzoo.sr.ops import pixel_unshuffle

# PyTorch's default Conv2d weight init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
_torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _conv(features: int, name: str, kernel_init=_torch_default_init) -> nn.Conv:
    return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=kernel_init,
                   bias_init=nn.initializers.zeros, name=name)


def scaled_kaiming_normal(scale: float):
    """Kaiming-normal (fan_in, gain sqrt(2)) weights times `scale`: std = scale sqrt(2/fan_in)."""
    return nn.initializers.variance_scaling(2.0 * scale * scale, "fan_in", "normal")


class ResidualDenseBlock(nn.Module):
    """Residual dense block (ESRGAN Fig. 4): five densely connected conv3x3 layers.

    x_k = LReLU(conv_k([x, x_1, ..., x_{k-1}])) with `growth` channels for k = 1..4;
    x_5 = conv_5([x, x_1, ..., x_4]) with `features` channels (no activation);
    output = x + residual_scale * x_5 (residual scaling beta = 0.2, ESRGAN Sec. 3.1).
    x [N, H, W, features] -> same shape.
    """

    features: int = 64
    growth: int = 32
    residual_scale: float = 0.2
    negative_slope: float = 0.2
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, x):
        init = scaled_kaiming_normal(self.init_scale)
        feats = [x]
        for k in range(1, 5):
            h = _conv(self.growth, f"conv{k}", init)(jnp.concatenate(feats, axis=-1))
            feats.append(nn.leaky_relu(h, self.negative_slope))
        h = _conv(self.features, "conv5", init)(jnp.concatenate(feats, axis=-1))
        return x + self.residual_scale * h


class RRDB(nn.Module):
    """Residual-in-residual dense block (ESRGAN Fig. 4): three dense blocks in sequence, and
    the result scaled by `residual_scale` (0.2) and added to the input."""

    features: int = 64
    growth: int = 32
    residual_scale: float = 0.2
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, x):
        h = x
        for k in (1, 2, 3):
            h = ResidualDenseBlock(self.features, self.growth, self.residual_scale,
                                   init_scale=self.init_scale, name=f"rdb{k}")(h)
        return x + self.residual_scale * h


class RRDBNet(nn.Module):
    """ESRGAN generator (ESRGAN Sec. 3.1, Fig. 3-4).

    conv_first; `num_blocks` RRDBs; conv_body; global skip; then twice nearest-neighbour x2
    upsampling + conv + LReLU(0.2); conv_hr + LReLU; conv_last. Defaults are the paper's
    network: 23 RRDBs, 64 features, growth 32, x4 (16,697,987 parameters).
    `scale` 2 or 1 pixel-unshuffles the input by 4 / scale first (BasicSR's x2/x1 RRDBNet,
    used by Real-ESRGAN), so the trunk always runs at 1/4 of the output resolution.

    x [N, H, W, in_channels] -> [N, scale H, scale W, out_channels]; for scale < 4, H and W
    must be divisible by 4 / scale.
    """

    num_blocks: int = 23
    features: int = 64
    growth: int = 32
    scale: int = 4
    in_channels: int = 3
    out_channels: int = 3
    residual_scale: float = 0.2
    negative_slope: float = 0.2
    init_scale: float = 0.1

    @nn.compact
    def __call__(self, x):
        if self.scale not in (1, 2, 4):
            raise ValueError(f"scale must be 1, 2 or 4, got {self.scale}")
        if x.shape[-1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got shape {x.shape}")
        if self.scale < 4:
            x = pixel_unshuffle(x, 4 // self.scale)
        lrelu = lambda h: nn.leaky_relu(h, self.negative_slope)  # noqa: E731
        feat = _conv(self.features, "conv_first")(x)
        h = feat
        for i in range(self.num_blocks):
            h = RRDB(self.features, self.growth, self.residual_scale, self.init_scale,
                     name=f"body_{i}")(h)
        feat = feat + _conv(self.features, "conv_body")(h)
        for k in (1, 2):
            feat = jnp.repeat(jnp.repeat(feat, 2, axis=-3), 2, axis=-2)  # nearest x2
            feat = lrelu(_conv(self.features, f"conv_up{k}")(feat))
        feat = lrelu(_conv(self.features, "conv_hr")(feat))
        return _conv(self.out_channels, "conv_last")(feat)
