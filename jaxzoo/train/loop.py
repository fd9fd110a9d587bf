"""The training loop every launcher runs: restore-or-init, step, log, checkpoint, stop cleanly.

    result = train(config, workdir, Task(init_params, loss_fn, tx, loader))

Config keys read: `seed`, `total_steps`, `batch_size`, `log_every`, `checkpoint_every`, and
optionally `keep_checkpoints` (3), `fsdp` (False), `ema_decay` (None).

Guarantees:
  * Running again with the same workdir resumes from the newest readable checkpoint and
    replays exactly the batches and randomness of an uninterrupted run. A resumed run must have
    the config of the run it continues (`config.json`), except for the keys in `RESUMABLE`;
    config.json is written only once the run is accepted.
  * One run per workdir: a second run on a workdir in use refuses, naming the holder's pid.
  * SIGTERM / SIGINT save a checkpoint at the next step boundary; `train` then returns with
    `preempted=True` (a launcher exits 0). A second SIGINT interrupts at once.
  * A non-finite loss raises `NonFiniteLossError` naming the step and the non-finite terms; no
    checkpoint of the bad state is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import signal
import time
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np
import optax

from jaxzoo.errors import MissingFileError, UserError, WorkdirError
from jaxzoo.train import (checkpoint as checkpoint_lib, config as config_lib, mesh as mesh_lib,
                          metrics as metrics_lib)
from jaxzoo.train.progress import progress
from jaxzoo.train.state import (TrainState, abstract_state_and_shardings, create_state,
                                make_init_fn, num_params)
from jaxzoo.train.step import LossFn, make_train_step


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss (or one of its terms, or a gradient norm) became inf or nan."""


# Config keys a resumed run may change: how long to train and how often to log, save and keep,
# and anything under these prefixes (evaluation and rendering settings).
RESUMABLE = ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints")
RESUMABLE_PREFIXES = ("eval.", "video.")


@dataclasses.dataclass
class Task:
    """What a launcher gives the loop.

    init_params: `key -> params`.
    loss_fn: `(params, batch, key) -> (loss, {term: scalar})`.
    tx: the optax optimizer (its schedule counts steps).
    loader: has `batch(step) -> local batch dict`, `state(step)` and `check_state(state, step)`
      (see `jaxzoo.data.pipeline.StepIndexedLoader`).
    """

    init_params: Callable[[jax.Array], Any]
    loss_fn: LossFn
    tx: optax.GradientTransformation
    loader: Any


@dataclasses.dataclass
class TrainResult:
    state: TrainState
    step: int
    preempted: bool
    mesh: jax.sharding.Mesh


class PreemptionGuard:
    """Turns SIGTERM/SIGINT into a flag checked at step boundaries (all processes agree)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self._flag = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self._flag and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self._flag = True

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def should_stop(self) -> bool:
        if jax.process_count() == 1:
            return self._flag
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(self._flag, np.int32))
        return bool(np.any(flags))


_DIAGNOSTICS = ("grad_norm", "update_norm")


def _check_finite(step: int, metrics) -> None:
    if bool(metrics["finite"]):
        return
    host = {k: float(v) for k, v in jax.device_get(metrics).items() if k != "finite"}
    bad = sorted((k in _DIAGNOSTICS, k) for k, v in host.items() if not np.isfinite(v))
    raise NonFiniteLossError(
        f"non-finite value at step {step} in {', '.join(k for _, k in bad)} "
        f"(all metrics: {host}); stopped without writing a checkpoint of this state: lower the "
        f"learning rate or resume from the last checkpoint")


def _log_row(metrics, steps_per_s: Optional[float]) -> dict:
    row = {k: v for k, v in jax.device_get(metrics).items() if k != "finite"}
    if steps_per_s is not None:
        row["steps_per_s"] = steps_per_s
    return row


def _state_layout(config, task: Task, mesh):
    """Keys, init function, abstract state and shardings: everything derived from the config."""
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    init_fn = make_init_fn(task.init_params, task.tx, ema=config.get("ema_decay", None) is not None)
    abstract, shardings = abstract_state_and_shardings(init_fn, init_key, mesh,
                                                       fsdp=config.get("fsdp", False))
    return init_key, step_key, init_fn, abstract, shardings


def restore_state(config, workdir, task: Task, mesh: Optional[jax.sharding.Mesh] = None):
    """The newest checkpoint in `workdir` as `(step, TrainState)`, for evaluation or rendering.

    Raises MissingFileError (naming the directory) when there is no checkpoint yet.
    """
    mesh = mesh or mesh_lib.make_mesh()
    abstract = _state_layout(config, task, mesh)[3]
    directory = pathlib.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        raise MissingFileError(f"no checkpoint in {directory}: train first (same --workdir)")
    ckpt = checkpoint_lib.Checkpointer(directory)
    try:
        restored = ckpt.restore_latest(abstract)
    finally:
        ckpt.close()
    if restored is None:
        raise MissingFileError(f"no checkpoint in {directory}: train first (same --workdir)")
    return restored[0], restored[1]


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_run_config(workdir, what: str = "workdir") -> ml_collections.ConfigDict:
    """The config a run wrote to `workdir/config.json`; a MissingFileError names `what` (the
    flag or setting that gave `workdir`) when there is none."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise MissingFileError(f"{what}={str(workdir)!r}: {path} does not exist; it must be the "
                               "workdir of a finished run (its config.json and checkpoints/)")
    return ml_collections.ConfigDict(_saved_config(path))


def _saved_config(path: pathlib.Path) -> dict:
    """A run's config.json as a dict; a WorkdirError if it is damaged (not UTF-8 JSON)."""
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise WorkdirError(f"{path} is not valid JSON ({e}); move the workdir aside") from None


def check_resumable(config, workdir) -> None:
    """WorkdirError naming every key (other than RESUMABLE ones) in which `config` differs from
    the `config.json` of the run in `workdir`; nothing to check if there is none."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        return
    saved = _flat(_saved_config(path))
    ours = _flat(json.loads(config_lib.to_json(config)))
    show = lambda d, k: repr(d[k]) if k in d else "absent"  # noqa: E731
    diff = [f"{k}={show(saved, k)} (now {show(ours, k)})" for k in sorted(set(saved) | set(ours))
            if (k in saved, saved.get(k)) != (k in ours, ours.get(k))
            and k not in RESUMABLE and not k.startswith(RESUMABLE_PREFIXES)]
    if diff:
        raise WorkdirError(
            f"{workdir} holds a run with another config: {'; '.join(diff)}. Resume with the same "
            f"config (only {', '.join(RESUMABLE)} and {', '.join(p + '*' for p in RESUMABLE_PREFIXES)} "
            "may change) or use a new --workdir")


@contextlib.contextmanager
def workdir_lock(workdir):
    """Holds an exclusive lock on `workdir/.lock` (process 0 only) holding this pid; a second
    holder gets a WorkdirError naming the first one's pid. The OS drops the lock if we die."""
    if jax.process_index() != 0:
        yield
        return
    path = pathlib.Path(workdir) / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise WorkdirError(f"{workdir} is in use by another run (pid {holder}); wait for it to "
                               "finish, stop it, or use another --workdir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)


def train(config, workdir, task: Task, *, mesh: Optional[jax.sharding.Mesh] = None,
          hooks: Sequence[Callable[[int, TrainState], None]] = ()) -> TrainResult:
    """Trains `task` for `config.total_steps` steps in `workdir` (resuming if possible).

    `hooks` are called as `hook(step, state)` after every step (step = steps completed).
    """
    config_lib.validate(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir):
        return _train(config, workdir, task, mesh, hooks)


def _train(config, workdir: pathlib.Path, task: Task, mesh, hooks) -> TrainResult:
    mesh = mesh or mesh_lib.make_mesh()
    mesh_lib.check_batch_size(config.batch_size, mesh)
    ema_decay = config.get("ema_decay", None)

    init_key, step_key, init_fn, abstract, shardings = _state_layout(config, task, mesh)
    ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep=config.get("keep_checkpoints", 3))
    try:
        if ckpt.all_steps():
            check_resumable(config, workdir)
        restored = ckpt.restore_latest(abstract, set_aside_damaged=True)
    except BaseException:
        ckpt.close()
        raise
    if jax.process_index() == 0:
        (workdir / "config.json").write_text(config_lib.to_json(config) + "\n")
    if restored is None:
        start, state = 0, create_state(init_fn, init_key, shardings)
    else:
        start, state, data_state = restored
        task.loader.check_state(data_state, start)
    sharded = sum(not s.is_fully_replicated for s in jax.tree.leaves(shardings))
    print(f"[jaxzoo] {num_params(abstract.params):,} parameters on {mesh.devices.size} device(s), "
          f"{sharded} state arrays sharded; "
          + (f"resuming at step {start}" if start else "starting from scratch"), flush=True)

    step_fn = make_train_step(task.loss_fn, task.tx, shardings, ema_decay=ema_decay)
    writer = metrics_lib.MetricWriter(workdir, resume_step=start)
    total = config.total_steps
    step, preempted, pending = start, False, None
    last_time, last_step = time.perf_counter(), start

    try:
        with PreemptionGuard() as guard, progress(total, initial=start) as bar:
            while step < total:
                batch = mesh_lib.make_global_batch(task.loader.batch(step), mesh)
                state, metrics = step_fn(state, batch, step_key)
                if pending is not None:  # check the previous step while this one runs
                    _check_finite(*pending)
                step += 1
                pending = (step, metrics)
                for hook in hooks:
                    hook(step, state)
                stop = guard.should_stop()
                if step % config.log_every == 0 or step == total or stop:
                    _check_finite(*pending)
                    now = time.perf_counter()
                    rate = (step - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, step
                    writer.write(step, _log_row(metrics, rate))
                    bar.set_postfix(loss=f"{float(metrics['loss']):.4g}", refresh=False)
                if step % config.checkpoint_every == 0 or step == total or stop:
                    _check_finite(*pending)
                    ckpt.save(step, state, task.loader.state(step))
                bar.update(1)
                if stop:
                    preempted = True
                    print(f"[jaxzoo] signal received: saved step {step}, exiting", flush=True)
                    break
            if pending is not None:
                _check_finite(*pending)
    finally:
        ckpt.wait()
        ckpt.close()
        writer.close()
    return TrainResult(state=state, step=step, preempted=preempted, mesh=mesh)
