"""Preparing and opening TFDS datasets without TensorFlow (array_record + data sources)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib

from jaxzoo.errors import MissingFileError

DEFAULT_DATA_DIR = "~/.cache/jaxzoo/tensorflow_datasets"


def data_dir(path=None) -> pathlib.Path:
    """`path`, else `$JAXZOO_DATA_DIR`, else `~/.cache/jaxzoo/tensorflow_datasets`."""
    return pathlib.Path(path or os.environ.get("JAXZOO_DATA_DIR", DEFAULT_DATA_DIR)).expanduser()


@contextlib.contextmanager
def _file_lock(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(builder_cls, data_dir_path=None, **builder_kwargs):
    """Builds a generated dataset once (array_record), safe against concurrent processes."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()  # jaxzoo's own bars are the ones users read
    root = data_dir(data_dir_path)
    builder = builder_cls(data_dir=str(root), file_format="array_record", **builder_kwargs)
    with _file_lock(root / f".{builder.name}.lock"):
        builder.download_and_prepare()
    return builder


def data_source(name: str, split: str, data_dir_path=None):
    """Opens an already prepared TFDS dataset (array_record) as a random-access source.

    Raises a clear error naming what to do when it is not on disk: jaxzoo never downloads data at
    run time.
    """
    import tensorflow_datasets as tfds

    root = data_dir(data_dir_path)
    try:
        return tfds.data_source(name, split=split, data_dir=str(root), download=False)
    except Exception as e:
        raise MissingFileError(
            f"TFDS dataset {name!r} (split {split!r}) is not prepared in array_record format under "
            f"{root}. Prepare it on a machine with internet access with `tfds build {name} "
            f"--file_format=array_record --data_dir={root}` (or set $JAXZOO_DATA_DIR). "
            f"TFDS said: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
