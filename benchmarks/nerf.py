"""NeRF speed and sampling efficiency: MLP throughput, fused vs staged rendering, hierarchical sampling.

    python benchmarks/nerf.py [--quick] [--repeats N] [--json out.json]

Everything runs in one process on the default backend, float32. Times are medians over
`--repeats` interleaved rounds (every contender runs once per round, after one compile/warm-up
call); only ratios are reported as results, nothing is asserted about time.

(a) MLP efficiency. nerf_pl's `NeRFMLP` (D=8, W=256, skip at 4, 63/27 encoded inputs) applied
    to P points (65,536; --quick 2,048), jitted, forward and forward+backward (gradient of
    sum(rgb) + sum(sigma) w.r.t. the params). Analytic FLOPs count the Dense layers only:
        forward    F = sum_layers 2 * in * out per point      (1,186,816 at the defaults)
        backward   dW: 2 * in * out per layer, plus dX: 2 * (in - in_enc) * out per layer, where
                   in_enc are the input channels that come straight from the encoding (no dX is
                   needed for them): layer 1 (all 63), the skip layer's 63, the dir layer's 27.
    (encoding, bias, ReLU and sigmoid are a few thousand FLOPs per point and are left out). XLA's
    own count, `jax.jit(f).lower(...).compile().cost_analysis()['flops']`, is printed beside it.
    Achieved GFLOP/s = analytic FLOPs / median time, divided by the machine's float32 matmul
    rate: the best GFLOP/s of square matmuls N x N @ N x N (2 N^3 FLOPs) at N = 512, 1024, 2048
    (--quick: 128, 256, 512), timed in the same rounds.
    Goal from the issue: ratio >= 0.6.

(b) Rendering. R rays (256; --quick 16), near 2, far 6, through the `NeRF` module's coarse + fine
    forward (64 stratified + 128 `sample_pdf` samples, fine net on all 192 sorted), deterministic
    (key=None), as one `jax.jit` over the ray batch, against the same computation staged from
    Python: every stage its own small jitted call (stratified samples, points, xyz encoding, dir
    encoding, MLP on the encodings, `volume_render`, `sample_pdf`, sort, then points, encoding,
    fine MLP and `volume_render` again), with the same params on the same rays. The two outputs
    are checked to agree (rtol = atol = 1e-5, a sanity check before any timing). Also timed: the
    jitted training step (value and gradient of nerf_pl's coarse + fine MSE, random samples),
    without an optimizer update. Reported as rays/s and their ratio; the fused render's achieved
    GFLOP/s uses the analytic forward count on 64 + 192 = 256 MLP evaluations per ray.

(c) Sampling efficiency on an analytic scene. Each ray (1000; --quick 200) crosses 1-3 Gaussian
    density bumps sigma_k(t) = a_k exp(-(t - mu_k)^2 / (2 s_k^2)) with widths s_k log-uniform in
    [0.002, 0.2] (a tenth of the 192-sample spacing to ten times it: thin surfaces to smooth
    media), optical depths a_k s_k sqrt(2 pi) log-uniform in [0.5, 20], centres at least 10 s_k
    inside [near, far] = [2, 6], and constant colours c_k; the colour at t is the density-weighted
    mean sum_k sigma_k c_k / sum_k sigma_k (GIRAFFE's composition, arXiv 2011.12100, Eq. 4).
    Exact colour: C = int_near^far T(t) sum_k sigma_k(t) c_k dt with T(t) = exp(-int_near^t sigma)
    in closed form (erf); the outer integral is a float64 trapezoid on 100,001 points (--quick
    20,001), its error estimated by the same rule on every other point, and int T sigma dt is
    checked against 1 - T(far). Estimators (float32, the core functions with sigma and c evaluated
    exactly at the samples, black background):
        uniform S           `sample_along_rays` with S samples, `volume_render`.
        hier Nc+Nf          nerf_pl's: Nc stratified samples, `volume_render` weights, `sample_pdf`
                            of Nf samples from the midpoints and weights[1:-1], `volume_render` of
                            all Nc + Nf sorted samples of the exact scene.
    The coarse pass of NeRF queries its own coarse network, trained through the Nc-sample
    quadrature, so its density is only as sharp as Nc samples can resolve; here it sees the
    scene prefiltered to that resolution (every bump widened to sqrt(s^2 + (spacing/2)^2) with its
    optical depth kept, spacing = (far - near) / (Nc - 1)). `hier_64_128_same` lets the coarse
    pass see the exact scene instead: surfaces thinner than the coarse spacing then go unseen by
    the coarse pass and so get no fine samples.
    "Equal field evaluations": nerf_pl's fine network re-evaluates the Nc coarse points, so
    hier 64+128 costs 64 + 192 = 256 network evaluations for 192 composited samples. It is
    compared with uniform 192 (equal composited samples) and uniform 256 (equal evaluations), and
    hier 48+96 (48 + 144 = 192 evaluations) with uniform 192. Deterministic (perturb=False,
    `sample_pdf(deterministic=True)`) and stratified-random (mean over seeds: 8; --quick 2)
    variants; uniform 4096 checks that the estimator converges to the reference. Errors are over
    all rays and channels: MAE = mean |C_hat - C|, RMSE = sqrt(mean (C_hat - C)^2).
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import time_interleaved, xla_flops
from scipy.special import erf

from jaxzoo.nerf import render
from jaxzoo.nerf.model import NeRF, NeRFMLP

NEAR, FAR = 2.0, 6.0
GOAL_MLP_RATIO = 0.6
SIZES = {
    "full": dict(matmul=2048, points=65536, rays=256, repeats=5, min_time_s=0.2,
                 scene_rays=1000, seeds=8, quad_points=100_001),
    "quick": dict(matmul=512, points=2048, rays=16, repeats=3, min_time_s=0.02,
                  scene_rays=200, seeds=2, quad_points=20_001),
}
# Part (c): (name, coarse or uniform samples, fine samples or None, field seen by the coarse pass).
SAMPLERS = (("uniform_192", 192, None, None), ("uniform_256", 256, None, None),
            ("hier_64_128", 64, 128, "prefiltered"), ("hier_48_96", 48, 96, "prefiltered"),
            ("hier_64_128_same", 64, 128, "scene"), ("uniform_4096", 4096, None, None))
RATIOS = (("uniform_192", "hier_64_128"), ("uniform_256", "hier_64_128"),
          ("uniform_192", "hier_48_96"), ("uniform_192", "hier_64_128_same"))


# ----------------------------------------------------------------------------- timing


# ----------------------------------------------------------------------------- (a) MLP


def mlp_layers(mlp: NeRFMLP):
    """[(fan_in, fan_out, encoded_fan_in)] of every Dense layer of `mlp`, in call order."""
    x_dim = 3 * (1 + 2 * mlp.xyz_freqs)
    d_dim = 3 * (1 + 2 * mlp.dir_freqs)
    layers = []
    for i in range(mlp.depth):
        fan_in = x_dim if i == 0 else mlp.width
        enc = x_dim if i == 0 else 0
        if i in mlp.skips:
            fan_in, enc = fan_in + x_dim, enc + x_dim
        layers.append((fan_in, mlp.width, enc))
    layers += [(mlp.width, 1, 0), (mlp.width, mlp.width, 0),
               (mlp.width + d_dim, mlp.width // 2, d_dim), (mlp.width // 2, 3, 0)]
    return layers


def mlp_flops_per_point(mlp: NeRFMLP) -> tuple[int, int]:
    """Analytic Dense FLOPs per point: (forward, forward + backward w.r.t. params)."""
    layers = mlp_layers(mlp)
    fwd = sum(2 * i * o for i, o, _ in layers)
    dx = sum(2 * (i - e) * o for i, o, e in layers)
    return fwd, 2 * fwd + dx


def random_points(key, n):
    kx, kd = jax.random.split(key)
    xyz = jax.random.uniform(kx, (n, 3), jnp.float32, -1.0, 1.0)
    dirs = jax.random.normal(kd, (n, 3), jnp.float32)
    return xyz, dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)


def bench_mlp(size: dict, repeats: int) -> dict:
    mlp = NeRFMLP()
    xyz, dirs = random_points(jax.random.key(1), size["points"])
    params = mlp.init(jax.random.key(0), xyz[:1], dirs[:1])

    def forward(p, x, d):
        return mlp.apply(p, x, d)

    def loss(p, x, d):
        rgb, sigma = mlp.apply(p, x, d)
        return jnp.sum(rgb) + jnp.sum(sigma)

    fwd_bwd = jax.grad(loss)
    # The machine's fp32 matmul rate: the best of a few square sizes (one size alone can land on
    # a cache-unfriendly shape and understate the peak).
    sizes = sorted({size["matmul"] // 4, size["matmul"] // 2, size["matmul"]})
    mats = {n: tuple(jax.random.normal(k, (n, n), jnp.float32) for k in jax.random.split(jax.random.key(n)))
            for n in sizes}
    matmul = jax.jit(jnp.matmul)
    fwd_j, fwd_bwd_j = jax.jit(forward), jax.jit(fwd_bwd)
    t = time_interleaved({**{f"matmul_{n}": (lambda n=n: matmul(*mats[n])) for n in sizes},
                          "fwd": lambda: fwd_j(params, xyz, dirs),
                          "fwd_bwd": lambda: fwd_bwd_j(params, xyz, dirs)}, repeats, size["min_time_s"])

    f_fwd, f_fwd_bwd = mlp_flops_per_point(mlp)
    p = size["points"]
    xla_fwd, xla_fwd_bwd = xla_flops(fwd_j, params, xyz, dirs), xla_flops(fwd_bwd_j, params, xyz, dirs)
    rates = {n: 2 * n**3 / t[f"matmul_{n}"] / 1e9 for n in sizes}
    n = max(rates, key=rates.get)
    peak = rates[n]
    res = dict(matmul_n=n, matmul_ms=1e3 * t[f"matmul_{n}"], matmul_gflops=peak, mlp_points=p,
               mlp_params=sum(x.size for x in jax.tree.leaves(params)))
    for name, flops, xla in (("fwd", f_fwd, xla_fwd), ("fwd_bwd", f_fwd_bwd, xla_fwd_bwd)):
        gflops = p * flops / t[name] / 1e9
        res.update({f"mlp_{name}_flops_per_point": flops,
                    f"mlp_{name}_xla_flops_per_point": None if xla is None else xla / p,
                    f"mlp_{name}_ms": 1e3 * t[name], f"mlp_{name}_gflops": gflops,
                    f"mlp_{name}_ratio": gflops / peak,
                    f"mlp_{name}_goal_met": bool(gflops / peak >= GOAL_MLP_RATIO)})
    return res


# ----------------------------------------------------------------------------- (b) render


def mlp_on_encoding(p, x_enc, d_enc, depth, skips):
    """`NeRFMLP` from its params on already-encoded inputs: x_enc [..., S, 63], d_enc [..., 27]."""
    def dense(name, h):
        return h @ p[name]["kernel"] + p[name]["bias"]

    h = x_enc
    for i in range(depth):
        if i in skips:
            h = jnp.concatenate([x_enc, h], axis=-1)
        h = jax.nn.relu(dense(f"xyz_encoding_{i + 1}", h))
    sigma = dense("sigma", h)[..., 0]
    feat = dense("xyz_encoding_final", h)
    d_enc = jnp.broadcast_to(d_enc[..., None, :], feat.shape[:-1] + d_enc.shape[-1:])
    h = jax.nn.relu(dense("dir_encoding", jnp.concatenate([feat, d_enc], axis=-1)))
    return jax.nn.sigmoid(dense("rgb", h)), sigma


def make_staged_render(model: NeRF):
    """The deterministic coarse + fine render of `model`, one small jitted call per stage."""
    stage = dict(
        samples=jax.jit(lambda near, far: render.sample_along_rays(
            None, near, far, model.num_coarse, perturb=False, lindisp=model.lindisp)),
        points=jax.jit(lambda o, d, z: o[..., None, :] + d[..., None, :] * z[..., :, None]),
        enc_xyz=jax.jit(lambda x: render.frequency_encoding(x, model.xyz_freqs)),
        enc_dir=jax.jit(lambda d: render.frequency_encoding(d, model.dir_freqs)),
        mlp=jax.jit(functools.partial(mlp_on_encoding, depth=model.depth, skips=tuple(model.skips))),
        composite=jax.jit(lambda sigma, rgb, z, d: render.volume_render(
            sigma, rgb, z, d, white_background=model.white_background)),
        pdf=jax.jit(lambda z, w: render.sample_pdf(
            None, 0.5 * (z[..., 1:] + z[..., :-1]), w[..., 1:-1], model.num_fine, deterministic=True)),
        sort=jax.jit(lambda a, b: jnp.sort(jnp.concatenate([a, b], axis=-1), axis=-1)),
    )

    def one_pass(p, rays_o, rays_d, d_enc, z):
        x_enc = stage["enc_xyz"](stage["points"](rays_o, rays_d, z))
        rgb, sigma = stage["mlp"](p, x_enc, d_enc)
        return stage["composite"](sigma, rgb, z, rays_d)

    def staged(params, rays_o, rays_d, near, far):
        p = params["params"]
        d_enc = stage["enc_dir"](rays_d)
        z_coarse = stage["samples"](near, far)
        coarse = one_pass(p["coarse"], rays_o, rays_d, d_enc, z_coarse)
        z_all = stage["sort"](z_coarse, stage["pdf"](z_coarse, coarse.weights))
        return {"coarse": coarse, "fine": one_pass(p["fine"], rays_o, rays_d, d_enc, z_all)}

    return staged


def random_rays(key, n):
    """Rays from origins on a sphere of radius 4 aimed near the centre; unit directions."""
    ko, kd = jax.random.split(key)
    o = jax.random.normal(ko, (n, 3), jnp.float32)
    o = 4.0 * o / jnp.linalg.norm(o, axis=-1, keepdims=True)
    d = -o / 4.0 + 0.3 * jax.random.normal(kd, (n, 3), jnp.float32)
    return o, d / jnp.linalg.norm(d, axis=-1, keepdims=True)


def bench_render(size: dict, repeats: int, peak_gflops: float) -> dict:
    model = NeRF()
    r = size["rays"]
    rays_o, rays_d = random_rays(jax.random.key(3), r)
    near, far = jnp.full((r,), NEAR, jnp.float32), jnp.full((r,), FAR, jnp.float32)
    target = jax.random.uniform(jax.random.key(4), (r, 3), jnp.float32)
    params = model.init(jax.random.key(0), rays_o[:1], rays_d[:1], NEAR, FAR)
    fused = jax.jit(model.apply)
    staged = make_staged_render(model)

    def loss(p, key):  # nerf_pl's loss: MSE of the coarse plus MSE of the fine colour
        out = model.apply(p, rays_o, rays_d, near, far, key)
        return sum(jnp.mean((res.rgb - target) ** 2) for res in out.values())

    train = jax.jit(jax.value_and_grad(loss))
    key = jax.random.key(5)

    # Sanity check (not timed): both renders give the same outputs.
    out_f = fused(params, rays_o, rays_d, near, far)
    out_s = staged(params, rays_o, rays_d, near, far)
    max_diff = 0.0
    for pass_ in ("coarse", "fine"):
        for field in ("rgb", "depth", "acc", "weights"):
            a, b = np.asarray(getattr(out_f[pass_], field)), np.asarray(getattr(out_s[pass_], field))
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{pass_}.{field}")
            max_diff = max(max_diff, float(np.max(np.abs(a - b))))

    t = time_interleaved({"fused": lambda: fused(params, rays_o, rays_d, near, far),
                          "staged": lambda: staged(params, rays_o, rays_d, near, far),
                          "train": lambda: train(params, key)}, repeats, size["min_time_s"])
    evals_per_ray = model.num_coarse + model.num_coarse + model.num_fine
    f_fwd, _ = mlp_flops_per_point(NeRFMLP())
    fused_gflops = r * evals_per_ray * f_fwd / t["fused"] / 1e9
    return dict(render_rays=r, render_max_abs_diff=max_diff,
                render_fused_rays_per_s=r / t["fused"], render_staged_rays_per_s=r / t["staged"],
                render_ratio=t["staged"] / t["fused"], train_rays_per_s=r / t["train"],
                render_fused_gflops=fused_gflops, render_fused_peak_ratio=fused_gflops / peak_gflops)


# ----------------------------------------------------------------------------- (c) sampling


def make_scene(rng: np.random.Generator, num_rays: int, max_bumps: int = 3) -> dict:
    """Per-ray Gaussian bumps: mu, s, a [R, K] (a = 0 for unused slots), colour [R, K, 3]."""
    k = rng.integers(1, max_bumps + 1, size=num_rays)
    used = np.arange(max_bumps)[None, :] < k[:, None]
    s = np.exp(rng.uniform(np.log(0.002), np.log(0.2), (num_rays, max_bumps)))
    depth = np.exp(rng.uniform(np.log(0.5), np.log(20.0), (num_rays, max_bumps)))
    a = np.where(used, depth / (s * np.sqrt(2 * np.pi)), 0.0)
    mu = rng.uniform(NEAR + 10 * s, FAR - 10 * s)
    colour = rng.uniform(0.0, 1.0, (num_rays, max_bumps, 3))
    return dict(mu=mu, s=s, a=a, colour=colour)


def exact_colour(scene: dict, quad_points: int, chunk: int = 16):
    """Float64 reference: (C [R, 3], C on every other point [R, 3], max |int T sigma - (1 - T(far))|)."""
    t = np.linspace(NEAR, FAR, quad_points)
    outs, halves, acc_err = [], [], 0.0
    for lo in range(0, scene["mu"].shape[0], chunk):
        mu, s, a = (scene[n][lo:lo + chunk, :, None] for n in ("mu", "s", "a"))  # [r, K, 1]
        col = scene["colour"][lo:lo + chunk]  # [r, K, 3]
        z = (t - mu) / s  # [r, K, Q]
        sig_k = a * np.exp(-0.5 * z**2)
        # Optical depth int_near^t sigma_k, closed form.
        cum = lambda x: a * s * np.sqrt(np.pi / 2) * erf((x - mu) / (np.sqrt(2) * s))
        tau = np.sum(cum(t) - cum(NEAR), axis=1)  # [r, Q]
        trans = np.exp(-tau)
        integrand = trans[..., None] * np.einsum("rkq,rkc->rqc", sig_k, col)  # [r, Q, 3]
        outs.append(np.trapezoid(integrand, t, axis=1))
        halves.append(np.trapezoid(integrand[:, ::2], t[::2], axis=1))
        acc = np.trapezoid(trans * sig_k.sum(1), t, axis=1)
        acc_err = max(acc_err, float(np.max(np.abs(acc - (1.0 - trans[:, -1])))))
    return np.concatenate(outs), np.concatenate(halves), acc_err


def analytic_field(scene, z):
    """sigma [R, S] and colour [R, S, 3] of the scene at distances z [R, S]."""
    g = scene["a"][:, None, :] * jnp.exp(
        -0.5 * ((z[..., None] - scene["mu"][:, None, :]) / scene["s"][:, None, :]) ** 2)  # [R, S, K]
    sigma = jnp.sum(g, axis=-1)
    num = jnp.einsum("rsk,rkc->rsc", g, scene["colour"])
    rgb = jnp.where(sigma[..., None] > 0, num / jnp.where(sigma > 0, sigma, 1.0)[..., None], 0.0)
    return sigma, rgb


def prefiltered(scene, num_coarse):
    """The scene seen by a coarse pass of `num_coarse` samples: every bump widened to
    s_c = sqrt(s^2 + (spacing / 2)^2), spacing = (far - near) / (num_coarse - 1), with its optical
    depth a s sqrt(2 pi) and colour kept (a stand-in for NeRF's separately trained coarse network)."""
    half = 0.5 * (FAR - NEAR) / (num_coarse - 1)
    s_c = jnp.sqrt(scene["s"] ** 2 + half**2)
    return dict(scene, s=s_c, a=scene["a"] * scene["s"] / s_c)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def estimate_colour(scene, key, num_coarse, num_fine, coarse_field):
    """Colour [R, 3] by uniform (num_fine None) or hierarchical sampling; key None = deterministic.

    coarse_field: "scene" (the coarse pass sees the exact scene) or "prefiltered" (`prefiltered`).
    """
    train = key is not None
    keys = jax.random.split(key, 2) if train else (None, None)
    r = scene["mu"].shape[0]
    near, far = jnp.full((r,), NEAR, jnp.float32), jnp.full((r,), FAR, jnp.float32)
    dirs = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0], jnp.float32), (r, 3))
    z = render.sample_along_rays(keys[0], near, far, num_coarse, perturb=train)
    if num_fine is None:
        return render.volume_render(*analytic_field(scene, z), z, dirs).rgb
    seen = prefiltered(scene, num_coarse) if coarse_field == "prefiltered" else scene
    coarse = render.volume_render(*analytic_field(seen, z), z, dirs)
    z_fine = render.sample_pdf(keys[1], 0.5 * (z[..., 1:] + z[..., :-1]), coarse.weights[..., 1:-1],
                               num_fine, deterministic=not train)
    z_all = jnp.sort(jnp.concatenate([z, z_fine], axis=-1), axis=-1)
    return render.volume_render(*analytic_field(scene, z_all), z_all, dirs).rgb


def bench_sampling(size: dict) -> dict:
    scene = make_scene(np.random.default_rng(0), size["scene_rays"])
    exact, exact_half, acc_err = exact_colour(scene, size["quad_points"])
    scene32 = {k: jnp.asarray(v, jnp.float32) for k, v in scene.items()}
    res = {"rays": size["scene_rays"], "seeds": size["seeds"], "quad_points": size["quad_points"],
           "reference_half_grid_max_abs_diff": float(np.max(np.abs(exact - exact_half))),
           "reference_acc_max_abs_err": acc_err, "deterministic": {}, "stratified": {}}
    for name, nc, nf, field in SAMPLERS:
        meta = dict(composited=nc + (nf or 0), evaluations=nc + (nc + nf if nf else 0))
        colour = lambda key: np.asarray(estimate_colour(scene32, key, nc, nf, field), np.float64)
        err = colour(None) - exact
        res["deterministic"][name] = dict(meta, mae=float(np.mean(np.abs(err))),
                                          rmse=float(np.sqrt(np.mean(err**2))))
        errs = [colour(jax.random.key(100 + i)) - exact for i in range(size["seeds"])]
        res["stratified"][name] = dict(meta, mae=float(np.mean([np.mean(np.abs(e)) for e in errs])),
                                       rmse=float(np.sqrt(np.mean([np.mean(e**2) for e in errs]))))
    res["ratios"] = {f"{u}/{h}": {v: {m: res[v][u][m] / res[v][h][m] for m in ("mae", "rmse")}
                                  for v in ("deterministic", "stratified")} for u, h in RATIOS}
    return res


# ----------------------------------------------------------------------------- report


def print_report(res: dict) -> None:
    goal = lambda ok: "met" if ok else "NOT met"
    print(f"\n(a) NeRF MLP, {res['mlp_points']} points, {res['mlp_params']:,} params; "
          f"peak = {res['matmul_n']}^2 fp32 matmul: {res['matmul_gflops']:.1f} GFLOP/s")
    print(f"{'':10}{'FLOP/pt':>12}{'XLA FLOP/pt':>14}{'ms':>10}{'GFLOP/s':>10}{'/ peak':>8}")
    for name in ("fwd", "fwd_bwd"):
        xla = res[f"mlp_{name}_xla_flops_per_point"]
        print(f"{name:10}{res[f'mlp_{name}_flops_per_point']:>12,}{'n/a' if xla is None else f'{xla:,.0f}':>14}"
              f"{res[f'mlp_{name}_ms']:>10.1f}{res[f'mlp_{name}_gflops']:>10.1f}{res[f'mlp_{name}_ratio']:>8.3f}"
              f"   (goal >= {GOAL_MLP_RATIO}: {goal(res[f'mlp_{name}_goal_met'])})")
    print(f"\n(b) NeRF render, {res['render_rays']} rays, 64 + 128 samples "
          f"(outputs agree, max |diff| {res['render_max_abs_diff']:.1e})")
    print(f"{'jitted render':24}{res['render_fused_rays_per_s']:>12.1f} rays/s   "
          f"({res['render_fused_gflops']:.1f} GFLOP/s, {res['render_fused_peak_ratio']:.3f} of peak)")
    print(f"{'staged render':24}{res['render_staged_rays_per_s']:>12.1f} rays/s")
    print(f"{'ratio jitted / staged':24}{res['render_ratio']:>12.3f}")
    print(f"{'jitted train step':24}{res['train_rays_per_s']:>12.1f} rays/s")
    s = res["sampling"]
    print(f"\n(c) colour error on {s['rays']} analytic rays (reference: {s['quad_points']}-point trapezoid, "
          f"half-grid diff {s['reference_half_grid_max_abs_diff']:.1e}, "
          f"|int T sigma - (1 - T(far))| {s['reference_acc_max_abs_err']:.1e})")
    print(f"{'sampler':16}{'samples':>8}{'evals':>7}{'MAE det':>11}{'RMSE det':>11}"
          f"{'MAE strat':>11}{'RMSE strat':>11}   (strat: mean over {s['seeds']} seeds)")
    for name, *_ in SAMPLERS:
        d, r = s["deterministic"][name], s["stratified"][name]
        print(f"{name:16}{d['composited']:>8}{d['evaluations']:>7}{d['mae']:>11.2e}{d['rmse']:>11.2e}"
              f"{r['mae']:>11.2e}{r['rmse']:>11.2e}")
    print(f"{'error ratio':28}{'MAE det':>9}{'RMSE det':>11}{'MAE strat':>11}{'RMSE strat':>11}")
    for key, v in s["ratios"].items():
        d, r = v["deterministic"], v["stratified"]
        print(f"{key:28}{d['mae']:>9.2f}{d['rmse']:>11.2f}{r['mae']:>11.2f}{r['rmse']:>11.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute on 2 CPU cores)")
    parser.add_argument("--repeats", type=int, default=0, help="timing rounds (default 5, --quick 3)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    size = dict(SIZES["quick" if args.quick else "full"])
    repeats = args.repeats or size["repeats"]
    print(f"devices: {jax.devices()}  sizes: {'quick' if args.quick else 'full'} {size}")
    result = dict(quick=args.quick, repeats=repeats, backend=jax.default_backend())
    t0 = time.perf_counter()
    result.update(bench_mlp(size, repeats))
    t1 = time.perf_counter()
    result.update(bench_render(size, repeats, result["matmul_gflops"]))
    t2 = time.perf_counter()
    result["sampling"] = bench_sampling(size)
    t3 = time.perf_counter()
    result["wall_s"] = dict(mlp=t1 - t0, render=t2 - t1, sampling=t3 - t2)
    print_report(result)
    print("\nwall time: " + ", ".join(f"{k} {v:.1f}s" for k, v in result["wall_s"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
