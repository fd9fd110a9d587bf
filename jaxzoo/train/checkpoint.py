"""Checkpoints: orbax `CheckpointManager` with strict, verified, fault-tolerant restore.

A checkpoint at step N holds three items: `state` (the `TrainState`, any sharding), `data` (a
small JSON dict: the data iterator position and anything else the loop needs to continue
exactly) and `checksums` (JSON: one `tree_checksums` value per state array, computed on device
before the save). Orbax writes each step to a temporary directory and renames it when complete,
so a crash never leaves a half-written step that looks finished.

Restore is strict: the saved tree must have exactly the target's keys and shapes, and a mismatch
raises `CheckpointMismatchError` listing missing, unexpected and wrongly shaped keys. A step
whose files are damaged (truncated or missing) or whose arrays do not match their checksums (a
flipped bit) is skipped with one warning line and the previous step is tried: a bad disk write
costs the steps since the previous checkpoint, never the run. With `set_aside_damaged` (the
training loop) the damaged steps newer than the restored one are moved to `<directory>.damaged/`
so that the resumed run writes those steps afresh. Restoring onto a different device count works
because the target shardings come from the abstract state. The tracebacks orbax's event-loop
threads print after a failed read ('Event loop is closed') are dropped; the warning says what
failed.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import time
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxzoo.errors import UserError


class CheckpointMismatchError(UserError, ValueError):
    """The checkpoint's tree does not match the state it is restored into."""


class CheckpointsUnreadableError(UserError, RuntimeError):
    """There are checkpoints, but none of them can be read."""


class CheckpointDamagedWarning(UserWarning):
    """A checkpoint step could not be read; an earlier step is used."""


def _as_words(x):
    """The bits of `x` as uint32 words (bool, 8-, 16-, 32- and 64-bit dtypes)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = x.dtype.itemsize
    if width == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[width]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _checksums(leaves):
    """sum_i w_i * (2 i + 1) mod 2^32 over each leaf's words w. Odd multipliers are invertible
    mod 2^32, so any single flipped bit (a change of 2^k, k < 32) changes the sum, and so does
    swapping two unequal words. Integer sums are exact, so the value does not depend on the
    sharding or the order of reduction."""
    out = []
    for leaf in leaves:
        words = _as_words(leaf).reshape(-1)
        weights = 2 * jnp.arange(words.size, dtype=jnp.uint32) + 1
        out.append(jnp.sum(words * weights, dtype=jnp.uint32))
    return out


def tree_checksums(tree) -> dict[str, int]:
    """`{key path: checksum}` of every array of `tree` (see `_checksums`), computed on device."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    values = jax.device_get(_checksums([v for _, v in flat]))
    return {_path_str(p): int(v) for (p, _), v in zip(flat, values)}


def _ignore_closed_event_loop_noise() -> None:
    """Drops the 'Event loop is closed' RuntimeErrors that orbax's event-loop threads report as
    unraisable (one traceback each, many per failed read, some at exit) and passes every other
    unraisable exception to the hook installed before. Idempotent."""
    previous = sys.unraisablehook
    if getattr(previous, "_jaxzoo_filter", False):
        return

    def hook(unraisable):
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook._jaxzoo_filter = True
    sys.unraisablehook = hook


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _flat_shapes(tree) -> dict[str, Optional[tuple]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {_path_str(p): (tuple(v.shape) if hasattr(v, "shape") else None) for p, v in flat}


def tree_mismatch(saved, target) -> Optional[str]:
    """Describes how two trees differ in keys and shapes, or None if they agree."""
    saved, target = _flat_shapes(saved), _flat_shapes(target)
    missing = sorted(set(target) - set(saved))
    unexpected = sorted(set(saved) - set(target))
    shaped = sorted(
        f"{k}: checkpoint {saved[k]} vs expected {target[k]}"
        for k in set(saved) & set(target)
        if saved[k] is not None and target[k] is not None and saved[k] != target[k]
    )
    if not (missing or unexpected or shaped):
        return None
    parts = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", shaped)):
        if items:
            parts.append(f"{title} keys ({len(items)}): " + ", ".join(items))
    return "; ".join(parts)


class Checkpointer:
    """Keep-N checkpoints of (state, data-position) under `directory`."""

    def __init__(self, directory, keep: int = 3):
        _ignore_closed_event_loop_noise()
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler(),
                           "checksums": ocp.JsonCheckpointHandler()},
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, data: dict[str, Any]) -> None:
        """Saves (asynchronously; `wait` or the next save/close completes it), with the state's
        checksums computed now, before the caller's next step can reuse its buffers."""
        if step in self._manager.all_steps():
            return
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    data=ocp.args.JsonSave(data),
                                    checksums=ocp.args.JsonSave(tree_checksums(state))),
        )

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def _check_structure(self, step: int, abstract_state) -> None:
        metadata = self._manager.item_metadata(step)["state"]
        tree = getattr(metadata, "tree", metadata)
        if tree is None:
            raise OSError(f"no metadata for the state at step {step}")
        problem = tree_mismatch(tree, _as_plain_tree(abstract_state))
        if problem:
            raise CheckpointMismatchError(
                f"checkpoint at step {step} in {self.directory} does not match the model: {problem}"
            )

    def _restore(self, step: int, abstract_state):
        """(state, data) of `step`, verified against its checksums; OSError if they differ."""
        self._check_structure(step, abstract_state)
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                    data=ocp.args.JsonRestore(),
                                    checksums=ocp.args.JsonRestore()),
        )
        expected, actual = dict(restored["checksums"]), tree_checksums(restored["state"])
        bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
        if bad:
            raise OSError(f"checksum mismatch in {len(bad)} array(s): {', '.join(bad[:5])}")
        return restored["state"], dict(restored["data"])

    def restore_latest(self, abstract_state, set_aside_damaged: bool = False):
        """Restores the newest readable step onto `abstract_state`'s shapes and shardings.

        Returns:
          `(step, state, data)`, or None when the directory holds no checkpoint.

        Raises:
          CheckpointMismatchError: the newest readable step has other keys or shapes.
          CheckpointsUnreadableError: there are checkpoints but none of them can be read.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        errors, damaged, found = [], [], None
        for step in steps:
            try:
                found = (step, *self._restore(step, abstract_state))
            except CheckpointMismatchError:
                raise
            except Exception as e:  # orbax/tensorstore raise many types for bad files
                reason = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
                errors.append(f"step {step}: {reason}")
                damaged.append(step)
                warnings.warn(f"checkpoint at step {step} in {self.directory} is damaged and is "
                              f"skipped ({reason})", CheckpointDamagedWarning, stacklevel=2)
                continue
            break
        if found is not None and damaged and set_aside_damaged:
            self._set_aside(damaged)
        if found is None and steps:
            raise CheckpointsUnreadableError(
                f"none of the checkpoints {steps} in {self.directory} could be read; move the "
                f"directory aside to start afresh. Errors: " + " | ".join(errors))
        return found

    def _set_aside(self, steps) -> None:
        """Moves damaged step directories to `<directory>.damaged/<step>-<time>` (process 0) so
        that the run writes those steps again; nothing is deleted."""
        if jax.process_index() == 0:
            aside = self.directory.parent / f"{self.directory.name}.damaged"
            aside.mkdir(exist_ok=True)
            for step in steps:
                source = self.directory / str(step)
                if source.exists():
                    shutil.move(str(source), str(aside / f"{step}-{int(time.time())}"))
            print(f"[jaxzoo] moved damaged checkpoint step(s) {sorted(steps)} to {aside}", flush=True)
        self._manager.reload()


def _as_plain_tree(abstract_state):
    """The state as nested dicts, the form orbax's metadata tree takes."""
    from flax import serialization

    return serialization.to_state_dict(abstract_state)
