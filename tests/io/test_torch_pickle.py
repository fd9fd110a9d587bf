"""Tests for jaxzoo.io.torch_pickle, the torch-free .pth reader and writer. torch is not
installed, so the reader is checked on pickles assembled here opcode by opcode in the shape
torch.save emits (GLOBAL torch._utils _rebuild_tensor_v2, persistent id ('storage',
torch.FloatStorage, key, 'cpu', numel)), independently of the writer."""

import io
import pickletools
import struct
import zipfile

import numpy as np
import pytest

from jaxzoo.io import torch_pickle as tp

RNG = np.random.default_rng(3)


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
    sd = tp.load_state_dict_pth(path)
    assert list(sd) == ["full", "view", "count"]
    np.testing.assert_array_equal(sd["full"], storage.reshape(3, 4))
    np.testing.assert_array_equal(sd["view"], [[storage[5], storage[9]], [storage[6], storage[10]]])
    assert sd["count"].shape == () and sd["count"] == -3 and sd["count"].dtype == np.int64
    assert sd["full"].dtype == np.float32
    assert tp.read_pth(path)._metadata == {"": {"version": 1}}


def test_reader_honours_big_endian_byteorder_record(tmp_path):
    values = np.array([1.25, -2.0, 3.5], dtype=">f4")
    pkl = b"\x80\x02" + _ODICT + _s("w") + _tensor("FloatStorage", "0", 3, 0, (3,), (1,)) + b"s."
    path = _zip(tmp_path / "big.pth", pkl, {"0": values.tobytes()}, byteorder=b"big")
    np.testing.assert_array_equal(tp.load_state_dict_pth(path)["w"], [1.25, -2.0, 3.5])


def test_reader_rejects_damaged_or_hostile_files(tmp_path):
    pkl = b"\x80\x02" + _ODICT + _s("w") + _tensor("FloatStorage", "0", 3, 0, (3,), (1,)) + b"s."
    short = _zip(tmp_path / "short.pth", pkl, {"0": b"\0" * 8})
    with pytest.raises(ValueError, match="8 bytes, expected 3 x 4"):
        tp.read_pth(short)
    far = b"\x80\x02" + _ODICT + _s("w") + _tensor("FloatStorage", "0", 3, 1, (3,), (1,)) + b"s."
    with pytest.raises(ValueError, match="does not fit"):
        tp.read_pth(_zip(tmp_path / "far.pth", far, {"0": b"\0" * 12}))
    with pytest.raises(ValueError, match="missing from the archive"):
        tp.read_pth(_zip(tmp_path / "nodata.pth", pkl, {}))
    evil = b"\x80\x02cos\nsystem\n" + _s("echo hi") + b"\x85R."
    with pytest.raises(ValueError, match="evil.pth: refusing to unpickle global os.system"):
        tp.read_pth(_zip(tmp_path / "evil.pth", evil, {}))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch file"):
        tp.read_pth(tmp_path / "junk.pth")


# ----------------------------------------------------------------------------- writer


def test_writer_layout_matches_torch_save(tmp_path):
    sd = {"a.weight": RNG.standard_normal((2, 3, 3, 3)).astype(np.float32),
          "a.bias": np.zeros(2, np.float32)}
    path = tp.save_state_dict_pth(tmp_path / "model_x4.pth", sd)
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
    path = tp.save_state_dict_pth(tmp_path / "dt.pth", {"params_ema": sd, "params": {}},
                                  legacy=legacy)
    back = tp.load_state_dict_pth(path)               # "auto" unwraps params_ema
    assert list(back) == list(sd)
    for k, v in sd.items():
        assert back[k].dtype == np.asarray(v).dtype, k
        np.testing.assert_array_equal(back[k], v)


def test_load_strips_dataparallel_prefix_and_checks_param_key(tmp_path):
    path = tp.save_state_dict_pth(tmp_path / "dp.pth", {"module.w": np.ones(2, np.float32),
                                                         "module.b": np.zeros(1, np.float32)})
    assert list(tp.load_state_dict_pth(path)) == ["w", "b"]
    with pytest.raises(ValueError, match="param_key='params' not in the file"):
        tp.load_state_dict_pth(path, param_key="params")
