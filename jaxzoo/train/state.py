"""The train state and its sharded initialisation.

`TrainState` holds everything a resumed run needs from the device: the step, the parameters, the
optimizer state and, optionally, an exponential moving average of the parameters. It is built
the big_vision way: `jax.eval_shape(init)` gives the shapes without allocating anything, the
shardings follow from the shapes, and `jax.jit(init, out_shardings=...)` materialises each array
directly where it belongs (no host copy, no replicate-then-shard).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from jaxzoo.train import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: number of completed steps
    params: Any
    opt_state: Any
    ema_params: Optional[Any] = None


def make_init_fn(init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, ema: bool):
    """Returns `init(key) -> TrainState` from `init_params(key) -> params`."""

    def init(key):
        params = init_params(key)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        )

    return init


def abstract_state_and_shardings(init_fn, key, mesh: Mesh, fsdp: bool = False):
    """Shapes of the state (no allocation) and the shardings it will live in."""
    abstract = jax.eval_shape(init_fn, key)
    shardings = mesh_lib.state_shardings(abstract, mesh, fsdp=fsdp)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    return abstract, shardings


def create_state(init_fn, key, shardings):
    """Runs `init_fn(key)` under jit, placing every array on its sharding."""
    return jax.jit(init_fn, out_shardings=shardings)(key)


def num_params(params) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
