"""Tests for jaxzoo.models.sr_import: the torch-free .pth reader/writer and the RRDBNet / VGG
weight mappers. torch is not installed, so the reader is checked on pickles assembled here
opcode by opcode in the shape torch.save emits (GLOBAL torch._utils _rebuild_tensor_v2,
persistent id ('storage', torch.FloatStorage, key, 'cpu', numel)), independently of the writer."""

import io
import pickle
import pickletools
import struct
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxzoo.models import sr_import as si
from jaxzoo.models.rrdb import RRDBNet
from jaxzoo.models.vgg import VGGFeatures

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


# ----------------------------------------------------------------------------- hand-made pickles


def _s(text):                      # BINUNICODE
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _i(n):                         # BININT1
    return b"K" + bytes([n])


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


_ODICT = b"ccollections\nOrderedDict\n)R"


def _tensor(storage_type, key, numel, offset, size, stride):
    pid = _tuple(_s("storage"), b"ctorch\n" + storage_type.encode() + b"\n", _s(key), _s("cpu"),
                 _i(numel)) + b"Q"
    args = _tuple(pid, _i(offset), _tuple(*map(_i, size)), _tuple(*map(_i, stride)),
                  b"\x89", _ODICT)
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def _zip(path, pkl, records, prefix="archive", byteorder=None):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl)
        if byteorder:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in records.items():
            zf.writestr(f"{prefix}/data/{key}", raw)
        zf.writestr(f"{prefix}/version", b"3\n")
    return path


def test_reader_applies_dtype_shape_stride_and_offset(tmp_path):
    storage = np.arange(12, dtype="<f4") * 1.5
    longs = np.array([7, -3], dtype="<i8")
    pkl = b"\x80\x02" + _ODICT + b"".join([
        _s("full"), _tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1)), b"s",
        _s("view"), _tensor("FloatStorage", "0", 12, 5, (2, 2), (1, 4)), b"s",   # shared storage
        _s("count"), _tensor("LongStorage", "1", 2, 1, (), ()), b"s",           # 0-d tensor
        # state_dict() carries `_metadata` as an attribute of the OrderedDict (BUILD opcode)
        b"}", _s("_metadata"), b"}", _s(""), b"}", _s("version"), _i(1), b"sssb",
    ]) + b"."
    pickletools.dis(pkl, out=io.StringIO())            # the hand-made pickle is well formed
    path = _zip(tmp_path / "hand.pth", pkl, {"0": storage.tobytes(), "1": longs.tobytes()},
                prefix="hand")
    sd = si.load_state_dict_pth(path)
    assert list(sd) == ["full", "view", "count"]
    np.testing.assert_array_equal(sd["full"], storage.reshape(3, 4))
    np.testing.assert_array_equal(sd["view"], [[storage[5], storage[9]], [storage[6], storage[10]]])
    assert sd["count"].shape == () and sd["count"] == -3 and sd["count"].dtype == np.int64
    assert sd["full"].dtype == np.float32
    assert si.read_pth(path)._metadata == {"": {"version": 1}}


def test_reader_honours_big_endian_byteorder_record(tmp_path):
    values = np.array([1.25, -2.0, 3.5], dtype=">f4")
    pkl = b"\x80\x02" + _ODICT + _s("w") + _tensor("FloatStorage", "0", 3, 0, (3,), (1,)) + b"s."
    path = _zip(tmp_path / "big.pth", pkl, {"0": values.tobytes()}, byteorder=b"big")
    np.testing.assert_array_equal(si.load_state_dict_pth(path)["w"], [1.25, -2.0, 3.5])


def test_reader_rejects_damaged_or_hostile_files(tmp_path):
    pkl = b"\x80\x02" + _ODICT + _s("w") + _tensor("FloatStorage", "0", 3, 0, (3,), (1,)) + b"s."
    short = _zip(tmp_path / "short.pth", pkl, {"0": b"\0" * 8})
    with pytest.raises(ValueError, match="8 bytes, expected 3 x 4"):
        si.read_pth(short)
    far = b"\x80\x02" + _ODICT + _s("w") + _tensor("FloatStorage", "0", 3, 1, (3,), (1,)) + b"s."
    with pytest.raises(ValueError, match="does not fit"):
        si.read_pth(_zip(tmp_path / "far.pth", far, {"0": b"\0" * 12}))
    with pytest.raises(ValueError, match="missing from the archive"):
        si.read_pth(_zip(tmp_path / "nodata.pth", pkl, {}))
    evil = b"\x80\x02cos\nsystem\n" + _s("echo hi") + b"\x85R."
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global os.system"):
        si.read_pth(_zip(tmp_path / "evil.pth", evil, {}))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch file"):
        si.read_pth(tmp_path / "junk.pth")


# ----------------------------------------------------------------------------- writer


def test_writer_layout_matches_torch_save(tmp_path):
    sd = {"a.weight": RNG.standard_normal((2, 3, 3, 3)).astype(np.float32),
          "a.bias": np.zeros(2, np.float32)}
    path = si.save_state_dict_pth(tmp_path / "model_x4.pth", sd)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == ["model_x4/data.pkl", "model_x4/byteorder", "model_x4/data/0",
                         "model_x4/data/1", "model_x4/version", "model_x4/.data/serialization_id"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        for i in infos:     # every record's data starts on a 64-byte boundary ('FB' extra field)
            n, e = struct.unpack("<HH", raw[i.header_offset + 26:i.header_offset + 30])
            assert (i.header_offset + 30 + n + e) % 64 == 0
            assert raw[i.header_offset + 30 + n:i.header_offset + 32 + n] == b"FB"
        pkl = zf.read("model_x4/data.pkl")
        assert zf.read("model_x4/byteorder") == b"little"
        assert zf.read("model_x4/data/0") == sd["a.weight"].astype("<f4").tobytes()
    assert pkl[:2] == b"\x80\x02"                       # pickle protocol 2 (torch's default)
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl)]
    globals_ = {arg for name, arg in ops if name == "GLOBAL"}
    assert globals_ == {"collections OrderedDict", "torch._utils _rebuild_tensor_v2",
                        "torch FloatStorage"}
    assert sum(name == "BINPERSID" for name, _ in ops) == 2


@pytest.mark.parametrize("legacy", [False, True])
def test_writer_reader_round_trip_dtypes_and_nesting(tmp_path, legacy):
    import ml_dtypes

    sd = {"f32": RNG.standard_normal((2, 3)).astype(np.float32),
          "f64": RNG.standard_normal(4),
          "f16": RNG.standard_normal((3, 1)).astype(np.float16),
          "bf16": RNG.standard_normal(5).astype(ml_dtypes.bfloat16),
          "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
          "u8": np.arange(4, dtype=np.uint8), "b": np.array([True, False]),
          "scalar": np.float32(2.5), "fortran": np.asfortranarray(RNG.random((3, 4)))}
    path = si.save_state_dict_pth(tmp_path / "dt.pth", {"params_ema": sd, "params": {}},
                                  legacy=legacy)
    back = si.load_state_dict_pth(path)               # "auto" unwraps params_ema
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert back[k].dtype == np.asarray(v).dtype, k
        np.testing.assert_array_equal(back[k], v)


def test_load_strips_dataparallel_prefix_and_checks_param_key(tmp_path):
    path = si.save_state_dict_pth(tmp_path / "dp.pth", {"module.w": np.ones(2, np.float32),
                                                         "module.b": np.zeros(1, np.float32)})
    assert list(si.load_state_dict_pth(path)) == ["w", "b"]
    with pytest.raises(ValueError, match="param_key='params' not in the file"):
        si.load_state_dict_pth(path, param_key="params")


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
    path = si.save_state_dict_pth(tmp_path / f"rrdb_{layout}.pth", sd, legacy=legacy)
    loaded = si.load_state_dict_pth(path)
    assert si.detect_rrdbnet_layout(loaded) == layout
    imported = si.rrdbnet_params_from_state_dict(loaded, TINY)
    _assert_same_tree(imported, variables)
    _assert_same_tree(si.load_rrdbnet_pth(path, TINY), variables)
    x = jnp.asarray(RNG.random((1, 5, 4, 3)), jnp.float32)
    apply = jax.jit(TINY.apply)
    np.testing.assert_array_equal(apply(imported, x), apply(variables, x))


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
    path = si.save_state_dict_pth(tmp_path / "vgg19.pth", sd)
    _assert_same_tree(si.load_vgg_pth(path, full), variables)
    sd = si.load_state_dict_pth(path)
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
