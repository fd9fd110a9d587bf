"""Map the published ESRGAN (RRDBNet) and VGG weights, PyTorch state dicts read by
`jaxzoo.io.torch_pickle` (no torch needed), onto the Flax modules of `jaxzoo.sr.rrdb` and
`jaxzoo.sr.vgg`, and back. Conv weights are OIHW in PyTorch and HWIO in Flax.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxzoo.io.state_dict import convert, param_shapes, torch_leaf, torch_state_dict
from jaxzoo.io.torch_pickle import load_state_dict_pth
from jaxzoo.sr.rrdb import RRDBNet
from jaxzoo.sr.vgg import VGGFeatures, conv_names, torchvision_feature_indices

def _flax_to_torch_name(path: tuple) -> str:
    return ".".join(path[:-1]) + "." + torch_leaf(path[-1])


def _param_shapes(model, sample_shape) -> dict[tuple, tuple]:
    return param_shapes(jax.eval_shape(model.init, jax.random.key(0), np.zeros(sample_shape, np.float32)))


# RRDBNet: the original ESRGAN release and BasicSR (Real-ESRGAN) name the same tensors differently.
_ESRGAN_TOP = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
               "conv_hr": "HRconv"}
RRDB_LAYOUTS = ("esrgan", "basicsr")


def _rrdb_key(path: tuple, layout: str) -> str:
    path = list(path)
    if path[0].startswith("body_"):
        i = path[0].split("_")[1]
        if layout == "esrgan":
            path[:2] = ["RRDB_trunk", i, path[1].upper()]  # rdb1 -> RDB1
        else:
            path[:1] = ["body", i]
    elif layout == "esrgan":
        path[0] = _ESRGAN_TOP.get(path[0], path[0])
    return _flax_to_torch_name(tuple(path))


def detect_rrdbnet_layout(state_dict) -> str:
    """'esrgan' (RRDB_trunk.N.RDBk..., trunk_conv, upconv1/2, HRconv) or 'basicsr'
    (body.N.rdbk..., conv_body, conv_up1/2, conv_hr), from the key names."""
    old = any(k.startswith(("RRDB_trunk.", "trunk_conv.", "HRconv.")) for k in state_dict)
    new = any(k.startswith(("body.", "conv_body.", "conv_hr.")) for k in state_dict)
    if old == new:
        raise ValueError("cannot tell the RRDBNet key layout (expected RRDB_trunk.* or body.*); "
                         f"first keys: {list(state_dict)[:6]}")
    return "esrgan" if old else "basicsr"


def rrdbnet_params_from_state_dict(state_dict, model: RRDBNet, layout: str = "auto"):
    """Flax variables {"params": ...} for `model` from a PyTorch RRDBNet state dict in either
    published layout (detected unless `layout` is given). Missing, unexpected and mis-shaped
    keys are all listed in one DataError (a ValueError)."""
    layout = detect_rrdbnet_layout(state_dict) if layout == "auto" else layout
    if layout not in RRDB_LAYOUTS:
        raise ValueError(f"layout={layout!r}; allowed: 'auto', {RRDB_LAYOUTS}")
    shapes = _param_shapes(model, (1, 16, 16, model.in_channels))
    return convert(state_dict, shapes, lambda p: _rrdb_key(p, layout))


def rrdbnet_state_dict_from_params(variables, layout: str = "basicsr") -> dict[str, np.ndarray]:
    """The inverse: a PyTorch-layout state dict (OIHW weights) from RRDBNet Flax variables."""
    if layout not in RRDB_LAYOUTS:
        raise ValueError(f"layout={layout!r}; allowed: {RRDB_LAYOUTS}")
    return torch_state_dict(variables, lambda p: _rrdb_key(p, layout))


# VGG: torchvision `features.N.{weight,bias}` (classifier.* ignored) or MINCNet `convBI.*`.
VGG_LAYOUTS = ("torchvision", "minc")


def _vgg_key(path: tuple, layout: str, indices: dict[str, int]) -> str:
    name = path[0]
    head = f"features.{indices[name]}" if layout == "torchvision" else name.replace("_", "")
    return _flax_to_torch_name((head, path[-1]))


def vgg_params_from_state_dict(state_dict, model: VGGFeatures, layout: str = "auto"):
    """Flax variables for `model` from torchvision's `vgg16`/`vgg19` state dict or the
    MINCNet (VGG16) file of ESRGAN. The file must hold every conv of the architecture (a
    truncated file is reported); only the convs up to `model.layer` are returned."""
    if layout == "auto":
        layout = "torchvision" if any(k.startswith("features.") for k in state_dict) else "minc"
    if layout not in VGG_LAYOUTS:
        raise ValueError(f"layout={layout!r}; allowed: 'auto', {VGG_LAYOUTS}")
    full = VGGFeatures(model.arch, conv_names(model.arch)[-1], base_features=model.base_features)
    shapes = _param_shapes(full, (1, 32, 32, 3))
    wanted = set(conv_names(model.arch)[: conv_names(model.arch).index(model.layer) + 1])
    indices = torchvision_feature_indices(model.arch)
    return convert(state_dict, shapes, lambda p: _vgg_key(p, layout, indices),
                   ignore=lambda k: layout == "torchvision" and k.startswith("classifier."),
                   keep=lambda p: p[0] in wanted)


def vgg_state_dict_from_params(variables, arch: str, layout: str = "torchvision"):
    """The inverse of `vgg_params_from_state_dict` for the convs present in `variables`."""
    if layout not in VGG_LAYOUTS:
        raise ValueError(f"layout={layout!r}; allowed: {VGG_LAYOUTS}")
    indices = torchvision_feature_indices(arch)
    return torch_state_dict(variables, lambda p: _vgg_key(p, layout, indices))


def load_rrdbnet_pth(path, model: RRDBNet, layout: str = "auto"):
    """`rrdbnet_params_from_state_dict(load_state_dict_pth(path), model, layout)`."""
    return rrdbnet_params_from_state_dict(load_state_dict_pth(path), model, layout)


def load_vgg_pth(path, model: VGGFeatures, layout: str = "auto"):
    """`vgg_params_from_state_dict(load_state_dict_pth(path), model, layout)`."""
    return vgg_params_from_state_dict(load_state_dict_pth(path), model, layout)
