"""A progress bar with steps/s and ETA for every long loop (tqdm; silent off process 0)."""

from __future__ import annotations

import sys

import jax
from tqdm.auto import tqdm


def progress(total: int, initial: int = 0, desc: str = "train", unit: str = "step", **kw):
    """A tqdm bar over `total` items starting at `initial`; shows rate and ETA.

    Disabled on processes other than 0, and when stderr is not a terminal it still prints, but
    at most every 10 s, so CI logs stay short.
    """
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=jax.process_index() != 0,
        mininterval=0.1 if interactive else 10.0,
        dynamic_ncols=True,
        **kw,
    )
