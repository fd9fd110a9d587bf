"""VGG16 / VGG19 feature extractors for perceptual losses (Simonyan & Zisserman 1409.1556).

SRGAN (1609.04802 Sec. 2.2.1, Eq. 5) compares VGG19 feature maps; ESRGAN (1809.00219 Sec. 3.3)
takes them *before* the activation (conv5_4 of VGG19, i.e. torchvision `features[:35]`), and
also tries MINCNet, a VGG16 trained for material recognition, at conv5_3 pre-activation.
The module returns the pre-activation output of `layer` and builds nothing after it.

Images are NHWC [N, H, W, 3] RGB in [0, 1]. With `normalize_input` the ImageNet mean
(0.485, 0.456, 0.406) is subtracted and the result divided by std (0.229, 0.224, 0.225), as
torchvision-trained weights expect (ESRGAN's VGGFeatureExtractor, use_input_norm=True).
Convolution i of block b is named `conv{b}_{i}` (1-based); 2x2 max pools with stride 2 sit
between blocks (`ceil_mode=True` pads odd sizes like PyTorch's MaxPool2d(ceil_mode=True)).
MINCNet as ESRGAN's code runs it: VGGFeatures("vgg16", "conv5_3", normalize_input=False,
ceil_mode=True), weights from VGG16minc_53.pth via `sr_import.vgg_params_from_state_dict`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Convolutions per block and the width multiplier of each block (x base_features).
BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_WIDTH_MULT = (1, 2, 4, 8, 8)


def conv_names(arch: str) -> tuple[str, ...]:
    """All convolution names of `arch` in order, e.g. ('conv1_1', ..., 'conv5_4') for vgg19."""
    if arch not in BLOCKS:
        raise ValueError(f"arch={arch!r}; allowed: {sorted(BLOCKS)}")
    return tuple(f"conv{b + 1}_{i + 1}" for b, n in enumerate(BLOCKS[arch]) for i in range(n))


def conv_widths(arch: str, base_features: int = 64) -> dict[str, int]:
    """Output channels of every convolution of `arch`."""
    return {name: base_features * _WIDTH_MULT[int(name[4]) - 1] for name in conv_names(arch)}


def _max_pool(x, ceil_mode: bool):
    pads = [(0, (-n) % 2 if ceil_mode else 0) for n in x.shape[-3:-1]]
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding=pads)


class VGGFeatures(nn.Module):
    """VGG convolutional trunk up to `layer`, returning that layer's pre-activation output.

    arch: "vgg19" (default layer conv5_4) or "vgg16" (use layer="conv5_3" for MINCNet).
    base_features: width of block 1 (64 in VGG; smaller values only for tests).
    x [N, H, W, 3] -> [N, H / 2^(b-1), W / 2^(b-1), width of layer] for layer conv{b}_*.
    """

    arch: str = "vgg19"
    layer: str = "conv5_4"
    normalize_input: bool = True
    ceil_mode: bool = False
    base_features: int = 64

    @nn.compact
    def __call__(self, x):
        names = conv_names(self.arch)
        if self.layer not in names:
            raise ValueError(f"layer={self.layer!r} is not a conv layer of {self.arch}; "
                             f"allowed: {names}")
        if x.shape[-1] != 3:
            raise ValueError(f"expected RGB input [..., 3], got shape {x.shape}")
        if self.normalize_input:
            x = (x - jnp.asarray(IMAGENET_MEAN, x.dtype)) / jnp.asarray(IMAGENET_STD, x.dtype)
        widths = conv_widths(self.arch, self.base_features)
        h = x
        for name in names:
            if name.endswith("_1") and name != "conv1_1":
                h = _max_pool(h, self.ceil_mode)
            h = nn.Conv(widths[name], (3, 3), padding=((1, 1), (1, 1)), name=name)(h)
            if name == self.layer:
                return h
            h = nn.relu(h)
        raise AssertionError("unreachable")


def torchvision_feature_indices(arch: str) -> dict[str, int]:
    """Index N of each conv in torchvision's `vgg*.features` Sequential (conv, ReLU, ..., pool):
    e.g. conv5_4 of vgg19 is features.34, the index ESRGAN's `feature_layer=34` names."""
    conv_names(arch)  # validates arch
    out, idx = {}, 0
    for b, n in enumerate(BLOCKS[arch]):
        for i in range(n):
            out[f"conv{b + 1}_{i + 1}"] = idx
            idx += 2  # conv, ReLU
        idx += 1  # max pool
    return out
