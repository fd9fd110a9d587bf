"""Super-resolution speed: RRDBNet forward throughput and FLOP efficiency, ESRGAN GAN vs PSNR step.

    python benchmarks/sr.py [--quick] [--repeats N] [--batch B] [--matmul N] [--json out.json]

Everything runs in one process on the default backend. Times are medians over `--repeats`
interleaved rounds (every contender runs once per round, after one compile/warm-up call); only
ratios and rates are reported, nothing is asserted about time.

(a) RRDBNet forward. The published ESRGAN generator (23 RRDBs, 64 features, growth 32, x4;
    16,697,987 parameters; --quick: 2 RRDBs) on a batch of B random LR images (default 1) of
    side 16, 32, 64 (output 64, 128, 256; --quick: LR 8, output 32), jitted, in float32 and in
    bfloat16 (params and input cast; XLA's default precision). Throughput = output pixels / s
    (B x side^2 per call). FLOPs per call, two ways:
      analytic  the 3x3 convolutions only: 2 x 9 x C_in x C_out per output pixel of each conv
                (`rrdbnet_conv_flops`): conv_first, 69 dense blocks of 5 convs and conv_body
                at LR size, conv_up1 at 2x, conv_up2, conv_hr and conv_last at 4x; 35.85 MFLOP
                per LR pixel at the defaults (146.9 GFLOP for one 64 x 64 LR image);
      XLA       `jax.jit(f).lower(...).compile().cost_analysis()['flops']`. XLA counts only the
                kernel taps that fall inside the image (none on the zero padding), so it is
                compared with the analytic count of in-image taps, (3h - 2)(3w - 2) per conv
                instead of 9 h w: `xla_over_analytic` is 1 plus what XLA adds for bias adds,
                LeakyReLU, residual scaling, dtype conversions (a few tenths of a percent in
                fp32 at the full sizes, more at --quick's tiny ones).
    Achieved FLOP/s = the padded analytic FLOPs / median time, as a fraction of the machine's matmul
    FLOP/s in the same dtype: the best of square N x N @ N x N matmuls (2 N^3 FLOPs) at
    N = M/4, M/2, M (--matmul M, default 2048; --quick 512), timed in the same rounds.

(b) ESRGAN training step, the `cpu_gan` config's shapes (RRDBNet 2 RRDBs / 32 features /
    growth 16, 64-pixel HR patches, batch 16 (--quick 4), the 6-conv discriminator, the narrow
    random VGG19 trunk to conv3_4 for the perceptual loss), float32: one jitted step (loss,
    gradient, Adam update of every network) of the gan stage (generator forward once,
    discriminator on real, fake and detached fake, VGG on SR and HR, backward through all) and
    of the psnr stage (L1, generator only), built from experiments/esrgan.py's own losses
    (`gan_losses`) and `jaxzoo.sr.training`'s tasks. Reported: ms per step and the ratio gan / psnr.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import optax
from _timing import time_interleaved, xla_flops

from experiments import esrgan
from jaxzoo.sr import training as sr_training
from jaxzoo.sr.rrdb import RRDBNet
from jaxzoo.train import config as config_lib

SIZES = {
    "full": dict(num_blocks=23, lr_sides=(16, 32, 64), matmul=2048, gan_batch=16, repeats=5, min_time_s=0.2),
    "quick": dict(num_blocks=2, lr_sides=(8,), matmul=512, gan_batch=4, repeats=3, min_time_s=0.02),
}
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
SCALE = 4


# ----------------------------------------------------------------------------- timing


# ----------------------------------------------------------------------------- (a) RRDBNet


def rrdbnet_conv_flops(model: RRDBNet, batch: int, lr_h: int, lr_w: int, padded: bool = True) -> int:
    """Analytic FLOPs of the 3x3 convolutions of `model` (scale 4) on [batch, lr_h, lr_w, C]:
    sum over convs of 2 x C_in x C_out x (kernel taps summed over output pixels). `padded`:
    every tap counts, 9 h w per conv of output h x w (the usual convention, and what dense
    hardware computes); else only taps inside the image, (3h - 2)(3w - 2), as XLA counts."""
    if model.scale != 4:
        raise ValueError(f"the count is for scale 4, got {model.scale}")

    def taps(h, w):
        return 9 * h * w if padded else (3 * h - 2) * (3 * w - 2)

    f, g = model.features, model.growth
    per_rdb = sum((f + k * g) * g for k in range(4)) + (f + 4 * g) * f  # conv1..4, conv5
    lr = model.in_channels * f + 3 * model.num_blocks * per_rdb + f * f  # first, trunk, body
    macs = (lr * taps(lr_h, lr_w) + f * f * taps(2 * lr_h, 2 * lr_w)  # conv_up1 at x2
            + (2 * f * f + f * model.out_channels) * taps(4 * lr_h, 4 * lr_w))  # up2, hr, last at x4
    return 2 * macs * batch


def matmul_peaks(size: dict, repeats: int) -> dict:
    """Best GFLOP/s of square matmuls per dtype: {dtype: (N, GFLOP/s)}."""
    sizes = sorted({size["matmul"] // 4, size["matmul"] // 2, size["matmul"]})
    matmul = jax.jit(jnp.matmul)
    fns = {}
    for name, dtype in DTYPES.items():
        for n in sizes:
            a, b = (jax.random.normal(k, (n, n), jnp.float32).astype(dtype)
                    for k in jax.random.split(jax.random.key(n)))
            fns[(name, n)] = (lambda a=a, b=b: matmul(a, b))
    t = time_interleaved(fns, repeats, size["min_time_s"])
    out = {}
    for name in DTYPES:
        rates = {n: 2 * n**3 / t[(name, n)] / 1e9 for n in sizes}
        best = max(rates, key=rates.get)
        out[name] = (best, rates[best])
    return out


def bench_rrdbnet(size: dict, batch: int, repeats: int, peaks: dict) -> dict:
    model = RRDBNet(num_blocks=size["num_blocks"])
    params32 = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    forward = jax.jit(model.apply)
    fns, calls = {}, {}
    for name, dtype in DTYPES.items():
        params = jax.tree.map(lambda p: p.astype(dtype), params32)
        for s in size["lr_sides"]:
            x = jax.random.uniform(jax.random.key(s), (batch, s, s, 3), jnp.float32).astype(dtype)
            calls[(name, s)] = (params, x)
            fns[(name, s)] = (lambda params=params, x=x: forward(params, x))
    t = time_interleaved(fns, repeats, size["min_time_s"])
    rows = []
    for (name, s), sec in t.items():
        analytic = rrdbnet_conv_flops(model, batch, s, s)
        in_image = rrdbnet_conv_flops(model, batch, s, s, padded=False)
        xla = xla_flops(forward, *calls[(name, s)])
        gflops = analytic / sec / 1e9
        rows.append(dict(dtype=name, lr_side=s, out_side=SCALE * s, batch=batch, ms=1e3 * sec,
                         out_pixels_per_s=batch * (SCALE * s) ** 2 / sec, analytic_flops=analytic,
                         analytic_in_image_flops=in_image, xla_flops=xla,
                         xla_over_analytic=None if xla is None else xla / in_image,
                         gflops=gflops, peak_gflops=peaks[name][1], peak_ratio=gflops / peaks[name][1]))
    return dict(rrdbnet_blocks=model.num_blocks,
                rrdbnet_params=sum(p.size for p in jax.tree.leaves(params32)), rrdbnet=rows)


# ----------------------------------------------------------------------------- (b) GAN step


def gan_config(batch: int):
    return config_lib.load_config(str(pathlib.Path(esrgan.__file__).parent / "configs/esrgan.py")
                                  + ":cpu_gan", {"batch_size": str(batch)})


def jitted_step(task):
    """`(params, opt_state, batch) -> (params, opt_state, loss)`: the runtime's step without its
    diagnostics (loss, gradient, optimizer update)."""

    def step(params, opt_state, batch):
        (loss, _), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(params, batch, None)
        updates, opt_state = task.tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


def bench_gan_step(size: dict, repeats: int) -> dict:
    config = gan_config(size["gan_batch"])
    tasks = {"psnr": sr_training.psnr_task(config),  # the gan generator: a fresh init
             "gan": sr_training.gan_task(config, *esrgan.gan_losses(config))}
    b, p = config.batch_size, config.data.patch_size
    keys = jax.random.split(jax.random.key(7))
    batch = {"lr": jax.random.uniform(keys[0], (b, p // SCALE, p // SCALE, 3)),
             "hr": jax.random.uniform(keys[1], (b, p, p, 3))}
    fns, counts = {}, {}
    for name, task in tasks.items():
        params = task.init_params(jax.random.key(0))
        opt_state = task.tx.init(params)
        step = jitted_step(task)
        counts[name] = sum(x.size for x in jax.tree.leaves(params))
        fns[name] = (lambda step=step, params=params, opt_state=opt_state: step(params, opt_state, batch))
    t = time_interleaved(fns, repeats, size["min_time_s"])
    return dict(step_batch=b, step_patch=p, step_params=counts, psnr_step_ms=1e3 * t["psnr"],
                gan_step_ms=1e3 * t["gan"], gan_over_psnr=t["gan"] / t["psnr"])


# ----------------------------------------------------------------------------- report


def print_report(res: dict) -> None:
    print(f"\n(a) RRDBNet forward, {res['rrdbnet_blocks']} RRDBs, {res['rrdbnet_params']:,} params, "
          f"batch {res['rrdbnet'][0]['batch']}; matmul peak "
          + ", ".join(f"{k} {v[1]:.1f} GFLOP/s (N={v[0]})" for k, v in res["matmul_peaks"].items()))
    print(f"{'dtype':6}{'LR':>5}{'out':>5}{'ms':>10}{'Mpix/s':>9}{'GFLOP':>10}{'XLA/anal.':>10}"
          f"{'GFLOP/s':>9}{'/ peak':>8}")
    for r in res["rrdbnet"]:
        xla = "n/a" if r["xla_over_analytic"] is None else f"{r['xla_over_analytic']:.4f}"
        print(f"{r['dtype']:6}{r['lr_side']:>5}{r['out_side']:>5}{r['ms']:>10.2f}{r['out_pixels_per_s'] / 1e6:>9.3f}"
              f"{r['analytic_flops'] / 1e9:>10.2f}{xla:>10}{r['gflops']:>9.1f}{r['peak_ratio']:>8.3f}")
    by = {(r["dtype"], r["lr_side"]): r for r in res["rrdbnet"]}
    for s in sorted({r["lr_side"] for r in res["rrdbnet"]}):
        print(f"  bf16 / fp32 throughput at LR {s}: {by[('bf16', s)]['out_pixels_per_s'] / by[('fp32', s)]['out_pixels_per_s']:.2f}")
    print(f"\n(b) ESRGAN cpu_gan shapes, batch {res['step_batch']}, HR patch {res['step_patch']}: "
          f"psnr step {res['psnr_step_ms']:.1f} ms, gan step {res['gan_step_ms']:.1f} ms, "
          f"ratio gan / psnr {res['gan_over_psnr']:.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute on 2 CPU cores)")
    parser.add_argument("--repeats", type=int, default=0, help="timing rounds (default 5, --quick 3)")
    parser.add_argument("--batch", type=int, default=1, help="LR images per RRDBNet forward call")
    parser.add_argument("--matmul", type=int, default=0, help="largest matmul side (default 2048, --quick 512)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    size = dict(SIZES["quick" if args.quick else "full"])
    size["matmul"] = args.matmul or size["matmul"]
    repeats = args.repeats or size["repeats"]
    print(f"devices: {jax.devices()}  sizes: {'quick' if args.quick else 'full'} {size}")
    result = dict(quick=args.quick, repeats=repeats, backend=jax.default_backend())
    t0 = time.perf_counter()
    peaks = matmul_peaks(size, repeats)
    result["matmul_peaks"] = {k: list(v) for k, v in peaks.items()}
    result.update(bench_rrdbnet(size, args.batch, repeats, peaks))
    t1 = time.perf_counter()
    result.update(bench_gan_step(size, repeats))
    t2 = time.perf_counter()
    result["wall_s"] = dict(rrdbnet=t1 - t0, gan_step=t2 - t1)
    print_report(result)
    print("\nwall time: " + ", ".join(f"{k} {v:.1f}s" for k, v in result["wall_s"].items()))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
