"""The jitted train step every launcher shares.

A launcher supplies `loss_fn(params, batch, key) -> (loss, terms)`, where `terms` is a flat dict
of named scalar loss terms (e.g. `{"recon": ..., "kl": ...}`). The step:
  * draws its randomness as `jax.random.fold_in(base_key, state.step)`, so a resumed run draws
    exactly what the uninterrupted run would have;
  * computes gradients, applies the optax update, and updates the EMA parameters if present;
  * returns diagnostics computed on device (`grad_norm`, `update_norm`, every loss term and a
    `finite` flag); the loop fetches them only when it needs them.
The state argument is donated: its buffers are reused for the new state.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from jaxzoo.train.state import TrainState

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


def train_step(state: TrainState, batch, base_key, *, loss_fn: LossFn,
               tx: optax.GradientTransformation, ema_decay: Optional[float] = None):
    """One optimisation step (unjitted; see `make_train_step`)."""
    key = jax.random.fold_in(base_key, state.step)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_params is not None:
        ema_params = optax.incremental_update(params, ema_params, step_size=1.0 - ema_decay)
    grad_norm = optax.global_norm(grads)
    metrics = {"loss": loss, **terms, "grad_norm": grad_norm,
               "update_norm": optax.global_norm(updates)}
    finite = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
    metrics["finite"] = finite
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              ema_params=ema_params)
    return new_state, metrics


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, state_shardings,
                    ema_decay: Optional[float] = None):
    """`jax.jit` of `train_step` with the state donated and kept on `state_shardings`."""
    if (ema_decay is None) != (getattr(state_shardings, "ema_params", None) is None):
        raise ValueError("ema_decay must be given exactly when the state has ema_params")

    def step(state, batch, base_key):
        return train_step(state, batch, base_key, loss_fn=loss_fn, tx=tx, ema_decay=ema_decay)

    return jax.jit(step, out_shardings=(state_shardings, None), donate_argnums=0)
