"""Metric writing: JSON lines plus TensorBoard event files, from process 0 only.

`DIR/metrics.jsonl` gets one JSON object per logged step (`{"step": ..., "loss": ..., ...}`);
`DIR/tensorboard/` gets event files written by tensorboardX (no TensorFlow needed). On a
resumed run both are appended to; entries past the restored step are dropped first so a crash
between a log line and the next checkpoint never leaves duplicate steps, and a line torn by a
crash or power loss mid-write is dropped with a warning rather than breaking every later resume.
"""

from __future__ import annotations

import json
import math
import pathlib
import warnings
from typing import Any, Mapping

import jax
import numpy as np


def _scalar(v: Any):
    v = np.asarray(v)
    if v.dtype == bool:
        return bool(v)
    if np.issubdtype(v.dtype, np.integer):
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else repr(f)  # JSON has no inf/nan


class MetricWriter:
    """Writes scalars to `workdir/metrics.jsonl` and TensorBoard; a no-op off process 0."""

    def __init__(self, workdir, resume_step: int = 0, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if not self.active:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_text(errors="replace").splitlines()
        rows = _parse_rows(lines, self.path)
        kept = [l for l, row in zip(lines, rows) if row is not None and row.get("step", 0) <= step]
        if len(kept) != len(lines):
            self.path.write_text("".join(l + "\n" for l in kept))

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.active:
            return
        row = {"step": int(step), **{k: _scalar(v) for k, v in scalars.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _parse_rows(lines: list[str], path) -> list:
    """Each line as a dict, or None for a blank or torn (unparsable) line, which is warned of."""
    rows = []
    for number, line in enumerate(lines, 1):
        row = None
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                warnings.warn(f"{path}: line {number} is not valid JSON (torn by a crash?) and is "
                              "dropped", MetricsFileWarning, stacklevel=3)
            if not isinstance(row, dict):
                row = None
        rows.append(row)
    return rows


class MetricsFileWarning(UserWarning):
    """A line of metrics.jsonl could not be read."""


def read_metrics(workdir) -> list[dict]:
    """Reads back `metrics.jsonl` as a list of dicts, skipping (and warning of) torn lines."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    lines = path.read_text(errors="replace").splitlines()
    return [row for row in _parse_rows(lines, path) if row is not None]


def write_json(path, obj: Mapping[str, Any]) -> None:
    """Writes a flat JSON object atomically (process 0 only)."""
    if jax.process_index() != 0:
        return
    path = pathlib.Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({k: (_scalar(v) if np.ndim(v) == 0 and not isinstance(v, str) else v)
                               for k, v in obj.items()}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def write_eval(workdir, metrics: dict, step: int) -> dict:
    """Adds `step` to a launcher's final metrics, writes them to workdir/eval.json (see
    `write_json`) and prints their numeric scalars, rounded, on process 0. Returns `metrics`."""
    metrics["step"] = int(step)
    write_json(pathlib.Path(workdir) / "eval.json", metrics)
    if jax.process_index() == 0:
        shown = {k: round(float(v), 4) if isinstance(v, float) else v for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        print("[jaxzoo] eval:", shown, flush=True)
    return metrics

