"""A tiny regression task that exercises every part of the loop in well under a second a run."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxzoo.data.pipeline import StepIndexedLoader
from jaxzoo.train import loop


def config(**overrides):
    c = ml_collections.ConfigDict(dict(seed=0, total_steps=12, batch_size=8, log_every=1,
                                       checkpoint_every=4, keep_checkpoints=10))
    c.update(overrides)
    return c


def task(nan_example=None, batch_size=8, width=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, width)).astype(np.float32)
    y = (x @ np.arange(1.0, width + 1) + 0.1 * rng.normal(size=40)).astype(np.float32)
    if nan_example is not None:
        y[nan_example] = np.nan

    def loss_fn(params, batch, key):
        noise = 0.01 * jax.random.normal(key, batch["y"].shape)  # makes per-step keys matter
        err = batch["x"] @ params["w"] + params["b"] + noise - batch["y"]
        mse = jnp.mean(err**2)
        return mse + 1e-3 * jnp.sum(params["w"] ** 2), {"mse": mse}

    return loop.Task(
        init_params=lambda key: {"w": jax.random.normal(key, (width,)), "b": jnp.zeros(())},
        loss_fn=loss_fn,
        tx=optax.adam(0.05),
        loader=StepIndexedLoader({"x": x, "y": y}, batch_size, seed=0),
    )
