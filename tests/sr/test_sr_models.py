"""Tests for the SR networks: parameter counts from the papers' layer lists (via eval_shape,
so nothing is allocated), residual scaling, initialisation, shapes and the VGG trunk."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxzoo.sr.rrdb import RRDB, RRDBNet, ResidualDenseBlock
from jaxzoo.sr.srresnet import SRGANDiscriminator, SRResNet
from jaxzoo.sr.vgg import VGGFeatures, conv_names, torchvision_feature_indices

RNG = np.random.default_rng(2)


def _shapes(model, x_shape, **kw):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(x_shape), **kw))


def _count(model, x_shape, **kw):
    params = _shapes(model, x_shape, **kw)["params"]
    return sum(math.prod(v.shape) for v in jax.tree_util.tree_leaves(params))


def random_variables(model, x_shape, scale=0.1, **kw):
    """Variables of the right structure filled with NumPy noise (real init costs seconds of
    RNG compilation per conv shape on a loaded CPU). BatchNorm variances are positive."""
    shapes = _shapes(model, x_shape, **kw)
    out = {}
    for col, tree in shapes.items():
        flat = traverse_util.flatten_dict(tree)
        out[col] = traverse_util.unflatten_dict({
            k: (np.ones(v.shape, np.float32) if k[-1] == "var" else
                (scale * RNG.standard_normal(v.shape)).astype(np.float32))
            for k, v in flat.items()})
    return out


def _conv(k, cin, cout):
    return k * k * cin * cout + cout


# ----------------------------------------------------------------------------- counts


def test_rrdbnet_default_parameter_count():
    assert _count(RRDBNet(), (1, 8, 8, 3)) == 16_697_987


def test_rrdbnet_count_formula_for_tiny_config():
    nf, gc, nb = 8, 4, 2
    rdb = sum(_conv(3, nf + k * gc, gc) for k in range(4)) + _conv(3, nf + 4 * gc, nf)
    want = _conv(3, 3, nf) + nb * 3 * rdb + 4 * _conv(3, nf, nf) + _conv(3, nf, 3)
    assert _count(RRDBNet(num_blocks=nb, features=nf, growth=gc), (1, 8, 8, 3)) == want
    # x2 / x1 variants only widen conv_first (pixel-unshuffled input).
    x2 = want - _conv(3, 3, nf) + _conv(3, 12, nf)
    assert _count(RRDBNet(num_blocks=nb, features=nf, growth=gc, scale=2), (1, 8, 8, 3)) == x2


@pytest.mark.parametrize("use_bn", [True, False])
def test_srresnet_parameter_count(use_bn):
    # SRGAN Fig. 4: conv9 3->64 + PReLU; 16 x [conv3, BN, PReLU, conv3, BN]; conv3 + BN;
    # 2 x [conv3 64->256, PixelShuffle, PReLU]; conv9 64->3. PReLU: one slope; BN: scale+bias.
    bn = 2 * 64 if use_bn else 0
    block = 2 * _conv(3, 64, 64) + 2 * bn + 1
    want = (_conv(9, 3, 64) + 1 + 16 * block + _conv(3, 64, 64) + bn
            + 2 * (_conv(3, 64, 256) + 1) + _conv(9, 64, 3))
    assert want == (1_549_462 if use_bn else 1_545_238)
    assert _count(SRResNet(use_batchnorm=use_bn), (1, 8, 8, 3)) == want


def test_srgan_discriminator_parameter_count():
    widths = (64, 64, 128, 128, 256, 256, 512, 512)
    cins = (3,) + widths[:-1]
    want = sum(_conv(3, i, o) for i, o in zip(cins, widths)) + sum(2 * w for w in widths[1:])
    want += (8 * 8 * 512 * 1024 + 1024) + (1024 + 1)      # 128 / 2^4 = 8
    assert _count(SRGANDiscriminator(), (1, 128, 128, 3)) == want


@pytest.mark.parametrize("arch,layer,want", [("vgg19", "conv5_4", 20_024_384),
                                             ("vgg16", "conv5_3", 14_714_688)])
def test_vgg_parameter_counts(arch, layer, want):
    # The published convolutional trunks (Keras' include_top=False counts).
    assert _count(VGGFeatures(arch, layer), (1, 32, 32, 3)) == want


# ----------------------------------------------------------------------------- RRDB


def _rdb_input():
    return jnp.asarray(RNG.standard_normal((2, 5, 6, 8)), jnp.float32)


def test_dense_block_with_zero_last_conv_is_identity():
    block = ResidualDenseBlock(features=8, growth=4)
    x = _rdb_input()
    v = random_variables(block, x.shape)
    v["params"]["conv5"] = jax.tree_util.tree_map(np.zeros_like, v["params"]["conv5"])
    np.testing.assert_array_equal(block.apply(v, x), x)


def test_dense_block_residual_scaling():
    # out = x + beta * conv5(...): (out - x) / beta does not depend on beta.
    x = _rdb_input()
    v = random_variables(ResidualDenseBlock(features=8, growth=4), x.shape, scale=0.3)
    res = [(ResidualDenseBlock(features=8, growth=4, residual_scale=b).apply(v, x) - x) / b
           for b in (0.2, 1.0)]
    assert float(jnp.max(jnp.abs(res[0]))) > 1e-2
    np.testing.assert_allclose(res[0], res[1], rtol=1e-5, atol=1e-6)


def test_rrdb_is_scaled_chain_of_dense_blocks():
    x = _rdb_input()
    rrdb = RRDB(features=8, growth=4)
    v = random_variables(rrdb, x.shape, scale=0.3)
    rdb = ResidualDenseBlock(features=8, growth=4)
    h = x
    for k in (1, 2, 3):
        h = rdb.apply({"params": v["params"][f"rdb{k}"]}, h)
    np.testing.assert_allclose(rrdb.apply(v, x), x + 0.2 * h, rtol=1e-5, atol=1e-6)
    for k in (1, 2, 3):
        v["params"][f"rdb{k}"]["conv5"] = jax.tree_util.tree_map(
            np.zeros_like, v["params"][f"rdb{k}"]["conv5"])
    # Each dense block is now the identity, so the RRDB gives x + 0.2 x.
    np.testing.assert_allclose(rrdb.apply(v, x), 1.2 * x, rtol=1e-6)


def test_dense_block_initialisation_is_scaled_kaiming_normal():
    nf, gc = 16, 8
    block = ResidualDenseBlock(features=nf, growth=gc)
    v = jax.jit(block.init)(jax.random.key(0), jnp.zeros((1, 4, 4, nf)))["params"]
    z = []
    for k in range(1, 6):
        kernel = np.asarray(v[f"conv{k}"]["kernel"])
        fan_in = 9 * (nf + (k - 1) * gc)
        assert kernel.shape[2] == nf + (k - 1) * gc
        z.append(kernel.ravel() / (0.1 * math.sqrt(2.0 / fan_in)))     # ~ N(0, 1)
        np.testing.assert_array_equal(v[f"conv{k}"]["bias"], 0.0)
    z = np.concatenate(z)
    se = 1.0 / math.sqrt(2 * z.size)                 # standard error of a sample std
    assert abs(z.std() - 1.0) < 5 * se and abs(z.mean()) < 5 / math.sqrt(z.size)
    assert np.abs(z).max() > 3.0                     # a normal, not a +-2 sigma truncated one


def _np_lrelu(x, slope=0.2):
    return np.where(x >= 0, x, slope * x)


def _np_rrdbnet(p, x, num_blocks, scale, beta=0.2):
    """Float64 NumPy forward of ESRGAN's RRDBNet (Sec. 3.1, Fig. 3-4; BasicSR's x2 / x1 variants
    pixel-unshuffle first, torch order out[h, w, c r^2 + i r + j] = x[h r + i, w r + j, c]), NHWC
    with the Flax HWIO parameters `p`."""
    conv = lambda h, name: _np_conv3x3(h, p[name]["kernel"], p[name]["bias"])  # noqa: E731
    if scale < 4:
        r = 4 // scale
        n, hh, ww, c = x.shape
        out = np.zeros((n, hh // r, ww // r, c * r * r))
        for ch in range(c):
            for i in range(r):
                for j in range(r):
                    out[..., ch * r * r + i * r + j] = x[:, i::r, j::r, ch]
        x = out
    feat = _np_conv3x3(x, p["conv_first"]["kernel"], p["conv_first"]["bias"])
    h = feat
    for b in range(num_blocks):
        blk = p[f"body_{b}"]
        y = h
        for k in (1, 2, 3):
            rdb = blk[f"rdb{k}"]
            feats = [y]
            for j in range(1, 5):
                cat = np.concatenate(feats, -1)
                feats.append(_np_lrelu(_np_conv3x3(cat, **rdb[f"conv{j}"])))
            y = y + beta * _np_conv3x3(np.concatenate(feats, -1), **rdb["conv5"])
        h = h + beta * y
    feat = feat + conv(h, "conv_body")
    for k in (1, 2):
        feat = feat.repeat(2, axis=1).repeat(2, axis=2)  # nearest-neighbour x2
        feat = _np_lrelu(conv(feat, f"conv_up{k}"))
    return conv(_np_lrelu(conv(feat, "conv_hr")), "conv_last")


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_rrdbnet_output_matches_numpy_forward(scale):
    model = RRDBNet(num_blocks=2, features=8, growth=4, scale=scale)
    x = RNG.random((1, 8, 12, 3))
    v = random_variables(model, x.shape, scale=0.3)
    y = np.asarray(jax.jit(model.apply)(v, jnp.asarray(x, jnp.float32)), np.float64)
    assert y.shape == (1, 8 * scale, 12 * scale, 3)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v["params"])
    want = _np_rrdbnet(p, x, num_blocks=2, scale=scale)
    assert want.std() > 0.1  # a non-trivial map at this weight scale
    # float32 through ~40 convolutions: errors of ~1e-6 of the output scale (measured <= 7e-7)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_rrdbnet_bad_config():
    with pytest.raises(ValueError, match="scale"):
        _shapes(RRDBNet(scale=3), (1, 8, 8, 3))
    with pytest.raises(ValueError, match="input channels"):
        _shapes(RRDBNet(), (1, 8, 8, 1))


# ----------------------------------------------------------------------------- SRResNet / D


def test_srresnet_shapes_batchnorm_modes():
    model = SRResNet(num_blocks=2, features=8)
    x = jnp.asarray(RNG.random((2, 6, 5, 3)), jnp.float32)
    v = random_variables(model, x.shape)
    y = model.apply(v, x)
    assert y.shape == (2, 24, 20, 3)
    y_train, new = model.apply(v, x, train=True, mutable=["batch_stats"])
    assert y_train.shape == y.shape
    old_mean = v["batch_stats"]["bn_body"]["mean"]
    assert not np.allclose(new["batch_stats"]["bn_body"]["mean"], old_mean)
    no_bn = SRResNet(num_blocks=2, features=8, use_batchnorm=False)
    assert "batch_stats" not in _shapes(no_bn, x.shape)
    assert no_bn.apply(random_variables(no_bn, x.shape), x).shape == (2, 24, 20, 3)
    with pytest.raises(ValueError, match="power of two"):
        _shapes(SRResNet(scale=3), x.shape)


def test_srgan_discriminator_tiny():
    d = SRGANDiscriminator(features=(4, 4, 8, 8), dense_features=16, patch_size=16)
    x = jnp.asarray(RNG.random((3, 16, 16, 3)), jnp.float32)
    v = random_variables(d, x.shape)
    assert d.apply(v, x).shape == (3, 1)
    # stride-2 convs pad one pixel on each side like PyTorch: 16 -> 8 -> 4.
    assert _shapes(d, x.shape)["params"]["dense1"]["kernel"].shape == (4 * 4 * 8, 16)
    with pytest.raises(ValueError, match="16, 16"):
        d.apply(v, x[:, :8])


# ----------------------------------------------------------------------------- VGG


def _np_conv3x3(x, kernel, bias):
    """Float64 reference of a padded 3x3 convolution (cross-correlation), NHWC / HWIO."""
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nhwc,co->nhwo", xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx])
    return out + bias


def test_vgg_returns_pre_activation_features():
    model = VGGFeatures("vgg19", "conv2_1", base_features=2)
    x = RNG.random((1, 6, 6, 3))
    v = random_variables(model, x.shape, scale=0.5)
    got = np.asarray(model.apply(v, jnp.asarray(x, jnp.float32)))
    p = {k: {n: np.asarray(a, np.float64) for n, a in d.items()} for k, d in v["params"].items()}
    h = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    h = np.maximum(_np_conv3x3(h, **p["conv1_1"]), 0)
    h = np.maximum(_np_conv3x3(h, **p["conv1_2"]), 0)
    h = h.reshape(1, 3, 2, 3, 2, 2).max(axis=(2, 4))
    want = _np_conv3x3(h, **p["conv2_1"])             # no ReLU: pre-activation
    assert want.min() < 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert set(v["params"]) == {"conv1_1", "conv1_2", "conv2_1"}   # nothing after `layer`


def test_vgg_layer_validation_pooling_and_indices():
    with pytest.raises(ValueError, match="conv5_4.*not a conv layer of vgg16"):
        _shapes(VGGFeatures("vgg16", "conv5_4"), (1, 32, 32, 3))
    with pytest.raises(ValueError, match="arch"):
        conv_names("vgg11")
    ceil = VGGFeatures("vgg16", "conv3_1", ceil_mode=True, base_features=2)
    x = jnp.zeros((1, 9, 9, 3))
    v = random_variables(ceil, x.shape)
    assert ceil.apply(v, x).shape == (1, 3, 3, 8)   # 9 -> 5 -> 3 (ceil); floor: 9 -> 4 -> 2
    f = VGGFeatures("vgg16", "conv3_1", base_features=2)
    assert f.apply(random_variables(f, x.shape), x).shape == (1, 2, 2, 8)
    assert torchvision_feature_indices("vgg19")["conv5_4"] == 34   # ESRGAN's feature_layer=34
    assert torchvision_feature_indices("vgg16")["conv5_3"] == 28
