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
Tensors come back as NumPy arrays with the file's dtype, shape, strides and offset applied.

Security guarantee: whatever a file holds, reading it imports nothing and calls nothing but
this module's stand-ins for torch's storage classes, tensor and parameter rebuild functions and
torch.Size, and OrderedDict, set and frozenset. Every pickle of both formats (zip: data.pkl;
legacy: magic number, protocol, system info, object, storage keys) goes through one restricted
unpickler, which also refuses the opcodes that reach objects without a global (EXT*, NEWOBJ*,
buffers) and BUILD on anything but a state dict. Memory stays within a small multiple of the
file's size: declared storage sizes are checked against the file before reading, compressed
zip members are refused, a tensor must read each storage element at most once (no stride-0
or overlapping views) and stay inside it, and every copy a pickle can ask for (tensors,
containers built by calls) is charged to a budget of _BUDGET_FACTOR x the file's size.
A malformed or hostile file raises ValueError naming it.
"""

from __future__ import annotations

import collections
import functools
import io
import math
import os
import pickle
import pickletools
import reprlib
import struct
import zipfile
import zlib
from typing import Any, Mapping

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
_ALIGN = 64
# Bytes a file may make the reader allocate beyond its own: tensors copied out of storages and
# containers built by calls. A state dict needs ~1x (more only for tensors sharing a storage);
# the floor covers small files' containers.
_BUDGET_FACTOR, _BUDGET_FLOOR = 4, 1 << 20
_ITEM_BYTES = 64  # charged per container item: a slot plus a small object


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


class _Budget:
    """What the file may still make the reader allocate, in bytes (see _BUDGET_FACTOR)."""

    def __init__(self, file_size: int):
        self.limit = self.left = _BUDGET_FACTOR * file_size + _BUDGET_FLOOR

    def charge(self, nbytes: int, what: str):
        self.left -= nbytes
        if self.left < 0:
            raise ValueError(f"{what} takes the reader past {self.limit} bytes, "
                             f"{_BUDGET_FACTOR}x the file's size: more memory than it holds")


def _count(value, what: str) -> int:
    """A size, stride, offset or element count from the file: a non-negative int64."""
    if type(value) is not int or not 0 <= value < 1 << 63:
        raise ValueError(f"{what} must be a non-negative int64, not {reprlib.repr(value)}")
    return value


def _rebuild_tensor(budget: _Budget, storage, offset, size, stride, *_unused):
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a storage record")
    if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list))
            and len(size) == len(stride)):
        raise ValueError(f"tensor size {reprlib.repr(size)} and stride {reprlib.repr(stride)} "
                         "are not sequences of one length")
    offset = _count(offset, "tensor offset")
    size = tuple(_count(n, "tensor size") for n in size)
    stride = tuple(_count(s, "tensor stride") for s in stride)
    if 0 not in size:
        # Each dimension must step past all that the smaller strides reach, so the view reads
        # every element at most once and is never larger than its storage (a stride-0 view of
        # 4 bytes could otherwise declare gigabytes).
        reach = 0
        for s, n in sorted((s, n) for n, s in zip(size, stride) if n > 1):
            if s <= reach:
                raise ValueError(f"tensor (size {size}, stride {stride}) reads storage elements "
                                 "more than once (stride 0 or overlapping dimensions)")
            reach += (n - 1) * s
        if offset + reach >= storage.numel:
            raise ValueError(f"tensor (offset {offset}, size {size}, stride {stride}) does not "
                             f"fit its storage of {storage.numel} elements")
    if (a := storage.array) is None:  # legacy pass 1
        return None
    dtype = a.dtype.newbyteorder("=")
    budget.charge(math.prod(size) * dtype.itemsize, f"tensor of size {size}")
    if 0 in size:
        return np.zeros(size, dtype)
    view = np.lib.stride_tricks.as_strided(a[offset:], size, [s * a.itemsize for s in stride])
    return np.array(view, dtype=dtype)


_CONTAINERS = {("collections", "OrderedDict"): collections.OrderedDict, ("torch", "Size"): tuple,
               ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
               # pickle protocols < 3 (torch.save's 2) spell builtins the Python 2 way
               ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset}
_REBUILDS = {"_rebuild_tensor_v2": _rebuild_tensor, "_rebuild_tensor": _rebuild_tensor,
             # a Parameter is read as its tensor
             "_rebuild_parameter": lambda _budget, data, *_: data,
             "_rebuild_parameter_with_state": lambda _budget, data, *_: data}  # in torch._utils
# Opcodes torch.save never writes that reach objects without find_class: copyreg's process-wide
# extension cache, cls.__new__ of whatever is on the stack, out-of-band buffers, and
# BYTEARRAY8, which allocates the length it reads before reading the bytes.
_REFUSED_OPCODES = (pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.NEWOBJ, pickle.NEWOBJ_EX,
                    pickle.NEXT_BUFFER, pickle.READONLY_BUFFER, pickle.BYTEARRAY8)


class _Opcodes(dict):
    """pickle's opcode table less _REFUSED_OPCODES: a missing opcode is refused by name."""

    def __missing__(self, code):
        op = pickletools.code2op.get(chr(code))
        raise ValueError(f"refusing pickle opcode {op.name}: torch.save does not write it"
                         if op else f"invalid pickle opcode {bytes([code])!r}")


class _Unpickler(pickle._Unpickler):
    """The unpickler of every pickle read here: globals, persistent ids and BUILD restricted as
    the module docstring says. pickle's pure-Python unpickler, because its opcode table can be
    narrowed, and because the C one allocates a length read from the file (BINBYTES8 & co)
    before it knows the file holds that many bytes. load_storage(storage_type, key, numel,
    view_metadata) resolves persistent ids; without it, they are refused (header pickles)."""

    dispatch = _Opcodes((code, load) for code, load in pickle._Unpickler.dispatch.items()
                        if bytes([code]) not in _REFUSED_OPCODES)

    def __init__(self, file, budget: _Budget, load_storage=None):
        super().__init__(file, encoding="utf-8")
        self._budget, self._load_storage = budget, load_storage

    def find_class(self, module, name):
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _CONTAINERS:
            return functools.partial(self._container, _CONTAINERS[(module, name)])
        if module == "torch._utils" and name in _REBUILDS:
            return functools.partial(_REBUILDS[name], self._budget)
        raise ValueError(f"refusing to unpickle global {module}.{name}: only tensors, storages "
                         "and plain containers are supported")

    def _container(self, kind, *args):
        # A call is how a pickle copies what it has already built, as often as it likes.
        self._budget.charge(_ITEM_BYTES * sum(len(a) for a in args), f"{kind.__name__}()")
        return kind(*args)

    def persistent_load(self, pid):
        if not (self._load_storage and type(pid) is tuple and len(pid) in (5, 6)
                and pid[0] in ("storage", b"storage")):
            raise ValueError(f"unknown persistent id {reprlib.repr(pid)}")
        storage_type, key, location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise ValueError(f"storage type {reprlib.repr(storage_type)} is not a torch class")
        if type(key) not in (str, int) or not isinstance(location, str):
            raise ValueError(f"storage key {reprlib.repr(key)} or location "
                             f"{reprlib.repr(location)} is not a string")
        return self._load_storage(storage_type, str(key), _count(numel, "storage size"),
                                  pid[5] if len(pid) == 6 else None)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        # torch.save's one BUILD gives a state dict its `_metadata`; setting attributes of
        # anything else (find_class's functions, arrays) could change what later opcodes do.
        if not (type(inst) is collections.OrderedDict and type(state) is dict
                and all(type(k) is str for k in state)):
            raise ValueError(f"refusing BUILD of a {type(inst).__name__} from a "
                             f"{type(state).__name__}: only a state dict's attributes are set")
        self._budget.charge(_ITEM_BYTES * len(state), "BUILD")
        inst.__dict__.update(state)

    dispatch[pickle.BUILD[0]] = load_build


def _read_zip(data: bytes, budget: _Budget):
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        members = set(names)
        pkl = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ValueError("not a torch.save zip archive (no single <name>/data.pkl): "
                             f"{names[:8]}")
        prefix = pkl[0][: -len("data.pkl")]
        unread = len(data)  # torch.save's members do not overlap: together they fit the file

        def read(name):
            nonlocal unread
            info = zf.getinfo(name)
            # A deflated member is inflated whole before its size can be checked; torch.save
            # only writes stored ones, whose bytes are in the file as they are.
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"zip member {name!r} is compressed (method "
                                 f"{info.compress_type}); torch.save stores members as they are")
            if info.compress_size != info.file_size or info.file_size > unread:
                raise ValueError(f"zip member {name!r} of {info.file_size} bytes overlaps "
                                 "others or exceeds the archive")
            unread -= info.file_size
            return zf.read(name)

        byteorder = b"little"
        if prefix + "byteorder" in members:
            byteorder = read(prefix + "byteorder")
        if byteorder not in (b"little", b"big"):
            raise ValueError(f"unknown byteorder record {byteorder[:16]!r}")
        cache: dict[str, _Storage] = {}

        def load_storage(storage_type, key, numel, view):
            if view is not None:
                raise ValueError("legacy storage view in a zip archive's persistent id")
            if key not in cache:
                name = f"{prefix}data/{key}"
                if name not in members:
                    raise ValueError(f"storage record {name!r} missing from the archive")
                dtype = storage_type.dtype.newbyteorder("<" if byteorder == b"little" else ">")
                nbytes = zf.getinfo(name).file_size
                if nbytes != numel * dtype.itemsize:  # before reading: numel is the file's word
                    raise ValueError(f"storage {name!r} has {nbytes} bytes, expected "
                                     f"{numel} x {dtype.itemsize}")
                cache[key] = _Storage(dtype, numel, np.frombuffer(read(name), dtype))
            return cache[key]

        return _Unpickler(io.BytesIO(read(pkl[0])), budget, load_storage).load()


def _read_legacy(data: bytes, budget: _Budget):
    f = io.BytesIO(data)

    def header():  # no persistent ids: only the object holds storages
        return _Unpickler(f, budget).load()

    try:
        magic = header()
    except Exception as e:  # noqa: BLE001  (any failure here means "not this format")
        raise ValueError(f"not a PyTorch file (neither zip nor legacy pickle format): {e}") from e
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise ValueError("not a PyTorch file (bad magic number); tar-era files are unsupported")
    protocol = header()
    if type(protocol) is not int or protocol != LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy protocol version {reprlib.repr(protocol)}")
    if type(header()) is not dict:
        raise ValueError("malformed system info record (not a dict)")
    start = f.tell()
    roots: dict[str, _Storage] = {}

    def load_storage(storage_type, key, numel, view):
        root = roots.setdefault(key, _Storage(storage_type.dtype.newbyteorder("<"), numel))
        if view is None:
            return root
        if not (type(view) is tuple and len(view) == 3):
            raise ValueError(f"malformed storage view {reprlib.repr(view)}")
        offset, size = _count(view[1], "storage view offset"), _count(view[2], "storage view size")
        if offset + size > root.numel:
            raise ValueError(f"storage view [{offset}:{offset + size}] exceeds storage {key!r} "
                             f"of {root.numel} elements")
        arr = None if root.array is None else root.array[offset:offset + size]
        return _Storage(root.dtype, size, arr)

    _Unpickler(f, budget, load_storage).load()  # pass 1: learn the storages, skip the object
    keys = header()
    if not (type(keys) is list and all(type(k) in (str, int) for k in keys)):
        raise ValueError(f"malformed storage key list {reprlib.repr(keys)}")
    keys = [str(k) for k in keys]
    if len(set(keys)) != len(keys) or set(keys) != set(roots):
        raise ValueError(f"storage key list {reprlib.repr(keys)} does not match the object's "
                         f"storages {reprlib.repr(sorted(roots))}")
    pos = f.tell()
    for key in keys:
        root = roots[key]
        if len(data) - pos < 8:
            raise ValueError(f"file truncated before storage {key!r}")
        (numel,) = struct.unpack_from("<q", data, pos)
        if numel != root.numel:
            raise ValueError(f"storage {key!r} holds {numel} elements, the object declares "
                             f"{root.numel}")
        pos += 8
        nbytes = numel * root.dtype.itemsize
        if nbytes > len(data) - pos:  # checked before reading: numel is the file's word
            raise ValueError(f"file truncated in storage {key!r}: {nbytes} bytes declared, "
                             f"{len(data) - pos} left")
        root.array = np.frombuffer(data, root.dtype, numel, pos)
        pos += nbytes
    f.seek(start)  # pass 2: the object again, now that every storage holds its data
    return _Unpickler(f, budget, load_storage).load()


def _name(path) -> str:
    return f"<{len(path)} bytes>" if isinstance(path, (bytes, bytearray)) else str(path)


def read_pth(path) -> Any:
    """Unpickle a `torch.save` file (zip or legacy format) with tensors as NumPy arrays.
    path: a filesystem path or the file's bytes. A malformed or hostile file raises
    ValueError naming it (see the module docstring)."""
    data = bytes(path) if isinstance(path, (bytes, bytearray)) else open(path, "rb").read()
    budget = _Budget(len(data))
    try:
        return _read_zip(data, budget) if data[:4] == b"PK\x03\x04" else _read_legacy(data, budget)
    except ValueError as e:
        raise ValueError(f"{_name(path)}: {e}") from e
    except Exception as e:  # noqa: BLE001  (damage can surface anywhere in zipfile or pickle)
        raise ValueError(f"{_name(path)}: not a readable PyTorch file "
                         f"({type(e).__name__}: {e})") from e


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
            raise ValueError(f"{_name(path)}: param_key={param_key!r} not in the file; "
                             f"top-level keys: {list(obj)}")
    if not isinstance(obj, Mapping):
        raise ValueError(f"{_name(path)}: file holds a {type(obj).__name__}, not a state dict")
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f"{_name(path)}: not a flat state dict: entries that are not tensors: "
                         f"{bad[:10]}")
    out = dict(obj)
    if out and all(isinstance(k, str) and k.startswith("module.") for k in out):
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
