"""Step-indexed, deterministic, per-process batching.

The batch for step `s` is a pure function of `(seed, s)`: the examples of epoch `e` are visited
in the order `permutation(seed, e)`, and the global batch for step `s` is the slice
`[s * B, (s + 1) * B)` of the concatenation of all epochs. Resuming at step `s` therefore sees
exactly the batches an uninterrupted run would have, with no iterator state beyond `s` itself.
Process `p` of `P` takes rows `[p * B/P, (p + 1) * B/P)` of every global batch, so each process
reads only its own shard, and the global batch is the same for any process count.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import numpy as np

from jaxzoo.errors import WorkdirError


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    # Cached: consecutive steps share an epoch, and a permutation of many examples (e.g. the
    # 640k rays of a NeRF scene) costs milliseconds to draw.
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    perm.flags.writeable = False
    return perm


def global_batch_indices(step: int, batch_size: int, num_examples: int, seed: int) -> np.ndarray:
    """Dataset indices of the global batch of step `step` ([batch_size] int64)."""
    start = step * batch_size
    positions = np.arange(start, start + batch_size, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        sel = epochs == epoch
        out[sel] = epoch_permutation(seed, int(epoch), num_examples)[offsets[sel]]
    return out


def to_arrays(source: Sequence[Mapping[str, Any]], keys: Optional[Sequence[str]] = None) -> dict[str, np.ndarray]:
    """Reads a random-access source (e.g. a TFDS data source) fully into stacked NumPy arrays."""
    records = source.__getitems__(range(len(source))) if hasattr(source, "__getitems__") else [
        source[i] for i in range(len(source))]
    keys = keys or list(records[0].keys())
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in keys}


class StepIndexedLoader:
    """Batches of a dataset by step.

    Args:
      data: either an in-memory dataset, `{name: [num_examples, ...]}`, or a random-access
        source of example dicts (e.g. a TFDS data source: `len()` and `__getitems__` or
        `__getitem__`), from which each process reads only the rows of its own shard.
      batch_size: the GLOBAL batch size (over all processes).
      seed: shuffling seed.
      transform: optional `fn(batch_dict, rng) -> batch_dict` applied per local batch, with an
        `np.random.Generator` seeded by `(seed, step, process)` (e.g. dynamic binarisation).
      process_index, process_count: this process's shard (default: from JAX).
      keys: with a source, the features to keep (default: all).
    """

    def __init__(self, data, batch_size: int, seed: int = 0,
                 transform: Optional[Callable[[dict, np.random.Generator], dict]] = None,
                 process_index: Optional[int] = None, process_count: Optional[int] = None,
                 keys: Optional[Sequence[str]] = None):
        if isinstance(data, Mapping):
            sizes = {k: len(v) for k, v in data.items()}
            if len(set(sizes.values())) != 1:
                raise ValueError(f"arrays have different lengths: {sizes}")
            self.arrays, self.source = dict(data), None
            self.num_examples = next(iter(sizes.values()))
        else:
            self.arrays, self.source = None, data
            self.num_examples = len(data)
        if self.num_examples == 0:
            raise ValueError("the dataset is empty")
        self.keys = keys
        self.batch_size = batch_size
        self.seed = seed
        self.transform = transform
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if batch_size % self.process_count:
            raise ValueError(
                f"batch_size={batch_size} must be divisible by the process count {self.process_count}")
        self.local_batch_size = batch_size // self.process_count

    def _read(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        if self.arrays is not None:
            return {k: v[idx] for k, v in self.arrays.items()}
        getitems = getattr(self.source, "__getitems__", None)
        records = getitems(idx.tolist()) if getitems else [self.source[int(i)] for i in idx]
        keys = self.keys or list(records[0].keys())
        return {k: np.stack([np.asarray(r[k]) for r in records]) for k in keys}

    def batch(self, step: int) -> dict[str, np.ndarray]:
        """This process's rows of the global batch of `step`."""
        idx = global_batch_indices(step, self.batch_size, self.num_examples, self.seed)
        lo = self.process_index * self.local_batch_size
        out = self._read(idx[lo:lo + self.local_batch_size])
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, step, self.process_index, 1])
            out = self.transform(out, rng)
        return out

    def state(self, step: int) -> dict[str, int]:
        """The iterator position, as saved in checkpoints."""
        return {"next_step": int(step), "seed": int(self.seed), "batch_size": int(self.batch_size),
                "num_examples": int(self.num_examples)}

    def check_state(self, state: Mapping[str, int], step: int) -> None:
        """Raises if a checkpoint's data position is not where this loader would continue."""
        expected = self.state(step)
        diff = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
        if diff:
            raise WorkdirError(
                "the checkpoint's data position does not match this run "
                f"(checkpoint vs now: {diff}); resuming would not replay the same batches")
