"""The Python standard library's own source as a byte-level language-modelling corpus.

Every machine that runs jaxzoo has this text, so it needs no download. The corpus is the `*.py`
files under `sysconfig.get_paths()["stdlib"]`, excluding installed packages (`site-packages`,
`dist-packages`), `__pycache__`, test suites (any directory named `test`, `tests` or
`idle_test`, e.g. `test/`, `lib2to3/tests/`, `idlelib/idle_test/`, and files named `test_*.py`),
empty files, files that are not valid UTF-8, and files over 512 KiB (only `pydoc_data/topics.py`,
a generated blob, in CPython 3.11). One example per file, in path order.

Split by file, independently of which other files exist: `relpath` is in `test` when
`int(sha1(relpath).hexdigest(), 16) % 20 == 0` (about 5% of files), else `train`, where `relpath`
is the path relative to the stdlib root with '/' separators.

The content depends on the interpreter, so the builder has one config, named after the running
Python (`py3_11`): the Python that first builds it into a data directory is what that directory
holds (its full version is in the config description).

Tokens: bytes 0..255 of the UTF-8 text plus an end-of-text id `EOT = 256` after every document;
token streams are uint16 [T].
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import platform
import sys
import sysconfig
from typing import Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from jaxzoo.errors import ConfigError, MissingFileError

EOT = 256
VOCAB_SIZE = 257
MAX_FILE_BYTES = 512 * 1024
TEST_MODULUS = 20  # a file is in `test` when sha1(relpath) % TEST_MODULUS == 0
SPLITS = ("train", "test")
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})
CONFIG_NAME = f"py{sys.version_info.major}_{sys.version_info.minor}"


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, plus `eot_id = 256` to end a document."""

    vocab_size = VOCAB_SIZE
    eot_id = EOT

    def encode(self, text: str) -> np.ndarray:
        """The UTF-8 bytes of `text` as uint16 [num_bytes] (no EOT)."""
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        """Text of a 1-D sequence of ids (list or array); ids >= 256 (EOT, padding of a larger
        vocabulary) are dropped and invalid UTF-8 becomes U+FFFD."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"decode takes a 1-D sequence of ids, got shape {ids.shape}")
        if ids.size and ids.min() < 0:
            raise ValueError(f"ids must be >= 0, got {int(ids.min())}")
        return ids[ids < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def encode_documents(self, texts: Iterable[str]) -> np.ndarray:
        """uint16 [sum(num_bytes + 1)]: each text's bytes followed by EOT, concatenated."""
        return _join_documents([t.encode("utf-8") for t in texts])


def _join_documents(docs: Sequence[bytes]) -> np.ndarray:
    out = np.empty(sum(len(d) + 1 for d in docs), np.uint16)
    pos = 0
    for d in docs:
        out[pos:pos + len(d)] = np.frombuffer(d, np.uint8)
        out[pos + len(d)] = EOT
        pos += len(d) + 1
    return out


def stdlib_root() -> pathlib.Path:
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def split_of(relpath: str) -> str:
    """'test' for about 1 file in TEST_MODULUS (by the sha1 of its '/'-separated path), else 'train'."""
    digest = hashlib.sha1(relpath.encode("utf-8")).hexdigest()
    return "test" if int(digest, 16) % TEST_MODULUS == 0 else "train"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; allowed: {', '.join(map(repr, SPLITS))}")


def stdlib_files(root=None) -> list[tuple[str, str]]:
    """`(relpath, text)` of every selected source file under `root` (default: this Python's
    stdlib), sorted by relpath; see the module docstring for the rules."""
    root = pathlib.Path(root) if root is not None else stdlib_root()
    if not root.is_dir():
        raise MissingFileError(f"standard library directory {root} does not exist")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in EXCLUDED_DIRS]  # prune: never descend
        for name in filenames:
            if not name.endswith(".py") or name.startswith("test_"):
                continue
            path = pathlib.Path(dirpath, name)
            if not path.is_file() or not 0 < path.stat().st_size <= MAX_FILE_BYTES:
                continue
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append((path.relative_to(root).as_posix(), text))
    return sorted(out)


class PythonStdlib(tfds.core.GeneratorBasedBuilder):
    """This Python's standard library source, one example per file, split by sha1 of the path.

    Features: `path` (relative to the stdlib root, '/' separators), `text`, `num_bytes` (UTF-8
    bytes of `text`). Examples are stored in path order (shuffling disabled).

    Args:
      root: the directory to read instead of this Python's stdlib (tests use a small fake one).
        The prepared data does not record it, so give such a build its own `data_dir`.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(
        name=CONFIG_NAME,
        description=f"Built from the standard library of {sys.implementation.name} "
                    f"{platform.python_version()}; another {CONFIG_NAME[2:].replace('_', '.')}.x "
                    f"reading the same data directory gets this build.")]

    def __init__(self, *, root=None, **kwargs):
        self._root = root
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "path": tfds.features.Text(),
                "text": tfds.features.Text(),
                "num_bytes": tfds.features.Scalar(dtype=np.int64),
            }),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        files = stdlib_files(self._root)
        return {s: self._generate_examples([f for f in files if split_of(f[0]) == s]) for s in SPLITS}

    def _generate_examples(self, files):
        for relpath, text in files:
            yield relpath, {"path": relpath, "text": text, "num_bytes": len(text.encode("utf-8"))}


@functools.lru_cache(maxsize=4)
def _prepared(data_dir_path: str) -> PythonStdlib:
    from jaxzoo.data import tfds_utils

    return tfds_utils.prepare(PythonStdlib, data_dir_path)


def load_documents(split: str, data_dir=None) -> list[tuple[str, bytes]]:
    """`(path, utf-8 bytes)` of every file of `split`, sorted by path (builds the dataset on first
    use: seconds, no download)."""
    from jaxzoo.data import tfds_utils

    _check_split(split)
    source = _prepared(str(tfds_utils.data_dir(data_dir))).as_data_source(split=split)
    records = source.__getitems__(range(len(source)))
    docs = [(_as_str(r["path"]), _as_bytes(r["text"])) for r in records]
    return sorted(docs)


def _as_bytes(x) -> bytes:
    return x.encode("utf-8") if isinstance(x, str) else bytes(x)


def _as_str(x) -> str:
    return x if isinstance(x, str) else bytes(x).decode("utf-8")


def select_documents(num_bytes: Sequence[int], max_bytes: int) -> np.ndarray:
    """Sorted indices of a deterministic subset of documents whose stream (bytes + one EOT each)
    has at most `max_bytes` tokens: documents are visited in a fixed random order (seed 0) and
    each is kept if it still fits, so the subset spans the whole library, not its first files."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes={max_bytes} must be >= 1")
    sizes = np.asarray(num_bytes, np.int64) + 1
    kept, total = [], 0
    for i in np.random.default_rng(0).permutation(len(sizes)):
        if total + sizes[i] <= max_bytes:
            kept.append(i)
            total += sizes[i]
    return np.sort(np.asarray(kept, np.int64))


def load_tokens(split: str, data_dir=None, max_bytes: int | None = None) -> np.ndarray:
    """The uint16 [T] token stream of `split`: each document's bytes followed by EOT, in path
    order. With `max_bytes`, only the documents of `select_documents` (T <= max_bytes)."""
    docs = load_documents(split, data_dir)
    if max_bytes is not None:
        docs = [docs[i] for i in select_documents([len(d) for _, d in docs], max_bytes)]
        if not docs:
            raise ConfigError(f"max_bytes={max_bytes} is smaller than every {split!r} document "
                             f"(plus its EOT)")
    return _join_documents([d for _, d in docs])


def windows(tokens: np.ndarray, length: int, stride: int | None = None) -> np.ndarray:
    """Training windows of a token stream: [N, length + 1], row i = tokens[i*stride : i*stride +
    length + 1], for every start that fits (N = (T - length - 1) // stride + 1).

    Inputs are `w[:, :-1]`, targets `w[:, 1:]`. The default stride `length` makes consecutive
    windows share one token, so every token but the first is a target exactly once. The result
    is a read-only strided view of `tokens` (no copy; index it to get a batch).
    """
    tokens = np.asarray(tokens)
    stride = length if stride is None else stride
    if length < 1:
        raise ValueError(f"length={length} must be >= 1")
    if stride < 1:
        raise ValueError(f"stride={stride} must be >= 1")
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be a 1-D stream, got shape {tokens.shape}")
    if len(tokens) < length + 1:
        raise ConfigError(f"a stream of {len(tokens)} tokens is shorter than one window of "
                         f"length + 1 = {length + 1}")
    return np.lib.stride_tricks.sliding_window_view(tokens, length + 1)[::stride]
