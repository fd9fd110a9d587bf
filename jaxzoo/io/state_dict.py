"""PyTorch state dicts <-> Flax parameters: layouts, names and one strict conversion.

Flax and PyTorch store the same layers differently:
  convolution kernel   Flax HWIO [kh, kw, in, out]  <->  PyTorch OIHW weight [out, in, kh, kw]
  dense kernel         Flax [in, out]               <->  PyTorch Linear weight [out, in]
  LayerNorm / Embed    Flax `scale` / `embedding`   <->  PyTorch `weight` (same layout)
Any other leaf (a class token, a position table, a logit scale) has the same layout in both.
Paths are tuples of Flax names, e.g. ("text", "encoder", "block_0", "attn", "query", "kernel").
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
from flax import traverse_util

from jaxzoo.errors import DataError

__all__ = ["from_torch", "param_shapes", "to_torch", "torch_leaf", "torch_state_dict"]

_WEIGHT_LEAVES = ("kernel", "scale", "embedding")


def to_torch(leaf: str, array) -> np.ndarray:
    """A Flax leaf named `leaf` in PyTorch's layout."""
    a = np.asarray(array)
    if leaf == "kernel" and a.ndim == 4:
        return np.transpose(a, (3, 2, 0, 1))
    if leaf == "kernel" and a.ndim == 2:
        return a.T
    return a


def from_torch(leaf: str, array) -> np.ndarray:
    """A PyTorch tensor in the layout of the Flax leaf named `leaf` (inverse of `to_torch`)."""
    a = np.asarray(array)
    if leaf == "kernel" and a.ndim == 4:
        return np.transpose(a, (2, 3, 1, 0))
    if leaf == "kernel" and a.ndim == 2:
        return a.T
    return a


def torch_leaf(leaf: str) -> str:
    """The PyTorch name of a Flax leaf: kernel / scale / embedding -> weight, bias -> bias."""
    return "weight" if leaf in _WEIGHT_LEAVES else leaf


def param_shapes(variables) -> dict[tuple, tuple]:
    """`{path: shape}` of a (possibly abstract, from `jax.eval_shape`) {"params": ...} tree."""
    return {p: tuple(v.shape) for p, v in traverse_util.flatten_dict(variables["params"]).items()}


def convert(state_dict: Mapping[str, np.ndarray], shapes: Mapping[tuple, tuple],
            name_of: Callable[[tuple], str], ignore: Callable[[str], bool] = lambda k: False,
            keep: Callable[[tuple], bool] = lambda path: True, what: str = "state dict"):
    """Flax `{"params": ...}` with every path of `shapes` read from `state_dict[name_of(path)]`.

    Strict: a DataError (a ValueError) lists in one message every missing key, every unexpected
    key (unless `ignore`d) and every tensor whose shape is not the model's. `keep` drops paths
    from the result after the check (e.g. layers past the one a feature extractor needs).
    """
    expected = {name_of(p): p for p in shapes}
    missing = sorted(k for k in expected if k not in state_dict)
    extra = sorted(k for k in state_dict if k not in expected and not ignore(k))
    misshaped = []
    for k, p in expected.items():
        if k in state_dict:
            want = to_torch(p[-1], np.empty(shapes[p], np.uint8)).shape
            if tuple(np.shape(state_dict[k])) != want:
                misshaped.append(f"{k}: file {tuple(np.shape(state_dict[k]))} vs model {want}")
    if missing or extra or misshaped:
        raise DataError(f"{what} does not match the model: missing keys ({len(missing)}): "
                        f"{missing}; unexpected keys ({len(extra)}): {extra}; shape mismatches "
                        f"({len(misshaped)}): {misshaped}")
    flat = {p: from_torch(p[-1], state_dict[k]) for k, p in expected.items() if keep(p)}
    return {"params": traverse_util.unflatten_dict(flat)}


def torch_state_dict(variables, name_of: Callable[[tuple], str]) -> dict[str, np.ndarray]:
    """The inverse of `convert`: a PyTorch-layout state dict of Flax variables."""
    flat = traverse_util.flatten_dict(variables["params"])
    return {name_of(p): to_torch(p[-1], v) for p, v in flat.items()}
