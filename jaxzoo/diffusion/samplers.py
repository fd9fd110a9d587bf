"""Diffusion samplers and a reference probability-flow ODE solver, pure jax.numpy.

Conventions are those of :mod:`jaxzoo.diffusion.gaussian` (VP ``x_t = alpha_t x_0 + sigma_t
eps``; VE ``sigma = sigma_t / alpha_t``; batch-leading ``x`` ``[B, ...]``). In addition:

* ``denoise_fn(x, t) -> out`` is the network: ``x`` ``[B, ...]`` in VP coordinates, ``t``
  ``[B]`` timesteps (int32 for the integer spacings, floating point for Karras sigmas and
  for the ODE solver), ``out`` ``[B, ...]`` in the space named by ``prediction``
  (``"eps" | "x0" | "v"``). With classifier-free guidance (``guidance_scale`` given) it
  returns the pair ``(cond, uncond)`` instead; the pair is combined by
  :func:`~jaxzoo.diffusion.gaussian.classifier_free_guidance` in the prediction space.
* A sampler walks a grid of ``n = num_steps`` noise levels ``sigma_0 > ... > sigma_{n-1}``
  followed by ``sigma_n = 0``; step ``i`` goes from ``sigma_i`` to ``sigma_{i+1}`` and
  evaluates the network at timestep ``t_i`` (``sigma_i = t_to_sigma(t_i)``). The last step
  lands on the clean sample (the "final alpha-bar = 1" of diffusers), so every method
  returns ``x0 = D(x, sigma_{n-1})`` after a first-order final step.
* Internally every method integrates in VE coordinates ``z = x_t / alpha_t = x_0 + sigma
  eps`` with the denoiser ``D(z; sigma)`` (the x0 prediction, after guidance and
  thresholding); there the probability-flow ODE of Song et al. 2021 (arXiv 2011.13456,
  Eq. 13) for the VP SDE ``dx = f_t(x) dt + g_t dw`` reads ``dz / dsigma = (z - D) /
  sigma`` (Karras et al. 2022, arXiv 2206.00364, Eq. 1 and 3, ``s(t) = 1``). The network
  sees ``x = z / sqrt(1 + sigma^2)``; at ``sigma = 0``, ``z = x``.
* Each method is one ``lax.scan`` over steps inside one ``jax.jit``; ``denoise_fn`` is
  passed as a ``jax.tree_util.Partial`` pytree, so repeated calls with the same callable,
  shapes and static options reuse the compiled sampler. Pass
  ``jax.tree_util.Partial(apply_fn, params)`` to change parameters without recompiling.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.tree_util import Partial

from jaxzoo.diffusion.gaussian import (PREDICTIONS, SPACINGS, classifier_free_guidance,
                                       dynamic_threshold, karras_sigmas, sigma_to_t,
                                       static_threshold, t_to_sigma, timesteps, x0_and_eps)

__all__ = ["METHODS", "SAMPLE_SPACINGS", "probability_flow_ode", "sample", "step_grid"]

METHODS = ("ddpm", "ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc")
SAMPLE_SPACINGS = SPACINGS + ("karras",)
THRESHOLDS = (None, "static", "dynamic")


def _check(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")


def step_grid(schedule, num_steps, spacing="leading"):
    """Timesteps ``[n]`` and VE sigmas ``[n + 1]`` (last one 0) a sampler walks.

    Integer spacings (see :func:`~jaxzoo.diffusion.gaussian.timesteps`) use the table sigmas
    of those timesteps. ``"karras"`` uses Karras Eq. 5 (rho 7) between the schedule's
    smallest and largest sigma and maps each sigma to a fractional timestep with
    :func:`~jaxzoo.diffusion.gaussian.sigma_to_t` (log-sigma interpolation).
    """
    _check("timestep_spacing", spacing, SAMPLE_SPACINGS)
    if spacing == "karras":
        sig = karras_sigmas(schedule.sigmas[0], schedule.sigmas[-1], num_steps)
        ts = sigma_to_t(schedule, sig)
    else:
        ts = timesteps(schedule.num_train_steps, num_steps, spacing)
        sig = schedule.sigmas[ts]
    return ts, jnp.concatenate([sig, jnp.zeros((1,), sig.dtype)])


def _make_denoiser(fn, schedule, batch, prediction, guided, scale, rescale, threshold):
    """``D(z, sigma, t) -> x0`` in VE coordinates (guidance and thresholding applied)."""

    def denoise(z, sigma, t):
        alpha = 1.0 / jnp.sqrt(1.0 + sigma * sigma)
        x = z * alpha
        out = fn(x, jnp.broadcast_to(t, (batch,)))
        if guided:
            cond, uncond = out
            out = classifier_free_guidance(cond, uncond, scale, rescale)
        x0, _ = x0_and_eps(out.astype(z.dtype), x, alpha, sigma * alpha, prediction)
        if threshold == "static":
            x0 = static_threshold(x0)
        elif threshold == "dynamic":
            x0 = dynamic_threshold(x0)
        return x0.astype(z.dtype)

    return denoise


# ----------------------------------------------------------------------------- step rules
# Each takes (D, z0, sigmas [n+1], keys [n] or None, eta) with D(z, i) the denoiser at
# grid point i, and returns z at sigma_n = 0.


def _scan(body, carry, n, keys=None, with_keys=False):
    idx = jnp.arange(n)
    return lax.scan(body, carry, (idx, keys) if with_keys else idx)[0]


def _ddpm(D, z, sig, keys, eta):
    """Ancestral DDPM step (Ho et al. 2020, 2006.11239, Eq. 6-7, sigma_t^2 = beta-tilde),
    generalised to skipped steps: posterior ``q(z_{i+1} | z_i, x0)`` of the VE process,
    mean ``x0 + r^2 (z - x0)``, std ``sigma_{i+1} sqrt(1 - r^2)``, ``r = sigma_{i+1} /
    sigma_i`` (the VP formulas divided by ``alpha_{i+1}``)."""

    def body(z, xs):
        i, key = xs
        s, sp = sig[i], sig[i + 1]
        x0 = D(z, i)
        r2 = (sp / s) ** 2
        noise = jax.random.normal(key, z.shape, z.dtype)
        return x0 + r2 * (z - x0) + sp * jnp.sqrt(1.0 - r2) * noise, None

    return _scan(body, z, sig.shape[0] - 1, keys, with_keys=True)


def _ddim(D, z, sig, keys, eta):
    """DDIM (Song et al. 2021, 2010.02502, Eq. 12 with sigma_t(eta) of Eq. 16) in VE form:
    ``z' = x0 + sqrt(sigma'^2 - c^2) eps + c noise`` with ``c = eta sigma' sqrt(sigma^2 -
    sigma'^2) / sigma`` (Eq. 12 divided by ``alpha'``). eta = 1 is DDPM, eta = 0 is Euler."""

    def body(z, xs):
        i, key = xs
        s, sp = sig[i], sig[i + 1]
        x0 = D(z, i)
        eps = (z - x0) / s
        if eta == 0:
            return x0 + sp * eps, None
        c = eta * sp * jnp.sqrt(jnp.maximum(s * s - sp * sp, 0.0)) / s
        noise = jax.random.normal(key, z.shape, z.dtype)
        return x0 + jnp.sqrt(jnp.maximum(sp * sp - c * c, 0.0)) * eps + c * noise, None

    return _scan(body, z, sig.shape[0] - 1, keys, with_keys=True)


def _euler(D, z, sig, keys, eta):
    """Euler in sigma (Karras et al. 2022 Alg. 2 with S_churn = 0): ``d = (z - D) /
    sigma``, ``z' = z + (sigma' - sigma) d``."""

    def body(z, i):
        s, sp = sig[i], sig[i + 1]
        return z + (sp - s) * (z - D(z, i)) / s, None

    return _scan(body, z, sig.shape[0] - 1)


def _heun(D, z, sig, keys, eta):
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1): Euler predictor, trapezoidal
    corrector at ``sigma'``; the final step to ``sigma = 0`` is plain Euler. 2n - 1 NFE."""

    def body(z, i):
        s, sp = sig[i], sig[i + 1]
        d = (z - D(z, i)) / s
        z_euler = z + (sp - s) * d

        def correct(_):  # only taken for sp > 0; the guard keeps vmapped selects finite
            d2 = (z_euler - D(z_euler, i + 1)) / jnp.where(sp > 0, sp, 1.0)
            return z + (sp - s) * 0.5 * (d + d2)

        return lax.cond(sp > 0, correct, lambda _: z_euler, None), None

    return _scan(body, z, sig.shape[0] - 1)


def _log_ratio(s, sp):
    """``h = lambda' - lambda = log(sigma / sigma')`` and a safe stand-in at ``sigma' = 0``
    (where every solver falls back to its first-order step, which never uses ``h``)."""
    last = sp <= 0
    return jnp.log(s / jnp.where(last, 0.5 * s, sp)), last


def _dpmpp_2m(D, z, sig, keys, eta):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Alg. 2) in VE form:
    ``z' = (sigma'/sigma) z + (1 - sigma'/sigma) D_eff`` with ``D_eff = (1 + 1/(2r)) D_i -
    1/(2r) D_{i-1}``, ``r = h_{i-1} / h_i``, ``h = log(sigma / sigma')``. The first step
    and the final step (to sigma 0, where h is infinite) are first order (= DDIM)."""

    def body(carry, i):
        z, m1, h1 = carry
        s, sp = sig[i], sig[i + 1]
        x0 = D(z, i)
        h, last = _log_ratio(s, sp)
        second = (i > 0) & ~last
        r = jnp.where(second, h1 / h, 1.0)
        d_eff = jnp.where(second, x0 + (x0 - m1) / (2.0 * r), x0)
        ratio = sp / s
        return (ratio * z + (1.0 - ratio) * d_eff, x0, h), None

    zero = jnp.zeros((), z.dtype)
    return _scan(body, (z, jnp.zeros_like(z), zero), sig.shape[0] - 1)[0]


def _dpmpp_3m(D, z, sig, keys, eta):
    """DPM-Solver++(3M), the third-order multistep data-prediction solver (Lu et al. 2022,
    2211.01095, the variant released with its reference code; DPM-Solver 2206.00927
    Sec. 3 for the Taylor expansion with phi functions):
    ``z' = e^{-h} z + (1 - e^{-h}) D0 + phi2 D1 - phi3 D2`` with ``phi2 = (e^{-h} - 1)/h +
    1``, ``phi3 = phi2 / h - 1/2``, ``D1 ~ h dD/dlambda`` and ``D2 ~ h^2 d^2D/dlambda^2``
    from the quadratic through the last three data predictions. Orders ramp 1, 2 (the 2M
    step), 3; the final step to sigma 0 is first order.

    Note: diffusers / k-diffusion scale the second difference as ``h^2 D''/2`` against the
    same ``phi3`` coefficient, which halves the ``D''`` term and makes their 3M second
    order; the quadratic fit here is third order (measured in the tests)."""

    def body(carry, i):
        z, m1, m2, h1, h2 = carry
        s, sp = sig[i], sig[i + 1]
        x0 = D(z, i)
        h, last = _log_ratio(s, sp)
        order = jnp.where(last, 1, jnp.minimum(i + 1, 3))
        ratio = sp / s
        base = ratio * z + (1.0 - ratio) * x0
        r0 = jnp.where(order >= 2, h1 / h, 1.0)
        r1 = jnp.where(order >= 3, h2 / h, 1.0)
        z2 = base + (1.0 - ratio) * (x0 - m1) / (2.0 * r0)
        d1_0 = (x0 - m1) / r0
        d1_1 = (m1 - m2) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)
        phi2 = jnp.expm1(-h) / h + 1.0
        phi3 = phi2 / h - 0.5
        z3 = base + phi2 * d1 - phi3 * d2
        z_new = jnp.where(order == 3, z3, jnp.where(order == 2, z2, base))
        return (z_new, x0, m1, h, h1), None

    zero = jnp.zeros((), z.dtype)
    init = (z, jnp.zeros_like(z), jnp.zeros_like(z), zero, zero)
    return _scan(body, init, sig.shape[0] - 1)[0]


def _unipc_b(h):
    """UniPC-bh2 right-hand side ``b_k = k! phi_{k+1}(h) / B(h)``, ``B(h) = e^{-h} - 1``
    (Zhao et al. 2023, arXiv 2302.04867, Sec. 3; "bh2" is their B2(h) choice), k = 1, 2."""
    hh = -h
    b_h = jnp.expm1(hh)
    phi1 = jnp.expm1(hh) / hh - 1.0
    phi2 = phi1 / hh - 0.5
    return b_h, phi1 / b_h, 2.0 * phi2 / b_h


def _unipc(D, z, sig, keys, eta):
    """UniPC-bh2, order 2, data prediction (Zhao et al. 2023, 2302.04867, Sec. 3): a
    UniP-2 predictor (``rho = 1/2``) and the UniC corrector, which reuses the model output
    at the predicted point (no extra NFE) and solves the 2x2 system ``R rho = b``; UniC
    order follows the step it corrects (1 for the first step). The first and final
    predictor steps are first order (diffusers' ``lower_order_final``); the final sample
    is not corrected."""

    def body(carry, i):
        z_pred, z_last, m1, m2 = carry
        s, sp = sig[i], sig[i + 1]
        s1 = sig[jnp.maximum(i - 1, 0)]
        s2 = sig[jnp.maximum(i - 2, 0)]
        m0 = D(z_pred, i)
        # UniC for the step sigma_{i-1} -> sigma_i, with m0 evaluated at the prediction.
        hc = jnp.where(i > 0, jnp.log(s1 / s), 1.0)
        b_h, b1, b2 = _unipc_b(hc)
        ratio = s / s1
        base = ratio * z_last + (1.0 - ratio) * m1
        zc1 = base - b_h * 0.5 * (m0 - m1)
        rk = jnp.where(i >= 2, -jnp.log(s2 / s1) / hc, -1.0)  # (lambda_{i-2} - lambda_{i-1})/h
        rho0 = (b1 - b2) / (1.0 - rk)
        rho1 = b1 - rho0
        zc2 = base - b_h * (rho0 * (m2 - m1) / rk + rho1 * (m0 - m1))
        z = jnp.where(i == 0, z_pred, jnp.where(i >= 2, zc2, zc1))
        # UniP for the step sigma_i -> sigma_{i+1}.
        hp, last = _log_ratio(s, sp)
        b_hp = jnp.expm1(-hp)
        ratio = sp / s
        base = ratio * z + (1.0 - ratio) * m0
        second = (i >= 1) & ~last
        rkp = jnp.where(second, -jnp.log(s1 / s) / hp, -1.0)
        z_next = jnp.where(second, base - b_hp * 0.5 * (m1 - m0) / rkp, base)
        return (z_next, z, m0, m1), None

    init = (z, z, jnp.zeros_like(z), jnp.zeros_like(z))
    return _scan(body, init, sig.shape[0] - 1)[0]


_SOLVERS = {"ddpm": _ddpm, "ddim": _ddim, "euler": _euler, "heun": _heun,
            "dpmpp_2m": _dpmpp_2m, "dpmpp_3m": _dpmpp_3m, "unipc": _unipc}


# ----------------------------------------------------------------------------- public API


def _prepare(denoise_fn, x_T, prediction, guidance_scale):
    if not callable(denoise_fn):
        raise ValueError(f"denoise_fn={denoise_fn!r} is not callable")
    _check("prediction", prediction, PREDICTIONS)
    x_T = jnp.asarray(x_T)
    if x_T.ndim < 1 or not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise ValueError(f"x_T must be a floating array [B, ...]; got {x_T.dtype}{x_T.shape}")
    fn = denoise_fn if isinstance(denoise_fn, Partial) else Partial(denoise_fn)
    guided = guidance_scale is not None
    return fn, x_T, guided, jnp.asarray(guidance_scale if guided else 0.0)


@functools.partial(jax.jit, static_argnames=("num_steps", "method", "prediction", "eta",
                                             "spacing", "threshold", "guided"))
def _sample_jit(fn, x_T, key, schedule, scale, rescale, *, num_steps, method, prediction,
                eta, spacing, threshold, guided):
    ts, sig = step_grid(schedule, num_steps, spacing)
    dtype = jnp.result_type(x_T.dtype, sig.dtype)
    sig = sig.astype(dtype)
    den = _make_denoiser(fn, schedule, x_T.shape[0], prediction, guided, scale, rescale,
                         threshold)
    D = lambda z, i: den(z, sig[i], ts[jnp.minimum(i, num_steps - 1)])
    keys = jax.random.split(key, num_steps) if key is not None else None
    z = x_T.astype(dtype) * jnp.sqrt(1.0 + sig[0] ** 2)
    return _SOLVERS[method](D, z, sig, keys, eta).astype(x_T.dtype)


def sample(denoise_fn, x_T, key, schedule, num_steps, method="ddim", prediction="eps",
           eta=0.0, timestep_spacing="leading", guidance_scale=None, guidance_rescale=0.0,
           threshold=None):
    """Draws samples by integrating the reverse process from ``x_T`` to a clean sample.

    Args:
      denoise_fn: ``denoise_fn(x [B, ...], t [B]) -> out [B, ...]`` (or ``(cond, uncond)``
        when ``guidance_scale`` is given); see the module docstring.
      x_T: ``[B, ...]`` VP sample at the first grid timestep (standard normal noise, or a
        noised image for image-to-image).
      key: ``jax.random`` key, used by ``"ddpm"`` and by ``"ddim"`` with ``eta > 0``; may
        be None for the deterministic methods.
      schedule: a :class:`~jaxzoo.diffusion.gaussian.Schedule`.
      num_steps: number of network evaluations (``2 num_steps - 1`` for ``"heun"``).
      method: ``"ddpm"`` (ancestral), ``"ddim"`` (``eta``), ``"euler"``, ``"heun"``,
        ``"dpmpp_2m"``, ``"dpmpp_3m"`` or ``"unipc"`` (UniPC-bh2, order 2).
      prediction: what the network outputs: ``"eps"``, ``"x0"`` or ``"v"``.
      eta: DDIM stochasticity in ``[0, 1]`` (static: each value compiles once).
      timestep_spacing: ``"leading"``, ``"trailing"``, ``"linspace"`` (integer timesteps,
        see :func:`~jaxzoo.diffusion.gaussian.timesteps`) or ``"karras"`` (Karras sigmas,
        fractional timesteps); see :func:`step_grid`.
      guidance_scale: classifier-free guidance weight (None: unguided network).
      guidance_rescale: Lin et al. (2305.08891) rescale factor phi.
      threshold: None, ``"static"`` or ``"dynamic"`` (Imagen), applied to every x0
        prediction, including the final one.

    Returns:
      ``[B, ...]`` samples, dtype of ``x_T``.
    """
    _check("method", method, METHODS)
    _check("timestep_spacing", timestep_spacing, SAMPLE_SPACINGS)
    _check("threshold", threshold, THRESHOLDS)
    fn, x_T, guided, scale = _prepare(denoise_fn, x_T, prediction, guidance_scale)
    eta = float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta={eta!r} must be in [0, 1]")
    if eta != 0.0 and method != "ddim":
        raise ValueError(f"eta={eta!r} only applies to method='ddim', not {method!r}")
    stochastic = method == "ddpm" or eta > 0
    if stochastic and key is None:
        raise ValueError(f"method={method!r} with eta={eta} draws noise: pass a key")
    if not 1 <= int(num_steps) <= schedule.num_train_steps:
        raise ValueError(f"num_steps={num_steps!r} must be in [1, {schedule.num_train_steps}]")
    return _sample_jit(fn, x_T, key if stochastic else None, schedule, scale,
                       jnp.asarray(guidance_rescale), num_steps=int(num_steps),
                       method=method, prediction=prediction, eta=eta,
                       spacing=timestep_spacing, threshold=threshold, guided=guided)


# ----------------------------------------------------------------------------- PF-ODE reference

# Dormand-Prince 5(4) tableau (Dormand & Prince 1980; Hairer, Norsett & Wanner, Table 5.2).
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP_A = ((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
         (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
         (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656))
_DP_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_DP_E = tuple(a - b for a, b in zip(_DP_B5, _DP_B4))


def _dopri5(f, v0, v1, y0, rtol, atol, max_steps):
    """Adaptive RK45 (Dormand-Prince, FSAL) for ``dy/dv = f(v, y)`` from ``v0`` to
    ``v1 > v0`` with one step size for the whole array; error control on the RMS of
    ``err / (atol + rtol max(|y|, |y_new|))``. Returns ``(y(v1), (accepted, rejected))``."""

    def cond(state):
        v, _, _, _, n_acc, n_rej = state
        return (v < v1) & (n_acc + n_rej < max_steps)

    def body(state):
        v, y, k1, h, n_acc, n_rej = state
        final = h >= v1 - v
        h = jnp.where(final, v1 - v, h)
        ks = [k1]
        for c, a in zip(_DP_C[1:], _DP_A[1:]):
            ks.append(f(v + c * h, y + h * sum(aj * kj for aj, kj in zip(a, ks))))
        y_new = y + h * sum(b * k for b, k in zip(_DP_B5[:6], ks))
        ks.append(f(v + h, y_new))
        err = h * sum(e * k for e, k in zip(_DP_E, ks) if e != 0.0)
        scale = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y_new))
        err_norm = jnp.sqrt(jnp.mean((err / scale) ** 2))
        accept = err_norm <= 1.0
        factor = jnp.clip(0.9 * err_norm ** -0.2, 0.2, 5.0)
        v_new = jnp.where(final, v1, v + h)
        return (jnp.where(accept, v_new, v), jnp.where(accept, y_new, y),
                jnp.where(accept, ks[-1], k1), h * factor, n_acc + accept, n_rej + ~accept)

    h0 = (v1 - v0) / 64.0
    state = (v0, y0, f(v0, y0), h0, jnp.int32(0), jnp.int32(0))
    v, y, _, _, n_acc, n_rej = lax.while_loop(cond, body, state)
    return y, (v, n_acc, n_rej)


@functools.partial(jax.jit, static_argnames=("prediction", "guided", "final_denoise",
                                             "max_steps"))
def _pf_ode_jit(fn, x_T, schedule, t_start, t_end, scale, rescale, rtol, atol, *, prediction,
                guided, final_denoise, max_steps):
    dtype = jnp.result_type(x_T.dtype, schedule.sigmas.dtype)
    s0 = t_to_sigma(schedule, t_start).astype(dtype)
    s1 = t_to_sigma(schedule, t_end).astype(dtype)
    den = _make_denoiser(fn, schedule, x_T.shape[0], prediction, guided, scale, rescale, None)
    D = lambda z, sigma: den(z, sigma, sigma_to_t(schedule, sigma))
    # Integrate in v = -log sigma (half the log-SNR): dz/dv = D(z; sigma) - z.
    f = lambda v, z: D(z, jnp.exp(-v)) - z
    z0 = x_T.astype(dtype) * jnp.sqrt(1.0 + s0 * s0)
    z1, (v, n_acc, n_rej) = _dopri5(f, -jnp.log(s0), -jnp.log(s1), z0, rtol, atol, max_steps)
    x = D(z1, s1) if final_denoise else z1 / jnp.sqrt(1.0 + s1 * s1)
    nfe = 1 + 6 * (n_acc + n_rej) + int(final_denoise)
    stats = {"nfe": nfe, "accepted": n_acc, "rejected": n_rej, "reached_end": v >= -jnp.log(s1)}
    return x.astype(x_T.dtype), stats


def probability_flow_ode(denoise_fn, x_T, schedule, prediction="eps", t_start=None, t_end=0,
                         rtol=1e-5, atol=1e-5, guidance_scale=None, guidance_rescale=0.0,
                         final_denoise=True, max_steps=4096, return_stats=False):
    """Reference solution of the probability-flow ODE with adaptive Dormand-Prince RK45.

    Solves Song et al. 2021 (2011.13456) Eq. 13 for the VP process in VE coordinates,
    ``dz / dv = D(z; sigma) - z`` with ``v = -log sigma`` (equivalent to Karras Eq. 4,
    ``dz/dsigma = (z - D)/sigma``), from ``t_start`` to ``t_end``, evaluating the network
    at fractional timesteps ``sigma_to_t(sigma)``. With ``final_denoise`` (default) the
    result is ``D(z; sigma(t_end))``, the x0 prediction at the end point, exactly as the
    fixed-step samplers finish; otherwise the VP ``x_{t_end}``. Thresholding is not
    offered: it makes the right-hand side non-smooth, which defeats a reference solver.

    Args:
      denoise_fn, prediction, guidance_scale, guidance_rescale: as in :func:`sample`.
      x_T: ``[B, ...]`` VP sample at ``t_start`` (default ``T - 1``).
      t_end: end timestep (default 0, the smallest noise level of the schedule).
      rtol, atol: tolerances of the RMS error norm.
      max_steps: cap on accepted + rejected steps (static); check
        ``stats["reached_end"]`` when ``return_stats``.

    Returns:
      ``[B, ...]``, and with ``return_stats`` a dict with ``nfe``, ``accepted``,
      ``rejected``, ``reached_end``.
    """
    fn, x_T, guided, scale = _prepare(denoise_fn, x_T, prediction, guidance_scale)
    ftype = jnp.result_type(float)
    t_start = schedule.num_train_steps - 1 if t_start is None else t_start
    x, stats = _pf_ode_jit(fn, x_T, schedule, jnp.asarray(t_start, ftype),
                           jnp.asarray(t_end, ftype), scale, jnp.asarray(guidance_rescale),
                           jnp.asarray(rtol, ftype), jnp.asarray(atol, ftype),
                           prediction=prediction, guided=guided,
                           final_denoise=bool(final_denoise), max_steps=int(max_steps))
    return (x, stats) if return_stats else x
