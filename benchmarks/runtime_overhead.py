"""What does jaxzoo's runtime cost over a minimal hand-written jit loop? Same model, same process.

    python benchmarks/runtime_overhead.py [--steps 2000] [--repeats 5] [--json out.json]

Model: the VAE of `experiments/configs/vae.py:cpu` (64-200-200-8, Adam), batch 100. Measured:
  step    the runtime's jitted step (sharded state, donation, fold_in keys, grad/update-norm
          diagnostics, finite flag) driven the way `jaxzoo.train.loop` drives it (the previous
          step's finite flag fetched while the next runs), against `jax.jit` of a bare
          grad + optax update, both on device-resident batches.
  loop    the whole `jaxzoo.train.loop.train` (host batches from the step-indexed loader, metrics,
          progress bar; checkpoints off), its steady state read from its own steps/s log, against
          a hand-written Python loop feeding the same loader's batches to the bare step.
  compile lower+compile time of each step function.
Runs are interleaved and repeated; the medians' ratio is reported (goal: step ratio <= 1.05).
Measured on 2 CPU cores: step 0.998x, whole loop with host data and logging 1.17x, compile 1.85x.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxzoo.data.pipeline import StepIndexedLoader
from jaxzoo.train import loop, mesh as mesh_lib, metrics as metrics_lib
from jaxzoo.train.state import abstract_state_and_shardings, create_state, make_init_fn
from jaxzoo.train.step import make_train_step
from jaxzoo.vae.model import VAE, negative_elbo

BATCH, DIM = 100, 64


def setup():
    model = VAE(data_dim=DIM, latent_dim=8, hidden=(200, 200))
    tx = optax.adam(1e-3, eps=1e-4)
    init_params = lambda key: model.init(key, jnp.zeros((1, DIM)), key)
    loss_fn = lambda params, batch, key: negative_elbo(model, params, batch["x"], key)
    data = (np.random.default_rng(0).random((1500, DIM)) < 0.3).astype(np.float32)
    return model, tx, init_params, loss_fn, data


def bare_step_fn(loss_fn, tx):
    @jax.jit
    def step(params, opt_state, batch, key):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def time_steps(steps: int, repeats: int):
    _, tx, init_params, loss_fn, data = setup()
    mesh = mesh_lib.make_mesh()
    batches = [mesh_lib.make_global_batch({"x": data[i * BATCH:(i + 1) * BATCH]}, mesh) for i in range(10)]
    key = jax.random.key(0)

    init_fn = make_init_fn(init_params, tx, ema=False)
    _, shardings = abstract_state_and_shardings(init_fn, key, mesh)
    runtime_step = make_train_step(loss_fn, tx, shardings)
    bare_step = bare_step_fn(loss_fn, tx)

    state0 = create_state(init_fn, key, shardings)
    t0 = time.perf_counter()
    runtime_step.lower(state0, batches[0], key).compile()
    compile_runtime = time.perf_counter() - t0
    params = init_params(key)
    opt_state = tx.init(params)
    t0 = time.perf_counter()
    bare_step.lower(params, opt_state, batches[0], key).compile()
    compile_bare = time.perf_counter() - t0

    def run_runtime():
        state = create_state(init_fn, key, shardings)
        state, m = runtime_step(state, batches[0], key)  # warm
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        pending = None
        for i in range(steps):
            state, m = runtime_step(state, batches[i % 10], key)
            if pending is not None:
                bool(pending["finite"])
            pending = m
        jax.block_until_ready(state)
        return (time.perf_counter() - t0) / steps

    def run_bare():
        p, o = params, opt_state
        p, o, _ = bare_step(p, o, batches[0], key)
        jax.block_until_ready(p)
        t0 = time.perf_counter()
        for i in range(steps):
            p, o, _ = bare_step(p, o, batches[i % 10], jax.random.fold_in(key, i))
        jax.block_until_ready(p)
        return (time.perf_counter() - t0) / steps

    rt, bt = [], []
    for _ in range(repeats):
        rt.append(run_runtime())
        bt.append(run_bare())
    return dict(step_runtime_us=1e6 * statistics.median(rt), step_bare_us=1e6 * statistics.median(bt),
                step_ratio=statistics.median(rt) / statistics.median(bt),
                compile_runtime_s=compile_runtime, compile_bare_s=compile_bare)


def time_loops(steps: int, repeats: int):
    _, tx, init_params, loss_fn, data = setup()
    config = ml_collections.ConfigDict(dict(seed=0, total_steps=steps, batch_size=BATCH,
                                            log_every=max(steps // 10, 1), checkpoint_every=10**9))

    def run_runtime():
        # Steady state from the loop's own log: steps/s of every logged interval but the first
        # (which includes compilation).
        with tempfile.TemporaryDirectory() as workdir:
            task = loop.Task(init_params, loss_fn, tx, StepIndexedLoader({"x": data}, BATCH, seed=0))
            loop.train(config, workdir, task)
            rates = [r["steps_per_s"] for r in metrics_lib.read_metrics(workdir)[1:]]
            return 1.0 / statistics.median(rates)

    bare_step = bare_step_fn(loss_fn, tx)

    def run_bare():
        loader = StepIndexedLoader({"x": data}, BATCH, seed=0)
        key = jax.random.key(0)
        p = init_params(key)
        o = tx.init(p)
        p, o, _ = bare_step(p, o, loader.batch(0), key)
        jax.block_until_ready(p)
        t0 = time.perf_counter()
        for i in range(steps):
            p, o, loss = bare_step(p, o, loader.batch(i), jax.random.fold_in(key, i))
        jax.block_until_ready(p)
        return (time.perf_counter() - t0) / steps

    rt, bt = [], []
    for _ in range(repeats):
        rt.append(run_runtime())
        bt.append(run_bare())
    return dict(loop_runtime_us=1e6 * statistics.median(rt), loop_bare_us=1e6 * statistics.median(bt),
                loop_ratio=statistics.median(rt) / statistics.median(bt))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    result = {**time_steps(args.steps, args.repeats), **time_loops(args.steps, max(args.repeats // 2, 1))}
    print(f"{'':10}{'runtime':>14}{'hand-written':>14}{'ratio':>8}")
    print(f"{'step':10}{result['step_runtime_us']:>12.1f}us{result['step_bare_us']:>12.1f}us"
          f"{result['step_ratio']:>8.3f}   (goal <= 1.05)")
    print(f"{'loop':10}{result['loop_runtime_us']:>12.1f}us{result['loop_bare_us']:>12.1f}us"
          f"{result['loop_ratio']:>8.3f}")
    print(f"{'compile':10}{result['compile_runtime_s']:>13.3f}s{result['compile_bare_s']:>13.3f}s"
          f"{result['compile_runtime_s'] / result['compile_bare_s']:>8.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
