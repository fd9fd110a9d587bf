"""CLIP training speed, and what gathering the negatives across devices costs.

    python benchmarks/clip.py [--quick] [--json out.json]

(a) Training throughput: one jitted step (forward, backward, AdamW) of the `cpu` config's CLIP
    (experiments/configs/clip.py) on random 32x32 pairs at batch 128 (--quick 32), with each image
    tower: the ConvNet the config trains (widths 32/64/128) and the ViT it replaced (patch 8,
    64 wide, 3 blocks); reported as pairs/s, the ConvNet's steps per ViT step, and achieved
    FLOP/s (XLA's count of the step) over the in-process float32 matmul rate (the best of
    N x N @ N x N, N = 256, 512, 1024).
(b) Gathered against per-device loss, on every local device (the script asks XLA for 2 CPU
    devices, or --devices): value and gradient of the softmax and the sigmoid loss of a global
    batch of unit embeddings (B = 1024, E = 512; --quick 256, 64) inside `shard_map`, once with
    `axis_name` (all_gather: every device scores its rows against all B) and once without (each
    device against its own B/D only). Reported: ms per call and the ratio gathered / local.
Times are medians of interleaved rounds in this process (benchmarks/_timing.py); nothing is
asserted. Measured on 2 CPU cores: the ConvNet CLIP trains 711 (CLIP) and 634 (SigLIP) pairs/s,
0.46 and 0.37 of the ViT's 1,543 and 1,708 pairs/s, both at 0.13-0.16 of the float32 matmul rate
(the ConvNet does about twice the ViT's FLOPs per pair); on 2 devices the gathered loss costs
2.29x (softmax) and 2.11x (sigmoid) the per-device loss, as each device scores B/2 x B logits
instead of B/2 x B/2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if __name__ == "__main__":  # the device count must be set before JAX starts
    devices = next((a.split("=")[1] for a in sys.argv if a.startswith("--devices=")), "2")
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={devices}")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, PartitionSpec as P  # noqa: E402

from _timing import time_interleaved, xla_flops  # noqa: E402
from jaxzoo.clip import losses, training  # noqa: E402
from jaxzoo.train import config as config_lib  # noqa: E402

SIZES = {"full": dict(batch=128, loss_batch=1024, embed=512, matmul=(256, 512, 1024), repeats=5,
                      min_time_s=0.2),
         "quick": dict(batch=32, loss_batch=256, embed=64, matmul=(128, 256), repeats=3,
                       min_time_s=0.02)}
TOWERS = ("cnn", "vit")
CONFIG = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs", "clip.py")


def matmul_peak(sizes, repeats, min_time_s) -> float:
    """Best float32 GFLOP/s of square matmuls."""
    mm = jax.jit(jnp.matmul)
    fns = {n: (lambda a=jnp.ones((n, n)), b=jnp.ones((n, n)): mm(a, b)) for n in sizes}
    t = time_interleaved(fns, repeats, min_time_s)
    return max(2 * n ** 3 / t[n] / 1e9 for n in sizes)


def bench_step(size: dict, peak: float, tower: str) -> dict:
    config = config_lib.load_config(f"{CONFIG}:cpu", {"batch_size": str(size["batch"]),
                                                      "model.vision_tower": tower})
    rows = {}
    for loss in config.losses:
        run = training.run_config(config, loss)
        model = training.make_model(run, loss, vocab_size=200)
        task = training.task(run, model)
        params = task.init_params(jax.random.key(0))
        opt_state = task.tx.init(params)
        b, s, t = run.batch_size, run.data.image_size, run.data.max_len
        keys = jax.random.split(jax.random.key(1))
        batch = {"image": jax.random.uniform(keys[0], (b, s, s, 3), minval=-1, maxval=1),
                 "tokens": jax.random.randint(keys[1], (b, t), 7, 200).at[:, -1].set(6)}

        @jax.jit
        def step(params, opt_state, batch):
            (value, _), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(params, batch, None)
            updates, opt_state = task.tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        sec = time_interleaved({"step": lambda: step(params, opt_state, batch)}, size["repeats"],
                               size["min_time_s"])["step"]
        flops = xla_flops(step, params, opt_state, batch)
        rows[loss] = dict(batch=b, ms_per_step=1e3 * sec, pairs_per_s=b / sec, xla_gflop=flops and flops / 1e9,
                          gflops=flops and flops / sec / 1e9,
                          peak_ratio=flops and flops / sec / 1e9 / peak)
    return rows


def bench_gathered_loss(size: dict) -> dict:
    mesh = Mesh(np.array(jax.devices()), ("data",))
    d = mesh.devices.size
    b, e = size["loss_batch"], size["embed"]
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    image, text = (jnp.asarray(unit(rng.normal(size=(b, e))), jnp.float32) for _ in range(2))
    fns = {}
    for name in ("softmax", "sigmoid"):
        for gathered in (True, False):
            axis = "data" if gathered else None
            loss = (lambda i, t, axis=axis: losses.softmax_loss(i, t, 10.0, axis_name=axis)) \
                if name == "softmax" else \
                (lambda i, t, axis=axis: losses.sigmoid_loss(i, t, 10.0, -5.0, axis_name=axis))
            fn = jax.jit(jax.shard_map(jax.value_and_grad(loss, argnums=(0, 1)), mesh=mesh,
                                       in_specs=(P("data"), P("data")),
                                       out_specs=(P(), (P("data"), P("data"))), check_vma=gathered))
            fns[(name, gathered)] = (lambda fn=fn: fn(image, text))
    t = time_interleaved(fns, size["repeats"], size["min_time_s"])
    return {name: dict(devices=d, global_batch=b, embed=e, gathered_ms=1e3 * t[(name, True)],
                       local_ms=1e3 * t[(name, False)], gathered_over_local=t[(name, True)] / t[(name, False)])
            for name in ("softmax", "sigmoid")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--devices", default="2", help="CPU devices for (b), set before JAX starts")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    peak = matmul_peak(size["matmul"], size["repeats"], size["min_time_s"])
    steps = {tower: bench_step(size, peak, tower) for tower in TOWERS}
    result = {"matmul_gflops": peak, "step": steps, "loss": bench_gathered_loss(size)}
    print(f"float32 matmul peak: {peak:.1f} GFLOP/s")
    for tower in TOWERS:
        for loss, r in result["step"][tower].items():
            ratio = "n/a" if r["peak_ratio"] is None else f"{r['peak_ratio']:.2f}"
            print(f"(a) {tower} {loss:8s} step: batch {r['batch']}, {r['ms_per_step']:.1f} ms, "
                  f"{r['pairs_per_s']:.0f} pairs/s, {r['gflops'] or 0:.1f} GFLOP/s = {ratio} of the "
                  "matmul peak")
    for loss in steps["cnn"]:
        ratio = steps["cnn"][loss]["pairs_per_s"] / steps["vit"][loss]["pairs_per_s"]
        print(f"(a) {loss:8s} ConvNet / ViT throughput: {ratio:.2f}")
    for name, r in result["loss"].items():
        print(f"(b) {name:8s} loss+grad, B={r['global_batch']} on {r['devices']} devices: gathered "
              f"{r['gathered_ms']:.2f} ms, per-device {r['local_ms']:.2f} ms, ratio {r['gathered_over_local']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
