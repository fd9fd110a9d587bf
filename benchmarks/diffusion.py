"""Diffusion samplers: error against NFE, measured convergence order, per-step overhead.

    python benchmarks/diffusion.py [--quick] [--spacing karras] [--json out.json]

Everything runs in float64 on exact denoisers (no network), so the errors are the samplers'
own discretisation errors. Schedule: DDPM's linear betas, T = 1000. Problems:
  gaussian  x0 ~ N(mu, diag(sd^2)) in d = 64 dimensions, 256 starting points. Reference: the
            closed-form probability-flow map from sigma(T-1) to sigma(0) followed by the final
            denoising D(.; sigma(0)) that every sampler ends with. The adaptive Dormand-Prince
            solve (`probability_flow_ode`) is checked against it (printed as "reference check").
  mixture   a 2-D mixture of three isotropic Gaussians, 512 starting points. Reference: the
            adaptive solve at rtol = atol = 1e-10.
Deterministic samplers (ddim, euler, heun, dpmpp_2m, dpmpp_3m, unipc): error against the
reference at each NFE budget, as the RMS over points and dimensions, and (for the mixture, where
the RMS is dominated by the few points near a boundary between modes, which a small path error
sends to the other mode) as the median over points of the per-point Euclidean error. heun spends
2n - 1 NFE on n steps, so it runs n = (NFE + 1) // 2. Order: minus the least-squares slope of
log error against log NFE over the three largest budgets. Stochastic samplers (ddpm; ddim with
eta = 1) do not follow the ODE path: on the Gaussian their samples are scored by the
2-Wasserstein distance between the per-dimension (diagonal) Gaussian fitted to 4096 samples and
the exact output law N(mu, sd^4 / (sd^2 + sigma(0)^2)), next to the same statistic for 4096 exact
draws (the sampling floor); their "weak order" is the slope over the budgets (at most the three
largest) whose distance is at least three times the floor.
Overhead: a zero-cost denoiser (returns zeros), one 2-D point, a T = 10000 schedule: wall time
per step of the scanned `samplers.sample` (one jit, one lax.scan) against a Python loop that
calls a jitted step function per step (the diffusers-style loop), for DDIM and DPM-Solver++(2M),
in the same process; microseconds per step from the difference between a long and a short run,
so the fixed cost of a call cancels. The loop implementations are checked to agree with the
scanned samplers on the Gaussian problem (max |difference| printed).
Guidance: GLIDE's text-conditioned U-Net at the shapes of experiments/configs/glide.py:cpu (random
parameters, batches of 4 and 32 images of 16x16, 24 caption tokens encoded once per call, as the
launchers sample), DPM-Solver++(2M) for 25 steps: wall time of the unguided sampler, of
classifier-free guidance as one network call on the doubled batch (`unet.denoiser(guided=True)`,
what the launchers use) and of guidance as two network calls per step (conditional, then
unconditional: the obvious alternative), each as a ratio to unguided. On a CPU the network is
compute-bound already at batch 32, so doubling the batch costs about 2x; the one-call form wins
where a batch does not fill the machine (small batches, accelerators).
--quick: budgets up to 50 NFE, 1024 stochastic samples, shorter timing runs, a U-Net of 8 channels.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxzoo.core import frechet
from jaxzoo.diffusion import gaussian as dif, samplers as smp
from jaxzoo.diffusion.glide import TextUNet, encode_captions
from jaxzoo.diffusion.unet import UNet, denoiser
from jaxzoo.nn.towers import TextTransformer

DETERMINISTIC = ("ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc")
STOCHASTIC = (("ddpm", 0.0), ("ddim", 1.0))  # (method, eta)


def _bc(a, x):
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def gaussian_problem(schedule, d=64, seed=0):
    rng = np.random.default_rng(seed)
    mu, sd = rng.normal(0.0, 0.5, d), rng.uniform(0.2, 1.2, d)

    def eps_fn(x, t):
        a, s = dif.alpha_sigma(schedule, t)
        a, s = _bc(a, x), _bc(s, x)
        return (x - a * mu) * s / (a * a * sd**2 + s * s)

    def exact(x_T):
        s0, s1 = float(schedule.sigmas[-1]), float(schedule.sigmas[0])
        z0 = np.asarray(x_T) * np.sqrt(1 + s0**2)
        z1 = mu + np.sqrt(sd**2 + s1**2) / np.sqrt(sd**2 + s0**2) * (z0 - mu)
        return mu + sd**2 / (sd**2 + s1**2) * (z1 - mu)

    s_min = float(schedule.sigmas[0])
    output_law = (mu, np.diag(sd**4 / (sd**2 + s_min**2)))
    return eps_fn, exact, output_law


def mixture_problem(schedule):
    weights = np.array([0.2, 0.5, 0.3])
    means = np.array([[-2.0, 0.5], [1.0, -1.0], [1.5, 1.8]])
    sds = np.array([0.3, 0.5, 0.4])
    logw = jnp.log(weights)

    def eps_fn(x, t):
        a, s = dif.alpha_sigma(schedule, t)
        a, s = a[:, None, None], s[:, None, None]
        var = a * a * sds[None, :, None] ** 2 + s * s  # [B, K, 1]
        diff = x[:, None, :] - a * means[None]  # [B, K, 2]
        logp = logw - 0.5 * jnp.sum(diff**2 / var, -1) - jnp.log(var[..., 0])
        post = jax.nn.softmax(logp, axis=-1)[..., None]
        return jnp.sum(post * diff * s / var, axis=1)

    return eps_fn


def _rms(x, ref):
    return float(np.sqrt(np.mean((np.asarray(x) - np.asarray(ref)) ** 2)))


def _median_point_error(x, ref):
    """Median over points of the per-point Euclidean error (robust to the few trajectories
    near a boundary between mixture modes, which a small path error sends to the other mode)."""
    return float(np.median(np.linalg.norm(np.asarray(x) - np.asarray(ref), axis=-1)))


def _order(nfe, err, keep=None):
    nfe, err = np.asarray(nfe, float), np.asarray(err, float)
    sel = np.ones(len(nfe), bool) if keep is None else np.asarray(keep)
    if sel.sum() < 2:
        return float("nan")
    idx = np.flatnonzero(sel)[-3:]
    return float(-np.polyfit(np.log(nfe[idx]), np.log(err[idx]), 1)[0])


def steps_for(method, nfe):
    return max((nfe + 1) // 2, 1) if method == "heun" else nfe


def error_table(eps_fn, x_T, ref, schedule, budgets, spacing):
    table = {}
    for method in DETERMINISTIC:
        nfes, rms, med = [], [], []
        for budget in budgets:
            n = steps_for(method, budget)
            x = smp.sample(eps_fn, x_T, None, schedule, n, method=method, timestep_spacing=spacing)
            nfes.append(2 * n - 1 if method == "heun" else n)
            rms.append(_rms(x, ref))
            med.append(_median_point_error(x, ref))
        table[method] = {"nfe": nfes, "rms": rms, "order": _order(nfes, rms), "median": med,
                         "order_median": _order(nfes, med)}
    return table


def stochastic_table(eps_fn, law, schedule, budgets, spacing, num=4096, d=64):
    """Dimensions are independent in the Gaussian problem, so the law is compared through its
    per-dimension means and variances: the Frechet (W2) distance between diagonal Gaussians,
    ``sum_i (m_i - m*_i)^2 + (s_i - s*_i)^2``, whose small-sample bias is far below that of a
    full-covariance fit in 64 dimensions."""
    key = jax.random.key(7)
    mu, cov = law

    def w2(x):
        m, c = frechet.gaussian_moments(jnp.asarray(x))
        return float(np.sqrt(max(float(frechet.frechet_distance(m, jnp.diag(jnp.diag(c)), mu, cov)), 0.0)))

    exact = mu + np.sqrt(np.diag(cov)) * np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (num, d)))
    floor = w2(exact)
    x_T = jax.random.normal(key, (num, d), jnp.float64)
    table = {"floor_w2": floor}
    for method, eta in STOCHASTIC:
        errs = []
        for n in budgets:
            x = smp.sample(eps_fn, x_T, jax.random.fold_in(key, n), schedule, n, method=method,
                           eta=eta, timestep_spacing=spacing)
            errs.append(w2(x))
        name = method if eta == 0 else f"{method}_eta{eta:g}"
        table[name] = {"nfe": list(budgets), "w2": errs,
                       "weak_order": _order(budgets, errs, np.asarray(errs) >= 3 * floor)}
    return table


# ----------------------------------------------------------------------------- Python-loop samplers


def python_loop_sampler(method, eps_fn, schedule, num_steps, spacing):
    """A diffusers-style sampler: a Python loop calling one jitted step per step (eps model)."""
    ts, sig = smp.step_grid(schedule, num_steps, spacing)
    ts, sig = np.asarray(ts), np.asarray(sig)

    @jax.jit
    def x0_of(z, s, t):
        alpha = 1.0 / jnp.sqrt(1.0 + s * s)
        x = z * alpha
        eps = eps_fn(x, jnp.broadcast_to(t, (z.shape[0],)))
        return (x - s * alpha * eps) / alpha

    @jax.jit
    def ddim_step(z, s, sp, t):
        x0 = x0_of(z, s, t)
        return x0 + sp * (z - x0) / s

    @jax.jit
    def dpmpp_step(z, m1, h1, s, sp, t, second):
        x0 = x0_of(z, s, t)
        h = jnp.log(s / jnp.where(sp > 0, sp, 0.5 * s))
        r = jnp.where(second, h1 / h, 1.0)
        d = jnp.where(second, x0 + (x0 - m1) / (2.0 * r), x0)
        return (sp / s) * z + (1.0 - sp / s) * d, x0, h

    def run(x_T):
        z = x_T * np.sqrt(1.0 + sig[0] ** 2)
        if method == "ddim":
            for i in range(num_steps):
                z = ddim_step(z, sig[i], sig[i + 1], ts[i])
            return z
        m1, h1 = jnp.zeros_like(z), jnp.zeros((), z.dtype)
        for i in range(num_steps):
            second = i > 0 and sig[i + 1] > 0
            z, m1, h1 = dpmpp_step(z, m1, h1, sig[i], sig[i + 1], ts[i], second)
        return z

    return run


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def overhead(spacing, scan_steps, loop_steps, repeats):
    """Microseconds per step with a zero-cost denoiser: (t(long) - t(short)) / (long - short)
    for the scanned sampler and for the Python loop. The scan's per-step cost is tiny, so it
    gets longer runs (a schedule with T = 10000 allows up to 10000 steps)."""
    # Betas / 10 keep sum(beta), and so sigma_max, close to DDPM's T = 1000 schedule.
    schedule = dif.make_schedule("linear", num_train_steps=10_000, beta_start=1e-5, beta_end=2e-3)
    zero = lambda x, t: jnp.zeros_like(x)
    x_T = jnp.ones((1, 2))
    out = {}
    for method in ("ddim", "dpmpp_2m"):
        makers = {
            "scan": (scan_steps, lambda n: lambda: smp.sample(
                zero, x_T, None, schedule, n, method=method, timestep_spacing=spacing)),
            "python_loop": (loop_steps, lambda n: (lambda run: lambda: run(x_T))(
                python_loop_sampler(method, zero, schedule, n, spacing))),
        }
        timings = {}
        for name, ((short, long), make) in makers.items():
            fns = {n: make(n) for n in (short, long)}
            for fn in fns.values():
                jax.block_until_ready(fn())  # compile / warm
            t_short, t_long = (_median_time(fns[n], repeats) for n in (short, long))
            timings[name] = 1e6 * max(t_long - t_short, 0.0) / (long - short)
        out[method] = {"scan_us_per_step": timings["scan"],
                       "python_loop_us_per_step": timings["python_loop"],
                       "ratio": timings["python_loop"] / max(timings["scan"], 1e-3)}
    return out


def loop_agreement(eps_fn, x_T, schedule, spacing, n=10):
    diffs = {}
    for method in ("ddim", "dpmpp_2m"):
        scanned = smp.sample(eps_fn, x_T, None, schedule, n, method=method, timestep_spacing=spacing)
        looped = python_loop_sampler(method, eps_fn, schedule, n, spacing)(x_T)
        diffs[method] = float(np.max(np.abs(np.asarray(scanned) - np.asarray(looped))))
    return diffs


# ----------------------------------------------------------------------------- report


@dataclasses.dataclass(frozen=True)
class _TwoCalls:
    """Guidance the obvious way: the conditional and the unconditional network as two calls."""

    model: TextUNet

    def __call__(self, params, text, x, t):
        cond = self.model.apply(params, x, t, **text)
        uncond = self.model.apply(params, x, t, **text, drop=jnp.ones(x.shape[:1], bool))
        return cond, uncond


def guidance_cost(quick: bool, repeats: int, batches=(4, 32), steps: int = 25) -> dict:
    """Per batch size: seconds per sampler call (median of ``repeats``) unguided, guided in one
    batched call and guided in two calls, with the captions encoded once (as the launchers
    sample); ratios to unguided."""
    channels = 8 if quick else 32
    text = TextTransformer(vocab_size=420, max_len=24, width=64, depth=2, num_heads=4, causal=True,
                           pool="eos", eos_id=6, pad_id=0, ln_eps=1e-5)
    unet = UNet(out_channels=3, channels=channels, channel_mult=(1, 2, 2), num_res_blocks=1,
                attention_resolutions=(8, 4), num_heads=4, num_groups=8, scale_shift_norm=True,
                context_dim=64)
    model = TextUNet(text, unet)
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(1), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1,), jnp.int32),
                        tokens=jnp.zeros((1, 24), jnp.int32))
    sch = dif.make_schedule("cosine")
    out = {"steps": steps, "channels": channels}
    for batch in batches:
        tokens = np.concatenate([np.full((batch, 1), 5), rng.integers(7, 420, (batch, 8)),
                                 np.full((batch, 1), 6), np.zeros((batch, 14), int)], 1)
        cond = {k: jnp.asarray(v) for k, v in encode_captions(model, params, tokens).items()}
        x = jax.random.normal(jax.random.key(0), (batch, 16, 16, 3))
        run = lambda fn, w: smp.sample(fn, x, None, sch, steps, method="dpmpp_2m",  # noqa: E731
                                       timestep_spacing="trailing", guidance_scale=w,
                                       threshold="static")
        variants = {"unguided": (denoiser(model, params, **cond), None),
                    "guided_one_call": (denoiser(model, params, guided=True, **cond), 3.0),
                    "guided_two_calls": (jax.tree_util.Partial(_TwoCalls(model), params, cond), 3.0)}
        seconds = {}
        for name, (fn, w) in variants.items():
            run(fn, w).block_until_ready()  # compile
            seconds[name] = _median_time(lambda: run(fn, w).block_until_ready(), repeats)
        base = seconds["unguided"]
        out[f"batch_{batch}"] = {"seconds": seconds,
                                 "guided_one_call_over_unguided": seconds["guided_one_call"] / base,
                                 "guided_two_calls_over_unguided": seconds["guided_two_calls"] / base}
    return out


def _print_table(title, table, key, order_key):
    budgets = next(v for v in table.values() if isinstance(v, dict))["nfe"]
    print(f"\n{title}")
    print(f"{'method':>14} | " + " ".join(f"{n:>8}" for n in budgets) + f" | {order_key:>10}")
    for method, row in table.items():
        if not isinstance(row, dict):
            continue
        label = method + ("*" if method == "heun" else "")
        print(f"{label:>14} | " + " ".join(f"{e:8.1e}" for e in row[key]) + f" | {row[order_key]:10.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer budgets and repeats (< 1 minute)")
    parser.add_argument("--spacing", default="karras", choices=smp.SAMPLE_SPACINGS)
    parser.add_argument("--repeats", type=int, default=0, help="timing repeats (default 20, quick 5)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    budgets = (5, 10, 20, 50) if args.quick else (5, 10, 20, 50, 100, 200, 500)
    repeats = args.repeats or (5 if args.quick else 20)
    print(f"devices: {jax.devices()}; spacing: {args.spacing}")
    result = {"spacing": args.spacing, "budgets": list(budgets)}
    with jax.enable_x64(True):
        sch = dif.make_schedule("linear")
        g_eps, g_exact, g_law = gaussian_problem(sch)
        x_T = jax.random.normal(jax.random.key(0), (256, 64), jnp.float64)
        g_ref = g_exact(x_T)
        adaptive, stats = smp.probability_flow_ode(g_eps, x_T, sch, rtol=1e-10, atol=1e-10,
                                                   return_stats=True)
        result["gaussian_reference_check"] = {"adaptive_vs_closed_form_rms": _rms(adaptive, g_ref),
                                              "adaptive_nfe": int(stats["nfe"])}
        result["gaussian"] = error_table(g_eps, x_T, g_ref, sch, budgets, args.spacing)

        m_eps = mixture_problem(sch)
        x_m = jax.random.normal(jax.random.key(1), (512, 2), jnp.float64)
        m_ref, m_stats = smp.probability_flow_ode(m_eps, x_m, sch, rtol=1e-10, atol=1e-10,
                                                  return_stats=True)
        if not bool(m_stats["reached_end"]):
            raise RuntimeError("the adaptive reference solve did not reach t = 0")
        result["mixture_reference"] = {"adaptive_nfe": int(m_stats["nfe"])}
        result["mixture"] = error_table(m_eps, x_m, m_ref, sch, budgets, args.spacing)
        result["gaussian_stochastic"] = stochastic_table(g_eps, g_law, sch, budgets, args.spacing,
                                                         num=1024 if args.quick else 4096)
        result["python_loop_agreement_max_abs"] = loop_agreement(g_eps, x_T, sch, args.spacing)
    scan_steps, loop_steps = ((100, 2000), (20, 220)) if args.quick else ((100, 5000), (50, 1050))
    result["overhead"] = overhead(args.spacing, scan_steps, loop_steps, repeats)
    result["guidance"] = guidance_cost(args.quick, 3 if args.quick else 7)

    ref = result["gaussian_reference_check"]
    print(f"reference check (Gaussian): adaptive DOPRI5 vs closed form RMS "
          f"{ref['adaptive_vs_closed_form_rms']:.1e} ({ref['adaptive_nfe']} NFE); "
          f"mixture reference: {result['mixture_reference']['adaptive_nfe']} NFE")
    _print_table("Gaussian d=64: RMS error vs NFE (* heun: 2n-1 NFE, columns are budgets)",
                 result["gaussian"], "rms", "order")
    _print_table("2-D mixture: median per-point error vs NFE against the adaptive solve",
                 result["mixture"], "median", "order_median")
    _print_table("2-D mixture: RMS error (dominated by the few points that change mode)",
                 result["mixture"], "rms", "order")
    st = result["gaussian_stochastic"]
    _print_table(f"Stochastic samplers, Gaussian d=64: W2 of the fitted diagonal law vs NFE "
                 f"(floor with exact draws: {st['floor_w2']:.1e})", st, "w2", "weak_order")
    print(f"\nPython-loop vs scanned outputs, max |diff|: {result['python_loop_agreement_max_abs']}")
    print(f"\nper-step overhead, zero-cost denoiser (scan: {scan_steps[0]} vs {scan_steps[1]} steps, "
          f"Python loop: {loop_steps[0]} vs {loop_steps[1]}; median of {repeats})")
    print(f"{'method':>10} {'scan':>12} {'python loop':>14} {'ratio':>8}")
    for method, row in result["overhead"].items():
        print(f"{method:>10} {row['scan_us_per_step']:>10.2f}us {row['python_loop_us_per_step']:>12.2f}us "
              f"{row['ratio']:>8.1f}")
    g = result["guidance"]
    print(f"\nclassifier-free guidance, GLIDE U-Net ({g['channels']} channels) at 16x16, "
          f"{g['steps']} DPM-Solver++(2M) steps, captions encoded once:")
    for key, row in g.items():
        if key.startswith("batch_"):
            sec = row["seconds"]
            print(f"  {key.replace('_', ' ')}: " + ", ".join(
                f"{name} {v:.3f} s ({v / sec['unguided']:.2f}x)" for name, v in sec.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
