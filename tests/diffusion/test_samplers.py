"""Tests for jaxzoo.diffusion.samplers against closed-form Gaussian (and Gaussian-mixture) models.

For data x0 ~ N(mu, diag sd^2) the exact noise predictor is
``eps*(x_t, t) = (x_t - alpha mu) sigma / (alpha^2 sd^2 + sigma^2)`` (VP alpha, sigma), and
in VE coordinates ``z = x / alpha`` the probability-flow ODE ``dz/dsigma = (z - D)/sigma``
has the solution ``z(s) = mu + sqrt(sd^2 + s^2) / sqrt(sd^2 + s0^2) (z(s0) - mu)``.
Every sampler ends with ``x0 = D(z; sigma_min)`` at the smallest grid sigma, so the exact
reference is that flow from ``sigma(T-1)`` to ``sigma(0)`` followed by the same denoising.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from jaxzoo.diffusion import gaussian as dif
from jaxzoo.diffusion import samplers as smp

MU = (0.5, -0.3, 0.2, 0.0)
SD = (0.3, 0.5, 1.0, 0.7)


def _bc(a, x):
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def gaussian_eps_fn(schedule, mu=MU, sd=SD):
    mu, sd = jnp.asarray(mu), jnp.asarray(sd)

    def eps_fn(x, t):
        a, s = dif.alpha_sigma(schedule, t)  # int or fractional t
        a, s = _bc(a, x), _bc(s, x)
        return (x - a * mu) * s / (a * a * sd**2 + s * s)

    return eps_fn


def exact_pf_map(schedule, x_T, mu=MU, sd=SD):
    """Closed-form PF-ODE map from sigma(T-1) to sigma(0), then D(.; sigma(0))."""
    mu, sd = np.asarray(mu), np.asarray(sd)
    s0, s1 = float(schedule.sigmas[-1]), float(schedule.sigmas[0])
    z0 = np.asarray(x_T, np.float64) * np.sqrt(1 + s0**2)
    z1 = mu + np.sqrt(sd**2 + s1**2) / np.sqrt(sd**2 + s0**2) * (z0 - mu)
    return mu + sd**2 / (sd**2 + s1**2) * (z1 - mu)


def gmm_eps_fn(schedule, weights, means, sd):
    """Exact eps for a mixture of isotropic Gaussians: posterior-weighted component eps."""
    logw, means, sd = jnp.log(jnp.asarray(weights)), jnp.asarray(means), jnp.asarray(sd)

    def eps_fn(x, t):
        a, s = dif.alpha_sigma(schedule, t)
        a, s = a[:, None, None], s[:, None, None]
        var = a * a * sd[None, :, None] ** 2 + s * s  # [B, K, 1]
        diff = x[:, None, :] - a * means[None]  # [B, K, d]
        logp = logw - 0.5 * jnp.sum(diff**2 / var, -1) - 0.5 * x.shape[-1] * jnp.log(var[..., 0])
        post = jax.nn.softmax(logp, axis=-1)[..., None]
        return jnp.sum(post * diff * s / var, axis=1)

    return eps_fn


def _max_err(x, ref):
    return float(np.max(np.abs(np.asarray(x, np.float64) - ref)))


# ----------------------------------------------------------------------------- deterministic


def test_probability_flow_ode_reference_matches_closed_form():
    with jax.enable_x64(True):
        sch = dif.make_schedule("linear")
        x_T = jax.random.normal(jax.random.key(0), (8, 4), jnp.float64)
        # Without the final denoising it returns VP x at t_end = 0 (the closed-form flow).
        x, stats = smp.probability_flow_ode(gaussian_eps_fn(sch), x_T, sch, rtol=1e-8,
                                            atol=1e-8, final_denoise=False, return_stats=True)
        assert bool(stats["reached_end"]) and int(stats["rejected"]) < int(stats["accepted"])
        assert int(stats["nfe"]) == 1 + 6 * (int(stats["accepted"]) + int(stats["rejected"]))
        mu, sd = np.asarray(MU), np.asarray(SD)
        s0, s1 = float(sch.sigmas[-1]), float(sch.sigmas[0])
        z1 = mu + np.sqrt(sd**2 + s1**2) / np.sqrt(sd**2 + s0**2) * (
            np.asarray(x_T) * np.sqrt(1 + s0**2) - mu)
        assert _max_err(x, z1 / np.sqrt(1 + s1**2)) < 1e-6


slow = pytest.mark.slow
ORDERS = [  # method, step counts, allowed band for the least-squares log-log slope
    ("ddim", (20, 40, 80), (0.8, 1.3)),
    ("dpmpp_2m", (20, 40, 80), (1.6, 2.6)),
    pytest.param("euler", (20, 40, 80), (0.8, 1.3), marks=slow),
    pytest.param("heun", (20, 40, 80), (1.6, 2.6), marks=slow),
    pytest.param("dpmpp_3m", (40, 80, 160), (2.5, 3.6), marks=slow),
    # UniC raises the order of UniP-2 by one (Zhao et al. 2023, Sec. 3).
    pytest.param("unipc", (40, 80, 160), (2.5, 3.6), marks=slow),
]


@pytest.mark.parametrize("method,steps,band", ORDERS)
def test_convergence_order_to_exact_pf_ode(method, steps, band):
    """Error vs steps on Karras sigmas (a smooth grid) for the linear schedule, in float64."""
    lo, hi = band
    with jax.enable_x64(True):
        sch = dif.make_schedule("linear")
        x_T = jax.random.normal(jax.random.key(0), (8, 4), jnp.float64)
        ref = exact_pf_map(sch, x_T)
        fn = gaussian_eps_fn(sch)
        errs = [_max_err(smp.sample(fn, x_T, None, sch, n, method=method,
                                    timestep_spacing="karras"), ref) for n in steps]
    assert all(e1 < e0 for e0, e1 in zip(errs, errs[1:])), errs
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert lo <= slope <= hi, (method, slope, errs)


@pytest.mark.parametrize("spacing", ["trailing", pytest.param("karras", marks=slow)])
def test_ten_step_accuracy_ranking(spacing):
    """At 10 steps (cosine schedule): DPM-Solver++(2M) error <= half of DDIM's, UniPC <= 2M.

    (On the linear schedule with "linspace" spacing the last step, t = 111 -> 0, is ~3.6 in
    log-SNR and the multistep methods extrapolate over it worse than DDIM; the ranking holds
    for grids without such a step.)"""
    with jax.enable_x64(True):
        sch = dif.make_schedule("cosine")
        x_T = jax.random.normal(jax.random.key(1), (64, 4), jnp.float64)
        ref = exact_pf_map(sch, x_T)
        fn = gaussian_eps_fn(sch)
        rms = {m: float(np.sqrt(np.mean((np.asarray(smp.sample(
            fn, x_T, None, sch, 10, method=m, timestep_spacing=spacing)) - ref) ** 2)))
            for m in ("ddim", "dpmpp_2m", "unipc")}
    assert rms["dpmpp_2m"] <= 0.5 * rms["ddim"], rms
    assert rms["unipc"] <= rms["dpmpp_2m"], rms


@slow
def test_samplers_agree_with_adaptive_reference_on_gaussian_mixture():
    with jax.enable_x64(True):
        sch = dif.make_schedule("linear")
        fn = gmm_eps_fn(sch, (0.3, 0.7), ((-1.5, 0.5), (1.0, -0.5)), (0.4, 0.6))
        x_T = jax.random.normal(jax.random.key(2), (16, 2), jnp.float64)
        ref = np.asarray(smp.probability_flow_ode(fn, x_T, sch, rtol=1e-7, atol=1e-7))
        for method in ("dpmpp_3m", "unipc"):
            x = smp.sample(fn, x_T, None, sch, 100, method=method, timestep_spacing="karras")
            assert _max_err(x, ref) < 2e-3, method


def test_euler_is_ddim_eta0_and_predictions_agree():
    sch = dif.make_schedule("linear")
    x_T = jax.random.normal(jax.random.key(3), (6, 4))
    eps_fn = gaussian_eps_fn(sch)

    def x0_fn(x, t):
        return dif.convert_prediction(eps_fn(x, t), x, t, sch, "eps", "x0")

    def v_fn(x, t):
        return dif.convert_prediction(eps_fn(x, t), x, t, sch, "eps", "v")

    ref = smp.sample(eps_fn, x_T, None, sch, 12, method="ddim")
    np.testing.assert_allclose(smp.sample(eps_fn, x_T, None, sch, 12, method="euler"), ref,
                               rtol=1e-4, atol=1e-4)
    # Every method converts through the same denoiser wrapper; one multistep method suffices.
    for method in ("dpmpp_2m",):
        base = smp.sample(eps_fn, x_T, None, sch, 12, method=method)
        for pred, fn in (("x0", x0_fn), ("v", v_fn)):
            np.testing.assert_allclose(smp.sample(fn, x_T, None, sch, 12, method=method,
                                                  prediction=pred), base, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", smp.METHODS)
def test_single_step_returns_the_x0_prediction(method):
    """With one step every method jumps straight to sigma = 0, i.e. returns D(x_T)."""
    sch = dif.make_schedule("linear")
    x_T = jax.random.normal(jax.random.key(16), (5, 4))
    x = smp.sample(gaussian_eps_fn(sch), x_T, jax.random.key(0), sch, 1, method=method,
                   timestep_spacing="trailing")
    mu, sd, s0 = np.asarray(MU), np.asarray(SD), float(sch.sigmas[-1])
    expected = mu + sd**2 / (sd**2 + s0**2) * (np.asarray(x_T) * np.sqrt(1 + s0**2) - mu)
    np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-4)


def test_batched_equals_per_item():
    sch = dif.make_schedule("cosine")
    x_T = jax.random.normal(jax.random.key(4), (4, 4))
    fn = gaussian_eps_fn(sch)
    for method in ("dpmpp_2m", "unipc"):
        batched = smp.sample(fn, x_T, None, sch, 8, method=method, timestep_spacing="trailing")
        per = [smp.sample(fn, x_T[i:i + 1], None, sch, 8, method=method,
                          timestep_spacing="trailing") for i in range(4)]
        np.testing.assert_allclose(batched, np.concatenate(per), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- stochastic


def _moment_tolerances(sd, n):
    """5 standard errors of the sample mean and covariance of N(mu, diag sd^2), n draws."""
    sd = np.asarray(sd)
    cov = np.diag(sd**2)
    se_cov = np.sqrt((cov**2 + np.outer(sd**2, sd**2)) / n)
    return 5 * sd / np.sqrt(n), 5 * se_cov


def test_ddpm_ancestral_matches_gaussian_moments():
    mu, sd, n = (1.0, -0.5, 0.0), (0.6, 1.0, 1.5), 2000
    sch = dif.make_schedule("linear")
    x_T = jax.random.normal(jax.random.key(5), (n, 3))
    x = np.asarray(smp.sample(gaussian_eps_fn(sch, mu, sd), x_T, jax.random.key(6), sch, 1000,
                              method="ddpm"), np.float64)
    tol_mean, tol_cov = _moment_tolerances(sd, n)
    assert np.all(np.abs(x.mean(0) - mu) < tol_mean), x.mean(0)
    # "Fixed small" posterior variance under-disperses slightly: <= 1.5% of the variance
    # for these sd (computed from the linear-Gaussian recursion), added to the tolerance.
    bias = 0.015 * np.diag(np.asarray(sd) ** 2)
    assert np.all(np.abs(np.cov(x.T) - np.diag(np.asarray(sd) ** 2)) < tol_cov + bias), np.cov(x.T)


def test_ddim_eta1_is_ddpm():
    sch = dif.make_schedule("linear")
    fn = gaussian_eps_fn(sch)
    x_T = jax.random.normal(jax.random.key(7), (5, 4))
    key = jax.random.key(8)
    a = smp.sample(fn, x_T, key, sch, 20, method="ddpm")
    b = smp.sample(fn, x_T, key, sch, 20, method="ddim", eta=1.0)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    c = smp.sample(fn, x_T, jax.random.key(9), sch, 20, method="ddpm")
    assert float(jnp.max(jnp.abs(a - c))) > 1e-2  # the key matters


@pytest.mark.parametrize("eta", [0.3, 0.7])
def test_ddim_eta_step_matches_the_ddim_posterior(eta):
    """Every DDIM step with 0 < eta < 1 against Song et al. 2021 (2010.02502), Eq. 12 and 16,
    in VP form: x_{t-1} = sqrt(a') x0 + sqrt(1 - a' - s^2) eps + s z with
    s = eta sqrt((1 - a') / (1 - a)) sqrt(1 - a / a'), where (x0, eps) are the network's
    predictions at x_t. Given each recorded input x_t, the residual x_{t-1} - mean divided by s
    must be standard normal noise, independent of the predictions: its mean, variance and
    correlation with eps are checked to 5 standard errors over n = 4000 x 4 draws per step."""
    sch = dif.make_schedule("linear")
    T = sch.num_train_steps
    mu, sd = np.asarray(MU), np.asarray(SD)

    def eps_np(x, t):  # gaussian_eps_fn in NumPy, integer t
        a, s = np.sqrt(abar[t])[:, None], np.sqrt(1 - abar[t])[:, None]
        return (x - a * mu) * s / (a * a * sd**2 + s * s)

    abar = np.exp(np.cumsum(np.log1p(-np.linspace(1e-4, 0.02, T))))  # DDPM's linear schedule
    fn, calls = _recording(gaussian_eps_fn(sch))
    n = 4000
    x_T = jax.random.normal(jax.random.key(19), (n, 4))
    smp.sample(fn, x_T, jax.random.key(20), sch, 4, method="ddim", eta=eta)
    calls.sort(key=lambda c: -int(c[1][0]))
    ts = [int(t[0]) for _, t in calls]
    assert ts == [750, 500, 250, 0]  # "leading", 4 of 1000; the last step (to 0) has no noise
    for i in range(len(ts) - 1):
        x, t = calls[i][0].astype(np.float64), calls[i][1]
        a, ap = abar[ts[i]], abar[ts[i + 1]]
        eps = eps_np(x, t)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        s = eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)
        mean = np.sqrt(ap) * x0 + np.sqrt(1 - ap - s**2) * eps
        z = ((calls[i + 1][0] - mean) / s).ravel()
        m = z.size
        # float32: the sampler's x carries ~1e-6 relative error; it must be far below s
        assert 1e-6 * np.abs(calls[i + 1][0]).max() / s < 1e-2
        assert abs(z.mean()) < 5 / np.sqrt(m), (ts[i], z.mean())
        assert abs(z.var() - 1) < 5 * np.sqrt(2 / m), (ts[i], z.var())
        corr = np.corrcoef(z, eps.ravel())[0, 1]
        assert abs(corr) < 5 / np.sqrt(m), (ts[i], corr)


@pytest.mark.parametrize("method", ["ddpm", "dpmpp_2m"])
def test_gaussian_mixture_proportions(method):
    weights, means, sd, n = (0.3, 0.7), ((-2.0, 0.0), (2.0, 0.5)), (0.4, 0.4), 2000
    sch = dif.make_schedule("linear")
    fn = gmm_eps_fn(sch, weights, means, sd)
    x_T = jax.random.normal(jax.random.key(10), (n, 2))
    steps, spacing = (1000, "leading") if method == "ddpm" else (25, "karras")
    x = np.asarray(smp.sample(fn, x_T, jax.random.key(11), sch, steps, method=method,
                              timestep_spacing=spacing))
    nearest = np.argmin(((x[:, None] - np.asarray(means)[None]) ** 2).sum(-1), axis=1)
    frac = np.mean(nearest == 0)
    assert abs(frac - weights[0]) < 4.5 * np.sqrt(weights[0] * weights[1] / n), frac


# ----------------------------------------------------------------------------- guidance, threshold


def test_guidance_inside_sampler():
    sch = dif.make_schedule("linear")
    cond_fn = gaussian_eps_fn(sch, mu=(1.0, 1.0, 1.0, 1.0))
    uncond_fn = gaussian_eps_fn(sch, mu=(0.0, 0.0, 0.0, 0.0))
    pair = lambda x, t: (cond_fn(x, t), uncond_fn(x, t))
    x_T = jax.random.normal(jax.random.key(12), (4, 4))
    for method in ("ddim", "unipc"):
        only_cond = smp.sample(cond_fn, x_T, None, sch, 10, method=method)
        # Bitwise equal at the op level (see test_diffusion); allow 1-ulp fusion differences.
        np.testing.assert_allclose(
            smp.sample(pair, x_T, None, sch, 10, method=method, guidance_scale=1.0), only_cond,
            rtol=1e-6, atol=1e-6)
        mixed = lambda x, t: uncond_fn(x, t) + 3.0 * (cond_fn(x, t) - uncond_fn(x, t))
        np.testing.assert_allclose(
            smp.sample(pair, x_T, None, sch, 10, method=method, guidance_scale=3.0),
            smp.sample(mixed, x_T, None, sch, 10, method=method), rtol=1e-4, atol=1e-4)


def _np_static_threshold(x0):
    return np.clip(x0, -1.0, 1.0)


def _np_dynamic_threshold(x0, p=0.995):
    """Imagen (Saharia et al. 2022, Sec. 2.3): s = max(1, quantile_p |x0|) per sample,
    x0 <- clip(x0, -s, s) / s."""
    q = np.quantile(np.abs(x0.reshape(len(x0), -1)), p, axis=-1)  # NumPy's linear quantile
    s = np.maximum(q, 1.0).reshape((-1,) + (1,) * (x0.ndim - 1))
    return np.clip(x0, -s, s) / s


def _recording(fn):
    """Wraps a network so that every call's (x, t) is appended to a list, in call order."""
    calls = []

    def wrapped(x, t):
        jax.debug.callback(lambda x, t: calls.append((np.asarray(x), np.asarray(t))), x, t)
        return fn(x, t)

    return wrapped, calls


def _threshold_fake(T):
    """An x0-predicting network raw(x, t) = M + 0.05 (t / T) x whose per-sample ranges cover
    the thresholding cases: sample 0 mostly out of [-1, 1], sample 1 inside, sample 2 one
    outlier at 5 (the quantile interpolates towards it), sample 3 one value just above 1 with the
    0.995-quantile below 1 (so dynamic thresholding's s = max(1, q) = 1 is static clipping)."""
    rng = np.random.default_rng(17)
    m = np.stack([rng.normal(0.0, 2.0, (8, 8)), rng.uniform(-0.5, 0.5, (8, 8)),
                  rng.uniform(-0.8, 0.8, (8, 8)), rng.uniform(-0.2, 0.2, (8, 8))])
    m[2, 3, 4], m[3, 5, 1] = 5.0, 1.15

    def raw_np(x, t):
        return m + 0.05 * (t.astype(np.float64) / T)[:, None, None] * x

    def raw_jax(x, t):
        return jnp.asarray(m, x.dtype) + 0.05 * (t.astype(x.dtype) / T)[:, None, None] * x

    return raw_np, raw_jax


@pytest.mark.parametrize("threshold", ["static", "dynamic"])
def test_thresholded_x0_at_every_sampler_step(threshold):
    """DDIM (eta 0) with an x0-predicting fake network, in float64: from the network input x_i
    the sampler recorded at every step, the next input must be the DDIM update (Song et al. 2021,
    Eq. 12, eta = 0) built from the *thresholded* prediction, thresholded by an independent NumPy
    implementation, x_{i+1} = sqrt(a') x0 + sqrt(1 - a') (x_i - sqrt(a) x0) / sqrt(1 - a); the
    final sample is the thresholded prediction at the last step."""
    thr = {"static": _np_static_threshold, "dynamic": _np_dynamic_threshold}[threshold]
    with jax.enable_x64(True):
        sch = dif.make_schedule("linear")
        T = sch.num_train_steps
        raw_np, raw_jax = _threshold_fake(T)
        fn, calls = _recording(raw_jax)
        x_T = jax.random.normal(jax.random.key(13), (4, 8, 8), jnp.float64)
        out = np.asarray(smp.sample(fn, x_T, None, sch, 6, method="ddim", prediction="x0",
                                    timestep_spacing="trailing", threshold=threshold))
    abar = np.exp(np.cumsum(np.log1p(-np.linspace(1e-4, 0.02, T))))  # DDPM's linear schedule
    calls.sort(key=lambda c: -int(c[1][0]))
    ts = [int(t[0]) for _, t in calls]
    assert ts == [999, 832, 666, 499, 332, 166]  # "trailing", 6 of 1000
    np.testing.assert_allclose(calls[0][0], np.asarray(x_T), rtol=1e-12, atol=1e-12)
    covered = set()
    for i, (x, t) in enumerate(calls):
        raw = raw_np(x, t)
        x0 = thr(raw)
        q = np.quantile(np.abs(raw.reshape(4, -1)), 0.995, axis=-1)
        big = np.abs(raw.reshape(4, -1)).max(-1) > 1
        covered |= {("q>1",) * bool(any(q > 1)), ("q<1<max",) * bool(any((q < 1) & big))}
        if i + 1 < len(calls):
            a, ap = abar[ts[i]], abar[ts[i + 1]]
            eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
            expected = np.sqrt(ap) * x0 + np.sqrt(1 - ap) * eps
            np.testing.assert_allclose(calls[i + 1][0], expected, rtol=1e-11, atol=1e-11)
        else:
            np.testing.assert_allclose(out, x0, rtol=1e-12, atol=1e-12)
            # thresholding did change the prediction, differently from the other kind
            other = _np_dynamic_threshold if threshold == "static" else _np_static_threshold
            assert np.abs(x0 - raw).max() > 0.5 and np.abs(x0 - other(raw)).max() > 0.1
    assert covered >= {("q>1",), ("q<1<max",)}, covered


def test_thresholding_applies_to_every_methods_final_prediction():
    """All methods return D(z) at the last grid point: the thresholded x0 prediction there."""
    sch = dif.make_schedule("linear")
    raw_np, raw_jax = _threshold_fake(sch.num_train_steps)
    x_T = jax.random.normal(jax.random.key(18), (4, 8, 8))
    for method in ("dpmpp_2m", "heun"):
        fn, calls = _recording(raw_jax)
        out = smp.sample(fn, x_T, None, sch, 5, method=method, prediction="x0",
                         threshold="dynamic")
        x_last, t_last = min(calls, key=lambda c: int(c[1][0]))
        assert int(t_last[0]) == 0  # "leading": the last grid timestep is 0
        expected = _np_dynamic_threshold(raw_np(x_last.astype(np.float64), t_last))
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- compilation, API


@pytest.mark.parametrize("method", smp.METHODS)
def test_second_call_does_not_retrace(method):
    sch = dif.make_schedule("linear")
    base = gaussian_eps_fn(sch)
    traces, t_dtypes = [0], set()

    def fn(x, t):
        traces[0] += 1
        t_dtypes.add(t.dtype)
        assert t.shape == (x.shape[0],)
        return base(x, t)

    key = jax.random.key(0)
    x1 = smp.sample(fn, jnp.ones((3, 4)), key, sch, 6, method=method)
    first = traces[0]
    assert first >= 1 and np.all(np.isfinite(np.asarray(x1)))
    x2 = smp.sample(fn, jnp.zeros((3, 4)), jax.random.key(1), sch, 6, method=method)
    assert traces[0] == first
    assert not np.allclose(x1, x2)
    assert t_dtypes == {jnp.dtype(jnp.int32)}


def test_partial_params_and_fractional_timesteps_do_not_retrace():
    sch = dif.make_schedule("linear")
    traces, t_dtypes = [0], set()

    def apply(params, x, t):
        traces[0] += 1
        t_dtypes.add(t.dtype)
        return gaussian_eps_fn(sch, mu=params)(x, t)

    x_T = jax.random.normal(jax.random.key(14), (3, 4))
    a = smp.sample(Partial(apply, jnp.zeros(4)), x_T, None, sch, 5, method="heun",
                   timestep_spacing="karras")
    first = traces[0]
    b = smp.sample(Partial(apply, jnp.ones(4)), x_T, None, sch, 5, method="heun",
                   timestep_spacing="karras")
    assert traces[0] == first and not np.allclose(a, b)
    assert t_dtypes == {jnp.dtype(jnp.float32)}


def test_gradients_through_sampler_are_finite():
    sch = dif.make_schedule("cosine")
    fn = gaussian_eps_fn(sch)
    x_T = jax.random.normal(jax.random.key(15), (2, 4))
    for method in ("dpmpp_3m", "heun"):
        g = jax.grad(lambda x: jnp.sum(smp.sample(fn, x, None, sch, 6, method=method,
                                                  timestep_spacing="trailing")))(x_T)
        assert np.all(np.isfinite(np.asarray(g))), method


def test_bad_sampler_inputs():
    sch = dif.make_schedule("linear")
    fn = gaussian_eps_fn(sch)
    x_T = jnp.zeros((2, 4))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="ddpm.*unipc"):
        smp.sample(fn, x_T, key, sch, 5, method="plms")
    with pytest.raises(ValueError, match="karras"):
        smp.sample(fn, x_T, key, sch, 5, timestep_spacing="cosine")
    with pytest.raises(ValueError, match="dynamic"):
        smp.sample(fn, x_T, key, sch, 5, threshold="soft")
    with pytest.raises(ValueError, match="eta"):
        smp.sample(fn, x_T, key, sch, 5, method="euler", eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        smp.sample(fn, x_T, key, sch, 5, method="ddim", eta=1.5)
    with pytest.raises(ValueError, match="key"):
        smp.sample(fn, x_T, None, sch, 5, method="ddpm")
    with pytest.raises(ValueError, match="prediction"):
        smp.sample(fn, x_T, key, sch, 5, prediction="score")
    with pytest.raises(ValueError, match="num_steps"):
        smp.sample(fn, x_T, key, sch, 0)
    with pytest.raises(ValueError, match="callable"):
        smp.sample("unet", x_T, key, sch, 5)
