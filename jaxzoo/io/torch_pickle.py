"""Read and write PyTorch `.pth` files (`torch.save` of state dicts) without torch installed.

File formats (as written by `torch.save`, torch/serialization.py):
  zip (torch >= 1.6): a ZIP_STORED archive whose entries share one top folder `<name>/`
    (`archive/` for buffers, the file stem for paths): `data.pkl` (pickle protocol 2),
    `byteorder`, one raw little-endian record `data/<key>` per storage (64-byte aligned via
    an 'FB' extra field), `version` and `.data/serialization_id`. A tensor pickles as
    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`
    and its storage as the persistent id ('storage', torch.FloatStorage | ..., key,
    location, numel); numel counts bytes for torch.UntypedStorage.
  legacy (files saved by torch 0.4 - 1.5, e.g. 2018-era releases): consecutive pickles: magic
    number, protocol version 1001, system info, the object (persistent ids ('storage', type,
    key, location, numel, view_metadata)), the list of storage keys; then per key an int64
    element count and the raw bytes.
Only tensors, storages and plain containers are unpickled: any other global is refused, so a
file cannot make the reader import or call anything else. Tensors come back as NumPy arrays with the file's
dtype, shape, strides and offset applied.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
from typing import Any, Callable, Mapping

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_ALIGN = 64


def _bfloat16():
    import ml_dtypes  # installed with jax

    return np.dtype(ml_dtypes.bfloat16)


_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": None,
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "ComplexFloatStorage": "c8",
    "ComplexDoubleStorage": "c16", "UntypedStorage": "u1",
}


def _storage_dtype(name: str) -> np.dtype:
    if name == "BFloat16Storage":
        return _bfloat16()
    return np.dtype(_STORAGE_DTYPES[name])


class _StorageType:
    def __init__(self, name):
        self.name, self.dtype = name, _storage_dtype(name)


class _Storage:
    """A storage's elements as a 1-D array (None until the data are read: legacy pass 1)."""

    def __init__(self, dtype, numel, array=None):
        self.dtype, self.numel, self.array = dtype, numel, array


def _rebuild_tensor(storage, offset, size, stride, *_unused):
    if storage.array is None:
        return None
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride):
        raise ValueError(f"tensor size {size} and stride {stride} differ in length")
    if any(s == 0 for s in size):
        return np.zeros(size, storage.array.dtype.newbyteorder("="))
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1
    if offset < 0 or min(stride, default=0) < 0 or extent > storage.array.size:
        raise ValueError(f"tensor (offset {offset}, size {size}, stride {stride}) does not fit "
                         f"its storage of {storage.array.size} elements")
    a = storage.array
    view = np.lib.stride_tricks.as_strided(a[offset:], size, [s * a.itemsize for s in stride])
    return np.array(view, dtype=a.dtype.newbyteorder("="))


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
    ("torch._utils", "_rebuild_parameter_with_state"): lambda data, *_: data,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_storage: Callable):
        super().__init__(file, encoding="utf-8")
        self._load_storage = load_storage

    def find_class(self, module, name):
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        raise pickle.UnpicklingError(
            f"refusing to unpickle global {module}.{name}: only tensors, storages and plain "
            "containers are supported")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return self._load_storage(*pid[1:])


def _read_zip(data: bytes):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError("not a torch.save zip archive (no single <name>/data.pkl): "
                             f"{names[:8]}")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode()
        if byteorder not in ("little", "big"):
            raise ValueError(f"unknown byteorder record {byteorder!r}")
        cache: dict[str, _Storage] = {}

        def load_storage(storage_type, key, location, numel):
            if key not in cache:
                name = f"{prefix}data/{key}"
                if name not in names:
                    raise ValueError(f"storage record {name!r} missing from the archive")
                dtype = storage_type.dtype.newbyteorder("<" if byteorder == "little" else ">")
                raw = zf.read(name)
                if len(raw) != numel * dtype.itemsize:
                    raise ValueError(f"storage {name!r} has {len(raw)} bytes, expected "
                                     f"{numel} x {dtype.itemsize}")
                cache[key] = _Storage(dtype, numel, np.frombuffer(raw, dtype))
            return cache[key]

        return _Unpickler(io.BytesIO(zf.read(pkl[0])), load_storage).load()


def _read_legacy(data: bytes):
    f = io.BytesIO(data)
    try:
        magic = pickle.load(f)
    except Exception as e:  # noqa: BLE001  (any failure here means "not this format")
        raise ValueError("not a PyTorch file (neither zip nor legacy pickle format)") from e
    if magic != LEGACY_MAGIC:
        raise ValueError("not a PyTorch file (bad magic number); tar-era files are unsupported")
    if pickle.load(f) != LEGACY_PROTOCOL:
        raise ValueError("unsupported legacy protocol version")
    pickle.load(f)  # system info
    start = f.tell()
    roots: dict[str, _Storage] = {}

    def load_storage(storage_type, key, location, numel, view=None):
        root = roots.setdefault(str(key), _Storage(storage_type.dtype, numel))
        if view is None:
            return root
        _, offset, size = view
        arr = None if root.array is None else root.array[offset:offset + size]
        return _Storage(root.dtype, size, arr)

    _Unpickler(f, load_storage).load()  # pass 1: learn the storages, skip the object
    end = f.tell()
    for key in pickle.load(f):
        root = roots[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * root.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise ValueError(f"file truncated in storage {key!r}")
        root.numel, root.array = numel, np.frombuffer(raw, root.dtype.newbyteorder("<"))
    # pass 2: the object again, now that every storage holds its data
    return _Unpickler(io.BytesIO(data[start:end]), load_storage).load()


def read_pth(path) -> Any:
    """Unpickle a `torch.save` file (zip or legacy format) with tensors as NumPy arrays.
    path: a filesystem path or the file's bytes."""
    data = bytes(path) if isinstance(path, (bytes, bytearray)) else open(path, "rb").read()
    return _read_zip(data) if data[:4] == b"PK\x03\x04" else _read_legacy(data)


def load_state_dict_pth(path, param_key: str | None = "auto") -> dict[str, np.ndarray]:
    """A flat {name: array} state dict from a `.pth` file.

    Training checkpoints that wrap the weights ({"params_ema": ...} / {"params": ...} in
    BasicSR and Real-ESRGAN, {"state_dict": ...} elsewhere) are unwrapped: param_key="auto"
    tries those keys in that order, a string picks one, None keeps the top level. A
    "module." prefix on every key (nn.DataParallel) is removed.
    """
    obj = read_pth(path)
    if isinstance(obj, Mapping) and param_key is not None:
        if param_key == "auto":
            for k in ("params_ema", "params", "state_dict"):
                if isinstance(obj.get(k), Mapping):
                    obj = obj[k]
                    break
        elif param_key in obj:
            obj = obj[param_key]
        else:
            raise ValueError(f"param_key={param_key!r} not in the file; "
                             f"top-level keys: {list(obj)}")
    if not isinstance(obj, Mapping):
        raise ValueError(f"file holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"not a flat state dict: entries that are not tensors: {bad[:10]}")
    out = dict(obj)
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module."):]: v for k, v in out.items()}
    return out


# ----------------------------------------------------------------------------- writer


class _Global:
    """Stands for a torch global (written as a GLOBAL opcode; torch need not be importable)."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce requires a callable
        raise TypeError("placeholder")


_REBUILD_V2 = _Global("torch._utils", "_rebuild_tensor_v2")
_STORAGE_GLOBALS = {n: _Global("torch", n) for n in _STORAGE_DTYPES}


class _WStorage:
    def __init__(self, key, type_name, numel, legacy):
        self.key, self.type_name, self.numel, self.legacy = key, type_name, numel, legacy


class _WTensor:
    def __init__(self, storage, shape, stride):
        self.storage, self.shape, self.stride = storage, shape, stride

    def __reduce__(self):
        return (_REBUILD_V2, (self.storage, 0, self.shape, self.stride, False,
                              collections.OrderedDict()))


class _Pickler(pickle._Pickler):  # the pure-Python pickler lets `save` emit torch globals
    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, _Global):
            memo = self.memo.get(id(obj))
            if memo is not None:
                self.write(self.get(memo[0]))
                return
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
            self.memoize(obj)
            return
        super().save(obj, save_persistent_id)

    def persistent_id(self, obj):
        if isinstance(obj, _WStorage):
            pid = ("storage", _STORAGE_GLOBALS[obj.type_name], obj.key, "cpu", obj.numel)
            return pid + (None,) if obj.legacy else pid
        return None


def _storage_name(dtype: np.dtype) -> str:
    if dtype == _bfloat16():
        return "BFloat16Storage"
    for name, code in _STORAGE_DTYPES.items():
        if code is not None and name != "UntypedStorage" and np.dtype(code) == dtype:
            return name
    raise ValueError(f"dtype {dtype} has no torch storage type")


def _dumps(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _aligned_record(zf: zipfile.ZipFile, name: str, payload: bytes):
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    pad = (-(zf.fp.tell() + 30 + len(name.encode()) + 4)) % _ALIGN
    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad  # torch's alignment field
    zf.writestr(info, payload)


def save_state_dict_pth(path, state_dict: Mapping[str, Any], *, legacy: bool = False):
    """Write {name: array} as `torch.save(OrderedDict of tensors)` would, without torch.

    Values may also be nested mappings of arrays (e.g. {"params_ema": {...}}). Arrays are
    stored C-contiguous and little-endian, one storage each, keys in order. `legacy=True`
    writes the pre-1.6 (non-zip) format instead. Returns `path`.
    """
    arrays: list[np.ndarray] = []

    def tensorize(obj):
        if isinstance(obj, Mapping):
            return collections.OrderedDict((k, tensorize(v)) for k, v in obj.items())
        a = np.ascontiguousarray(obj)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        strides = tuple(s // a.itemsize for s in a.strides)
        storage = _WStorage(str(len(arrays)), _storage_name(a.dtype.newbyteorder("=")),
                            a.size, legacy)
        arrays.append(a)
        return _WTensor(storage, tuple(a.shape), strides)

    pickled = _dumps(tensorize(state_dict))
    if legacy:
        with open(path, "wb") as f:
            for header in (LEGACY_MAGIC, LEGACY_PROTOCOL,
                           dict(protocol_version=LEGACY_PROTOCOL, little_endian=True,
                                type_sizes=dict(short=2, int=4, long=8))):
                f.write(pickle.dumps(header, protocol=2))
            f.write(pickled)
            f.write(pickle.dumps([str(i) for i in range(len(arrays))], protocol=2))
            for a in arrays:
                f.write(struct.pack("<q", a.size) + a.tobytes())
        return path
    stem = os.path.splitext(os.path.basename(os.fspath(path)))[0] or "archive"
    records = [("data.pkl", pickled), ("byteorder", b"little")]
    records += [(f"data/{i}", a.tobytes()) for i, a in enumerate(arrays)]
    records.append(("version", b"3\n"))
    crc = 0
    for _, payload in records:
        crc = zlib.crc32(payload, crc)
    records.append((".data/serialization_id", f"{len(records):020d}{crc:020d}".encode()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, payload in records:
            _aligned_record(zf, f"{stem}/{name}", payload)
    return path
