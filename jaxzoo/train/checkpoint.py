"""Checkpoints: orbax `CheckpointManager` with strict, fault-tolerant restore.

A checkpoint at step N holds two items: `state` (the `TrainState`, any sharding) and `data` (a
small JSON dict: the data iterator position and anything else the loop needs to continue exactly).
Orbax writes each step to a temporary directory and renames it when complete, so a crash never
leaves a half-written step that looks finished.

Restore is strict: the saved tree must have exactly the target's keys and shapes, and a mismatch
raises `CheckpointMismatchError` listing missing, unexpected and wrongly shaped keys. A step whose
files are damaged (truncated or missing) is skipped with a warning and the previous step is tried:
a bad disk write costs the steps since the previous checkpoint, never the run. Restoring onto a
different device count works because the target shardings come from the abstract state.
"""

from __future__ import annotations

import logging
import pathlib
import warnings
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """The checkpoint's tree does not match the state it is restored into."""


class CheckpointDamagedWarning(UserWarning):
    """A checkpoint step could not be read; an earlier step is used."""


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
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": ocp.JsonCheckpointHandler()},
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, data: dict[str, Any]) -> None:
        """Saves (asynchronously; `wait` or the next save/close completes it)."""
        if step in self._manager.all_steps():
            return
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                    data=ocp.args.JsonSave(data)),
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

    def restore_latest(self, abstract_state):
        """Restores the newest readable step onto `abstract_state`'s shapes and shardings.

        Returns:
          `(step, state, data)`, or None when the directory holds no checkpoint.

        Raises:
          CheckpointMismatchError: the newest readable step has other keys or shapes.
          RuntimeError: there are checkpoints but none of them can be read.
        """
        steps = sorted(self._manager.all_steps(), reverse=True)
        errors = []
        for step in steps:
            try:
                self._check_structure(step, abstract_state)
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                            data=ocp.args.JsonRestore()),
                )
            except CheckpointMismatchError:
                raise
            except Exception as e:  # orbax/tensorstore raise many types for bad files
                errors.append(f"step {step}: {type(e).__name__}: {e}")
                warnings.warn(
                    f"checkpoint at step {step} in {self.directory} is damaged and is skipped "
                    f"({type(e).__name__}: {str(e)[:300]}); trying an earlier step",
                    CheckpointDamagedWarning,
                    stacklevel=2,
                )
                continue
            return step, restored["state"], dict(restored["data"])
        if steps:
            raise RuntimeError(
                f"none of the checkpoints {steps} in {self.directory} could be read; move the "
                f"directory aside to start afresh. Errors: " + " | ".join(errors)
            )
        return None


def _as_plain_tree(abstract_state):
    """The state as nested dicts, the form orbax's metadata tree takes."""
    from flax import serialization

    return serialization.to_state_dict(abstract_state)
