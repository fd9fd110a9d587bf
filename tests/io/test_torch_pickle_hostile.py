"""Hostile and malformed .pth files for jaxzoo.io.torch_pickle: each must raise ValueError naming
the file, run nothing, and keep the reader within a small multiple of the file's size in memory.

Payloads are spliced into otherwise valid files just before a pickle's STOP and their result
popped, so that plain pickle runs them and still returns the slot's value: an unrestricted
reader would run the code and then load the weights (test_payloads_are_live shows they do)."""

import collections
import io
import pickle
import pickletools
import re
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from jaxzoo.io import torch_pickle as tp

SD = {"conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
      "conv.bias": np.array([0.5, -1.0], np.float32)}
LEGACY_SLOTS = ("magic", "protocol", "sys_info", "object", "storage_keys")
PROTOCOL = {"GLOBAL": 2, "STACK_GLOBAL": 4, "INST": 0}   # the protocol each opcode comes from


# ----------------------------------------------------------------------------- pickle pieces


def _s(text):                      # BINUNICODE
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(n):                       # BININT1, BININT or LONG1
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes(9, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


_ODICT = b"ccollections\nOrderedDict\n)R"


def _pid(storage_type, key, numel, *view):
    return _tuple(_s("storage"), b"ctorch\n" + storage_type.encode() + b"\n", _s(key), _s("cpu"),
                  _int(numel), *view) + b"Q"


def _tensor(pid, offset, size, stride):
    args = _tuple(pid, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)),
                  b"\x89", _ODICT)
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def _state_dict(**tensors):
    return b"\x80\x02" + _ODICT + b"".join(_s(k) + t + b"s" for k, t in tensors.items()) + b"."


def _zip(pkl, records=(), prefix="archive", compress=zipfile.ZIP_STORED, byteorder=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", pkl, compress_type=compress)
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, raw in dict(records).items():
            zf.writestr(f"{prefix}/data/{key}", raw, compress_type=compress)
        zf.writestr(f"{prefix}/version", b"3\n")
    return buf.getvalue()


def _legacy(obj_pkl, keys, records, magic=tp.LEGACY_MAGIC, protocol=tp.LEGACY_PROTOCOL,
            sys_info=None):
    """A legacy-format file: header pickles, the object, the key list, then per key an int64
    count and the bytes. records: [(count, raw)]."""
    sys_info = dict(protocol_version=1001, little_endian=True) if sys_info is None else sys_info
    head = b"".join(pickle.dumps(v, 2) for v in (magic, protocol, sys_info))
    tail = b"".join(struct.pack("<q", n) + raw for n, raw in records)
    return head + obj_pkl + pickle.dumps(keys, 2) + tail


def _unframed(raw):
    """raw without its protocol-4 FRAME opcodes (optional), so opcodes can be spliced in."""
    out, pos = [], 0
    for op, _, at in pickletools.genops(raw):
        if op.name == "FRAME":
            out.append(raw[pos:at])
            pos = at + 9
    return b"".join(out) + raw[pos:]


def _body(value, protocol):        # the opcodes that push value: no PROTO, no STOP
    raw = _unframed(pickle.dumps(value, protocol))
    return raw[2 if protocol >= 2 else 0:-1]


def _call(opcode, module, name, *args):
    """Opcodes that push module.name(*args) via GLOBAL, STACK_GLOBAL or INST."""
    if opcode == "INST":
        return (b"(" + b"".join(b"S'%s'\n" % a.encode() for a in args)
                + b"i%s\n%s\n" % (module.encode(), name.encode()))
    if opcode == "GLOBAL":
        return b"c%s\n%s\n" % (module.encode(), name.encode()) + _body(args, 2) + b"R"
    return _body(module, 4) + _body(name, 4) + b"\x93" + _body(args, 4) + b"R"


def _with_payload(pkl, payload):
    """pkl running payload (result popped) just before STOP: it still returns pkl's value."""
    assert pkl.endswith(b".")
    return pkl[:-1] + payload + b"0."


def _legacy_parts(tmp_path):
    """The writer's legacy file split into its five pickles and the storage records."""
    raw = tp.save_state_dict_pth(tmp_path / "ok.pth", SD, legacy=True).read_bytes()
    f, parts = io.BytesIO(raw), []
    for _ in LEGACY_SLOTS:
        start = f.tell()
        for _ in pickletools.genops(f):
            pass
        parts.append(raw[start:f.tell()])
    return parts, raw[f.tell():]


def _hostile_slot(tmp_path, slot, opcode, payload):
    """(path of the hostile file, the hostile pickle, the pickle it replaced)."""
    protocol = PROTOCOL[opcode]
    if slot == "zip data.pkl":
        ok = tp.save_state_dict_pth(tmp_path / "ok.pth", SD)
        with zipfile.ZipFile(ok) as zf:
            records = {i.filename: zf.read(i) for i in zf.infolist()}
        original = records["ok/data.pkl"]
        pkl = b"\x80\x04" + original[2:] if protocol == 4 else original
        pkl = records["ok/data.pkl"] = _with_payload(pkl, payload)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, raw in records.items():
                zf.writestr(name, raw)
        data = buf.getvalue()
    else:
        parts, records = _legacy_parts(tmp_path)
        i = LEGACY_SLOTS.index(slot)
        original = parts[i]
        if slot == "object":   # torch's own pickle (protocol 2), relabelled for protocol 4
            pkl = b"\x80\x04" + original[2:] if protocol == 4 else original
        else:                  # plain data: re-pickled with the payload's protocol
            pkl = _unframed(pickle.dumps(pickle.loads(original), protocol))
        parts[i] = pkl = _with_payload(pkl, payload)
        data = b"".join(parts) + records
    path = tmp_path / "hostile.pth"
    path.write_bytes(data)
    return path, pkl, original


def _torch_stand_in(*args):
    return args


class _Permissive(pickle.Unpickler):
    """What an unrestricted reader does: torch names stand-ins, every other global imported."""

    def find_class(self, module, name):
        if module.startswith("torch"):
            return _torch_stand_in
        return super().find_class(module, name)

    def persistent_load(self, pid):
        return pid


def _permissive_load(pkl):
    return _Permissive(io.BytesIO(pkl)).load()


# ----------------------------------------------------------------------------- code execution


SLOTS = LEGACY_SLOTS + ("zip data.pkl",)


@pytest.mark.parametrize("target", ["os.system", "os.mkdir"])
@pytest.mark.parametrize("opcode", ["GLOBAL", "STACK_GLOBAL", "INST"])
@pytest.mark.parametrize("slot", SLOTS)
def test_payload_in_any_pickle_is_refused(tmp_path, slot, opcode, target):
    sentinel = tmp_path / "SENTINEL"
    module, name = target.split(".")
    arg = f"touch {sentinel}" if name == "system" else str(sentinel)
    path, _, _ = _hostile_slot(tmp_path, slot, opcode, _call(opcode, module, name, arg))
    refused = f"^{re.escape(str(path))}: .*refusing to unpickle global {re.escape(target)}:"
    with pytest.raises(ValueError, match=refused):
        tp.read_pth(path)
    with pytest.raises(ValueError, match=refused):   # the route of --config.vgg_weights
        tp.load_state_dict_pth(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("opcode", ["GLOBAL", "STACK_GLOBAL", "INST"])
@pytest.mark.parametrize("slot", SLOTS)
def test_payloads_are_live(tmp_path, slot, opcode):
    """The files above are real attacks: unrestricted unpickling runs the payload and still
    returns the slot's value, so an unrestricted reader would go on to load the weights."""
    sentinel = tmp_path / "SENTINEL"
    _, pkl, original = _hostile_slot(tmp_path, slot, opcode,
                                     _call(opcode, "os", "mkdir", str(sentinel)))
    assert _permissive_load(pkl) == _permissive_load(original)
    assert sentinel.is_dir()


REFUSED_GLOBALS = [("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"),
                   ("builtins", "__import__"), ("__builtin__", "eval"), ("os", "system"),
                   ("posix", "system"), ("nt", "system"), ("subprocess", "Popen"),
                   ("torch._utils", "something_else"), ("torch._utils", "_rebuild_tensor_v2.x"),
                   ("torch", "load"), ("torch", "FooStorage"), ("torch.storage", "os"),
                   ("collections", "OrderedDict.fromkeys"), ("copyreg", "_reconstructor"),
                   ("numpy.core.multiarray", "_reconstruct"),
                   ("jaxzoo.io.torch_pickle", "_rebuild_tensor")]


@pytest.mark.parametrize("module, name", REFUSED_GLOBALS)
def test_find_class_refuses_everything_else(tmp_path, module, name):
    unpickler = tp._Unpickler(io.BytesIO(b""), tp._Budget(0))
    with pytest.raises(ValueError, match=f"refusing to unpickle global {re.escape(module)}"):
        unpickler.find_class(module, name)
    for opcode in PROTOCOL:
        path = tmp_path / f"{opcode}.pth"
        path.write_bytes(_zip(b"\x80\x02" + _call(opcode, module, name) + b"."))
        with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: refusing to unpickle "
                                             f"global {re.escape(module)}.{re.escape(name)}:"):
            tp.read_pth(path)


def test_find_class_resolves_torch_names_to_local_stand_ins():
    unpickler = tp._Unpickler(io.BytesIO(b""), tp._Budget(0))
    for module, name in [("builtins", "set"), ("torch", "Size"), ("collections", "OrderedDict"),
                         ("torch._utils", "_rebuild_tensor_v2")]:
        found = unpickler.find_class(module, name)       # no class: NEWOBJ could not use it
        assert not isinstance(found, type) and found.func.__module__ == tp.__name__
    assert unpickler.find_class("torch", "HalfStorage").dtype == np.float16
    assert unpickler.find_class("torch.storage", "UntypedStorage").dtype == np.uint8
    assert unpickler.find_class("torch", "Size")([3, 4]) == (3, 4)
    assert unpickler.find_class("collections", "OrderedDict")() == collections.OrderedDict()
    assert unpickler.find_class("torch._utils", "_rebuild_parameter")("data", True, {}) == "data"


@pytest.mark.parametrize("pkl, message", [
    (b"\x80\x02\x82\x01.", "refusing pickle opcode EXT1"),
    (b"\x80\x02\x83\x01\x00.", "refusing pickle opcode EXT2"),
    (b"\x80\x02ccollections\nOrderedDict\n)\x81.", "refusing pickle opcode NEWOBJ"),
    (b"\x80\x04\x96" + struct.pack("<Q", 1 << 40) + b"xyz.", "refusing pickle opcode BYTEARRAY8"),
    (b"\x80\x05\x97.", "refusing pickle opcode NEXT_BUFFER"),
    # BUILD may only set a state dict's attributes, not a rebuild function's or an array's
    (b"\x80\x02ctorch._utils\n_rebuild_parameter\n}" + _s("__defaults__") + b")sb.",
     "refusing BUILD of a partial"),
    (b"\x80\x02" + _tensor(_pid("FloatStorage", "0", 3), 0, (3,), (1,)) + b"}b.",
     "refusing BUILD of a ndarray"),
], ids=["EXT1", "EXT2", "NEWOBJ", "BYTEARRAY8", "NEXT_BUFFER", "BUILD-function", "BUILD-array"])
def test_opcodes_that_bypass_find_class_are_refused(tmp_path, pkl, message):
    path = tmp_path / "op.pth"
    path.write_bytes(_zip(pkl, {"0": b"\0" * 12}))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {message}"):
        tp.read_pth(path)


# ----------------------------------------------------------------------------- malformed files


def _ok_zip(tmp_path):
    return tp.save_state_dict_pth(tmp_path / "ok.pth", SD).read_bytes()


def _ok_legacy(tmp_path):
    return tp.save_state_dict_pth(tmp_path / "ok.pth", SD, legacy=True).read_bytes()


def _legacy_with(tmp_path, slot, value):
    parts, records = _legacy_parts(tmp_path)
    parts[LEGACY_SLOTS.index(slot)] = pickle.dumps(value, 2)
    return b"".join(parts) + records


W3 = _pid("FloatStorage", "0", 3)
MALFORMED = {
    "empty": (lambda t: b"", "not a PyTorch file"),
    "garbage": (lambda t: bytes(range(256)), "not a PyTorch file"),
    "zip_truncated": (lambda t: _ok_zip(t)[:len(_ok_zip(t)) // 2], "BadZipFile"),
    "zip_without_data_pkl": (lambda t: _ok_zip(t).replace(b"data.pkl", b"data.pkX"),
                             "no single <name>/data.pkl"),
    "zip_invalid_opcode": (lambda t: _zip(b"\x80\x02\xff."), "invalid pickle opcode"),
    "zip_pickle_without_stop": (lambda t: _zip(b"\x80\x02K\x01"), "EOFError"),
    "zip_empty_stack": (lambda t: _zip(b"\x80\x02R."), "IndexError"),
    "zip_pid_not_tuple": (lambda t: _zip(b"\x80\x02" + _s("storage") + b"Q."),
                          "unknown persistent id"),
    "zip_pid_too_short": (lambda t: _zip(b"\x80\x02" + _tuple(_s("storage"), _s("0")) + b"Q."),
                          "unknown persistent id"),
    "zip_pid_numel_str": (lambda t: _zip(b"\x80\x02" + _tuple(
        _s("storage"), b"ctorch\nFloatStorage\n", _s("0"), _s("cpu"), _s("3")) + b"Q."),
        "storage size must be a non-negative int64, not '3'"),
    "zip_pid_numel_negative": (lambda t: _zip(_state_dict(w=_tensor(
        _pid("FloatStorage", "0", -3), 0, (3,), (1,))), {"0": b"\0" * 12}),
        "storage size must be a non-negative int64, not -3"),
    "zip_pid_type_not_class": (lambda t: _zip(b"\x80\x02" + _tuple(
        _s("storage"), _s("FloatStorage"), _s("0"), _s("cpu"), _int(3)) + b"Q."),
        "storage type 'FloatStorage' is not a torch class"),
    "zip_pid_key_not_str": (lambda t: _zip(b"\x80\x02" + _tuple(
        _s("storage"), b"ctorch\nFloatStorage\n", b"N", _s("cpu"), _int(3)) + b"Q."),
        "storage key None"),
    "zip_unknown_storage_type": (lambda t: _zip(_state_dict(w=_tensor(
        _pid("QuantumStorage", "0", 3), 0, (3,), (1,))), {"0": b"\0" * 12}),
        "refusing to unpickle global torch.QuantumStorage"),
    "zip_missing_record": (lambda t: _zip(_state_dict(w=_tensor(W3, 0, (3,), (1,)))),
                           "'archive/data/0' missing from the archive"),
    "zip_short_record": (lambda t: _zip(_state_dict(w=_tensor(W3, 0, (3,), (1,))),
                                        {"0": b"\0" * 8}), "has 8 bytes, expected 3 x 4"),
    "zip_bad_byteorder": (lambda t: _zip(_state_dict(w=_tensor(W3, 0, (3,), (1,))),
                                         {"0": b"\0" * 12}, byteorder=b"middle"),
                          "unknown byteorder record b'middle'"),
    "zip_negative_stride": (lambda t: _zip(_state_dict(w=_tensor(W3, 0, (3,), (-1,))),
                                           {"0": b"\0" * 12}), "tensor stride must be"),
    "zip_negative_offset": (lambda t: _zip(_state_dict(w=_tensor(W3, -1, (3,), (1,))),
                                           {"0": b"\0" * 12}), "tensor offset must be"),
    "zip_negative_size": (lambda t: _zip(_state_dict(w=_tensor(W3, 0, (-3,), (1,))),
                                         {"0": b"\0" * 12}), "tensor size must be"),
    "zip_size_stride_lengths": (lambda t: _zip(_state_dict(w=_tensor(W3, 0, (3,), (1, 1))),
                                               {"0": b"\0" * 12}), "not sequences of one length"),
    "zip_tensor_past_storage": (lambda t: _zip(_state_dict(w=_tensor(W3, 0, (2, 2), (2, 1))),
                                               {"0": b"\0" * 12}), "does not fit its storage"),
    "zip_tensor_of_a_string": (lambda t: _zip(
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n"
        + _tuple(_s("x"), _int(0), _tuple(_int(3)), _tuple(_int(1))) + b"R."),
        "tensor storage is a str"),
    "legacy_truncated_header": (lambda t: _ok_legacy(t)[:5], "not a PyTorch file"),
    "legacy_truncated_object": (lambda t: b"".join(_legacy_parts(t)[0][:3])
                                + _legacy_parts(t)[0][3][:40], "EOFError"),
    "legacy_truncated_count": (lambda t: b"".join(_legacy_parts(t)[0]) + b"\x06\0\0",
                               "file truncated before storage '0'"),
    "legacy_truncated_data": (lambda t: _ok_legacy(t)[:-3], "file truncated in storage '1'"),
    "legacy_bad_magic": (lambda t: _legacy_with(t, "magic", 123), "bad magic number"),
    "legacy_magic_wrong_type": (lambda t: _legacy_with(t, "magic", float(tp.LEGACY_MAGIC)),
                                "bad magic number"),
    "legacy_bad_protocol": (lambda t: _legacy_with(t, "protocol", 1000),
                            "unsupported legacy protocol version 1000"),
    "legacy_sys_info_not_dict": (lambda t: _legacy_with(t, "sys_info", [1]),
                                 "malformed system info"),
    "legacy_keys_not_list": (lambda t: _legacy_with(t, "storage_keys", "01"),
                             "malformed storage key list"),
    "legacy_keys_unknown": (lambda t: _legacy_with(t, "storage_keys", ["0", "1", "7"]),
                            "does not match the object's storages"),
    "legacy_keys_repeated": (lambda t: _legacy_with(t, "storage_keys", ["0", "0", "1"]),
                             "does not match the object's storages"),
    "legacy_count_mismatch": (lambda t: _legacy(
        _state_dict(w=_tensor(_pid("FloatStorage", "0", 3, b"N"), 0, (3,), (1,))), ["0"],
        [(2, b"\0" * 8)]), "storage '0' holds 2 elements, the object declares 3"),
    "legacy_view_past_root": (lambda t: _legacy(_state_dict(w=_tensor(_pid(
        "FloatStorage", "0", 3, _tuple(_s("v"), _int(2), _int(2))), 0, (2,), (1,))), ["0"],
        [(3, b"\0" * 12)]), r"storage view \[2:4\] exceeds storage '0' of 3 elements"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_raises_value_error_naming_it(tmp_path, case):
    build, message = MALFORMED[case]
    path = tmp_path / f"{case}.pth"
    path.write_bytes(build(tmp_path))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{message}"):
        tp.read_pth(path)


def test_file_bytes_and_non_state_dicts_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"^<3 bytes>: not a PyTorch file"):
        tp.read_pth(b"\x80\x02.")
    path = tmp_path / "list.pth"
    path.write_bytes(_zip(b"\x80\x02]K\x01a."))
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: file holds a list"):
        tp.load_state_dict_pth(path)


# ----------------------------------------------------------------------------- memory


def _refused_cheaply(path, message, peak_bytes=4 << 20, seconds=5.0):
    """read_pth(path) raises ValueError(message) quickly, allocating under peak_bytes."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{message}"):
            tp.read_pth(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < peak_bytes, f"peak allocation {peak} bytes"
    assert time.perf_counter() - start < seconds


HUGE = (50000, 50000)   # 9.3 GiB of float32


def test_stride_zero_expansion_is_refused(tmp_path):
    pkl = _state_dict(w=_tensor(_pid("FloatStorage", "0", 1), 0, HUGE, (0, 0)))
    (tmp_path / "z.pth").write_bytes(_zip(pkl, {"0": b"\0" * 4}))
    _refused_cheaply(tmp_path / "z.pth", "reads storage elements more than once")
    pkl = _state_dict(w=_tensor(_pid("FloatStorage", "0", 1, b"N"), 0, HUGE, (0, 0)))
    (tmp_path / "l.pth").write_bytes(_legacy(pkl, ["0"], [(1, b"\0" * 4)]))
    _refused_cheaply(tmp_path / "l.pth", "reads storage elements more than once")


def test_overlapping_view_is_refused(tmp_path):
    # (5000, 5000) over 9999 elements with strides (1, 1) reads inside the storage, 2500x over
    pkl = _state_dict(w=_tensor(_pid("FloatStorage", "0", 9999), 0, (5000, 5000), (1, 1)))
    (tmp_path / "o.pth").write_bytes(_zip(pkl, {"0": b"\0" * 4 * 9999}))
    _refused_cheaply(tmp_path / "o.pth", "reads storage elements more than once")


def test_declared_storage_size_is_checked_before_reading(tmp_path):
    n = HUGE[0] * HUGE[1]
    pkl = _state_dict(w=_tensor(_pid("FloatStorage", "0", n), 0, HUGE, (HUGE[1], 1)))
    (tmp_path / "z.pth").write_bytes(_zip(pkl, {"0": b"\0" * 4}))
    _refused_cheaply(tmp_path / "z.pth", f"has 4 bytes, expected {n} x 4")
    pkl = _state_dict(w=_tensor(_pid("FloatStorage", "0", n, b"N"), 0, HUGE, (HUGE[1], 1)))
    (tmp_path / "l.pth").write_bytes(_legacy(pkl, ["0"], [(n, b"\0" * 4)]))
    _refused_cheaply(tmp_path / "l.pth", f"file truncated in storage '0': {4 * n} bytes declared")


def test_compressed_members_are_refused_before_inflating(tmp_path):
    n = 4 << 20                                  # 16 MiB of zeros deflate to ~16 KiB
    pkl = _state_dict(w=_tensor(_pid("FloatStorage", "0", n), 0, (n,), (1,)))
    path = tmp_path / "deflated.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        info = zipfile.ZipInfo("archive/data/0")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as member:
            for _ in range(16):
                member.write(bytes(1 << 20))
    assert path.stat().st_size < 100_000
    _refused_cheaply(path, "zip member 'archive/data/0' is compressed")
    (tmp_path / "pkl.pth").write_bytes(_zip(pkl, {"0": b"\0" * 4 * n},
                                            compress=zipfile.ZIP_DEFLATED))
    _refused_cheaply(tmp_path / "pkl.pth", "zip member 'archive/data.pkl' is compressed")


def test_overlapping_zip_members_are_refused(tmp_path):
    """data/0's bytes hold data/1's local header and data: two storages from one region."""
    n, name1 = 100_000, "archive/data/1"
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr(name1, bytes(n))
        crc1 = zf.getinfo(name1).CRC
    local1 = inner.getvalue()[:30 + len(name1) + n]
    pkl = _state_dict(a=_tensor(_pid("ByteStorage", "0", len(local1)), 0, (len(local1),), (1,)),
                      b=_tensor(_pid("ByteStorage", "1", n), 0, (n,), (1,)))
    path = tmp_path / "overlap.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/data/0", local1)
        info0 = zf.getinfo("archive/data/0")
        info1 = zipfile.ZipInfo(name1)
        info1.header_offset = info0.header_offset + 30 + len(info0.filename)
        info1.CRC, info1.compress_size, info1.file_size = crc1, n, n
        zf.filelist.append(info1)
        zf.NameToInfo[name1] = info1
    with zipfile.ZipFile(path) as zf:            # a valid archive: both members read back
        assert zf.read(name1) == bytes(n) and zf.read("archive/data/0") == local1
    assert path.stat().st_size < 2 * n
    _refused_cheaply(path, "[Oo]verlap")


def test_tensors_sharing_a_storage_are_charged_to_the_budget(tmp_path):
    n = 16384                                     # 64 KiB, viewed whole by 300 tensors: 19 MiB
    tensors = {f"t{i}": _tensor(_pid("FloatStorage", "0", n), 0, (n,), (1,)) for i in range(300)}
    path = tmp_path / "shared.pth"
    path.write_bytes(_zip(_state_dict(**tensors), {"0": b"\0" * 4 * n}))
    _refused_cheaply(path, "takes the reader past")
    few = {f"t{i}": tensors[f"t{i}"] for i in range(3)}   # sharing a storage is itself fine
    path.write_bytes(_zip(_state_dict(**few), {"0": b"\0" * 4 * n}))
    assert len(tp.load_state_dict_pth(path)) == 3


def test_containers_built_by_calls_are_charged_to_the_budget(tmp_path):
    # a 5000-item list, memoised, then copied by torch.Size 10000 times: 400 MB of tuples
    items = b"](" + b"N" * 5000 + b"eq\x00"
    copies = b"]q\x01ctorch\nSize\nq\x02" + b"h\x01h\x02h\x00\x85Ra" * 10000
    (tmp_path / "size.pth").write_bytes(_zip(b"\x80\x02" + items + copies + b"."))
    _refused_cheaply(tmp_path / "size.pth", "tuple\\(\\) takes the reader past")


def test_declared_pickle_lengths_allocate_nothing(tmp_path):
    # the C unpickler would allocate these lengths before finding the bytes missing
    for op in (b"\x8e", b"\x8d", b"\x95"):       # BINBYTES8, BINUNICODE8, FRAME
        path = tmp_path / f"{op.hex()}.pth"
        path.write_bytes(_zip(b"\x80\x04" + op + struct.pack("<Q", 1 << 40) + b"abc"))
        _refused_cheaply(path, "")


# ----------------------------------------------------------------------------- still valid


def test_strict_checks_keep_torch_layouts(tmp_path):
    """Size-1 dims with any stride, empty tensors, transposes, channels-last and legacy views
    of a root storage are what torch.save writes; they still load."""
    s12 = np.arange(12, dtype="<f4")
    pid = _pid("FloatStorage", "0", 12)
    pkl = _state_dict(
        unsqueezed=_tensor(pid, 2, (1, 3, 1), (0, 1, 99)),   # stride of a size-1 dim is free
        empty=_tensor(pid, 0, (0, 3), (0, 1)),
        transposed=_tensor(pid, 0, (4, 3), (1, 4)),
        channels_last=_tensor(pid, 0, (1, 2, 3, 2), (12, 1, 4, 2)))
    path = tmp_path / "valid.pth"
    path.write_bytes(_zip(pkl, {"0": s12.tobytes()}))
    sd = tp.load_state_dict_pth(path)
    np.testing.assert_array_equal(sd["unsqueezed"], s12[2:5].reshape(1, 3, 1))
    assert sd["empty"].shape == (0, 3) and sd["empty"].dtype == np.float32
    np.testing.assert_array_equal(sd["transposed"], s12.reshape(3, 4).T)
    nhwc = s12.reshape(1, 3, 2, 2)
    np.testing.assert_array_equal(sd["channels_last"], nhwc.transpose(0, 3, 1, 2))
    view = _pid("FloatStorage", "0", 12, _tuple(_s("v"), _int(4), _int(6)))
    legacy = _legacy(_state_dict(w=_tensor(view, 1, (2, 2), (1, 2))), ["0"], [(12, s12.tobytes())])
    np.testing.assert_array_equal(tp.read_pth(legacy)["w"], [[5, 7], [6, 8]])   # root[4:10]


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_plain_containers_load_in_any_protocol(tmp_path, protocol):
    # protocols < 3 spell set and frozenset __builtin__.set / __builtin__.frozenset
    value = {"sets": [{1, 2}, frozenset({"a"})], "misc": (1.5, None, True, 2**70, "é")}
    path = tmp_path / "plain.pth"
    path.write_bytes(_zip(pickle.dumps(value, protocol)))
    assert tp.read_pth(path) == value
