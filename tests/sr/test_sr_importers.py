"""Tests for jaxzoo.sr.importers: the RRDBNet / VGG weight mappers, through .pth files
written and read by jaxzoo.io.torch_pickle (tested in tests/io/test_torch_pickle.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as flax_nn
from flax import traverse_util

from jaxzoo.io import torch_pickle as tp
from jaxzoo.sr import importers as si
from jaxzoo.sr.rrdb import RRDBNet
from jaxzoo.sr.vgg import VGGFeatures

RNG = np.random.default_rng(3)


def _random_params(model, x_shape):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x_shape)))
    flat = traverse_util.flatten_dict(shapes["params"])
    return {"params": traverse_util.unflatten_dict(
        {k: (0.2 * RNG.standard_normal(v.shape)).astype(np.float32) for k, v in flat.items()})}


def _assert_same_tree(a, b):
    fa, fb = traverse_util.flatten_dict(a), traverse_util.flatten_dict(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=str(k))


# ----------------------------------------------------------------------------- RRDBNet


TINY = RRDBNet(num_blocks=2, features=8, growth=4)


@pytest.mark.parametrize("layout", si.RRDB_LAYOUTS)
@pytest.mark.parametrize("legacy", [False, True])
def test_rrdbnet_round_trip_through_pth(tmp_path, layout, legacy):
    variables = _random_params(TINY, (1, 8, 8, 3))
    sd = si.rrdbnet_state_dict_from_params(variables, layout)
    first = {"esrgan": ["conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight",
                        "upconv1.weight", "upconv2.weight", "HRconv.weight", "conv_last.bias"],
             "basicsr": ["conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight",
                         "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.bias"]}
    assert set(first[layout]) <= set(sd)
    assert sd["conv_first.weight"].shape == (8, 3, 3, 3)          # OIHW
    assert len(sd) == 2 * (2 + 2 * 3 * 5 + 4)
    path = tp.save_state_dict_pth(tmp_path / f"rrdb_{layout}.pth", sd, legacy=legacy)
    loaded = tp.load_state_dict_pth(path)
    assert si.detect_rrdbnet_layout(loaded) == layout
    imported = si.rrdbnet_params_from_state_dict(loaded, TINY)
    _assert_same_tree(imported, variables)
    _assert_same_tree(si.load_rrdbnet_pth(path, TINY), variables)
    x = jnp.asarray(RNG.random((1, 5, 4, 3)), jnp.float32)
    apply = jax.jit(TINY.apply)
    np.testing.assert_array_equal(apply(imported, x), apply(variables, x))


def _hand_rrdb_state_dict(num_blocks, nf, gc, layout, rng):
    """A PyTorch RRDBNet state dict written out by hand: OIHW conv weights, [O] biases, and the
    key names of the original ESRGAN release or of BasicSR."""
    esrgan = layout == "esrgan"
    convs = [("conv_first", 3, nf)]
    for i in range(num_blocks):
        for k in (1, 2, 3):
            block = f"RRDB_trunk.{i}.RDB{k}" if esrgan else f"body.{i}.rdb{k}"
            convs += [(f"{block}.conv{j}", nf + (j - 1) * gc, gc if j < 5 else nf)
                      for j in range(1, 6)]
    top = ("trunk_conv", "upconv1", "upconv2", "HRconv") if esrgan else (
        "conv_body", "conv_up1", "conv_up2", "conv_hr")
    convs += [(name, nf, nf) for name in top] + [("conv_last", nf, 3)]
    sd = {}
    for name, cin, cout in convs:
        sd[f"{name}.weight"] = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)
        sd[f"{name}.bias"] = rng.standard_normal(cout).astype(np.float32)
    return sd


def _np_torch_conv2d(x_nchw, weight_oihw, bias):
    """torch.nn.Conv2d(kernel_size=3, padding=1) in float64 NumPy: cross-correlation (no kernel
    flip) with zero padding, out[n, o, y, x] = b[o] + sum_{c, i, j} w[o, c, i, j] xpad[n, c, y+i, x+j]."""
    x = np.asarray(x_nchw, np.float64)
    w = np.asarray(weight_oihw, np.float64)
    n, c, h, wd = x.shape
    xp = np.zeros((n, c, h + 2, wd + 2))
    xp[:, :, 1:-1, 1:-1] = x
    out = np.zeros((n, w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out + np.asarray(bias, np.float64)[None, :, None, None]


@pytest.mark.parametrize("layout", si.RRDB_LAYOUTS)
def test_imported_oihw_convs_compute_torch_conv2d(layout):
    rng = np.random.default_rng(4)
    sd = _hand_rrdb_state_dict(2, 8, 4, layout, rng)
    imported = si.rrdbnet_params_from_state_dict(sd, TINY)["params"]
    esrgan = layout == "esrgan"
    # torch key -> Flax module path (RRDBNet's submodule names), written out independently
    cases = {"conv_first": ("conv_first",),
             ("RRDB_trunk.1.RDB2.conv3" if esrgan else "body.1.rdb2.conv3"): ("body_1", "rdb2", "conv3"),
             ("HRconv" if esrgan else "conv_hr"): ("conv_hr",),
             "conv_last": ("conv_last",)}
    for key, path in cases.items():
        weight, bias = sd[f"{key}.weight"], sd[f"{key}.bias"]
        cout, cin = weight.shape[:2]
        x = rng.standard_normal((2, cin, 5, 7))  # NCHW, non-square so H / W mix-ups show
        params = imported
        for name in path:
            params = params[name]
        conv = flax_nn.Conv(cout, (3, 3), padding=((1, 1), (1, 1)))
        got = conv.apply({"params": params}, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32))
        want = _np_torch_conv2d(x, weight, bias).transpose(0, 2, 3, 1)
        # float32 accumulation: a few ulps of the sum of |terms| of each output
        tol = 8 * np.finfo(np.float32).eps * _np_torch_conv2d(np.abs(x), np.abs(weight),
                                                              np.abs(bias)).transpose(0, 2, 3, 1)
        err = np.abs(np.asarray(got, np.float64) - want)
        assert np.all(err <= tol), (key, err.max(), tol.min())
    # the kernels are not symmetric, so a transposed or flipped import could not pass
    w = sd["conv_first.weight"]
    assert np.abs(w - w[:, :, ::-1, ::-1]).max() > 1 and np.abs(w - w.transpose(0, 1, 3, 2)).max() > 1


def test_rrdbnet_import_lists_every_problem():
    sd = si.rrdbnet_state_dict_from_params(_random_params(TINY, (1, 8, 8, 3)), "basicsr")
    del sd["body.1.rdb2.conv3.bias"]
    sd["body.7.rdb1.conv1.weight"] = np.zeros((4, 8, 3, 3), np.float32)
    sd["conv_hr.weight"] = np.zeros((8, 8, 1, 1), np.float32)
    with pytest.raises(ValueError) as err:
        si.rrdbnet_params_from_state_dict(sd, TINY)
    msg = str(err.value)
    assert "missing keys (1): ['body.1.rdb2.conv3.bias']" in msg
    assert "unexpected keys (1): ['body.7.rdb1.conv1.weight']" in msg
    assert "conv_hr.weight: file (8, 8, 1, 1) vs model (8, 8, 3, 3)" in msg
    # The model's own size mismatches are reported the same way (e.g. wrong num_blocks).
    with pytest.raises(ValueError, match=r"missing keys \(30\)"):
        si.rrdbnet_params_from_state_dict(
            si.rrdbnet_state_dict_from_params(_random_params(TINY, (1, 8, 8, 3)), "basicsr"),
            RRDBNet(num_blocks=3, features=8, growth=4))


def test_rrdbnet_layout_detection_errors():
    with pytest.raises(ValueError, match="cannot tell the RRDBNet key layout"):
        si.detect_rrdbnet_layout({"features.0.weight": None})
    with pytest.raises(ValueError, match="cannot tell"):
        si.detect_rrdbnet_layout({"body.0.rdb1.conv1.weight": None, "trunk_conv.weight": None})
    with pytest.raises(ValueError, match="layout"):
        si.rrdbnet_params_from_state_dict({}, TINY, layout="keras")


# ----------------------------------------------------------------------------- VGG


def test_vgg19_torchvision_import_truncates_and_ignores_classifier(tmp_path):
    full = VGGFeatures("vgg19", "conv5_4", base_features=2)
    variables = _random_params(full, (1, 32, 32, 3))
    sd = si.vgg_state_dict_from_params(variables, "vgg19")
    assert "features.34.weight" in sd and sd["features.34.weight"].shape == (16, 16, 3, 3)
    sd["classifier.0.weight"] = np.zeros((4, 8), np.float32)      # torchvision's head: ignored
    path = tp.save_state_dict_pth(tmp_path / "vgg19.pth", sd)
    _assert_same_tree(si.load_vgg_pth(path, full), variables)
    sd = tp.load_state_dict_pth(path)
    part = si.vgg_params_from_state_dict(sd, VGGFeatures("vgg19", "conv2_2", base_features=2))
    assert sorted(part["params"]) == ["conv1_1", "conv1_2", "conv2_1", "conv2_2"]
    np.testing.assert_array_equal(part["params"]["conv2_2"]["kernel"],
                                  variables["params"]["conv2_2"]["kernel"])
    del sd["features.34.bias"]               # a truncated file is reported even for conv2_2
    with pytest.raises(ValueError, match=r"missing keys \(1\): \['features.34.bias'\]"):
        si.vgg_params_from_state_dict(sd, VGGFeatures("vgg19", "conv2_2", base_features=2))


def test_vgg16_minc_layout():
    minc = VGGFeatures("vgg16", "conv5_3", base_features=2, ceil_mode=True)
    variables = _random_params(minc, (1, 32, 32, 3))
    sd = si.vgg_state_dict_from_params(variables, "vgg16", layout="minc")
    assert {"conv11.weight", "conv53.bias"} <= set(sd) and len(sd) == 26
    _assert_same_tree(si.vgg_params_from_state_dict(sd, minc), variables)
