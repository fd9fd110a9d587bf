"""The Gaussian diffusion process, pure jax.numpy: noise schedules, forward process, prediction
conversions, the denoising loss, guidance.

Samplers (DDPM, DDIM, Euler, Heun, DPM-Solver++, UniPC) and the probability-flow ODE
reference solver live in :mod:`jaxzoo.diffusion.samplers`; this module holds everything they
share.

Names, shapes and conventions used throughout:

* A discrete variance-preserving (VP) schedule has ``T = num_train_steps`` training steps
  indexed ``t = 0 .. T-1``. ``alphas_cumprod[t]`` is DDPM's alpha-bar (Ho et al. 2020,
  arXiv 2006.11239, Eq. 4) and the forward process is
  ``x_t = alpha_t * x_0 + sigma_t * eps`` with ``alpha_t = sqrt(alphas_cumprod[t])`` and
  ``sigma_t = sqrt(1 - alphas_cumprod[t])`` (the VP "sigma").
* ``sigma`` without qualification is the variance-exploding (VE / Karras) noise level
  ``sigma = sigma_t / alpha_t = sqrt((1 - abar) / abar)``: ``z = x_t / alpha_t = x_0 +
  sigma * eps`` (Karras et al. 2022, arXiv 2206.00364, Sec. 2 and Table 1). ``log_snr =
  log(abar / (1 - abar)) = -2 log sigma``. Conversions: ``alpha = 1 / sqrt(1 + sigma^2)``,
  ``sigma_t = sigma * alpha``.
* Timesteps ``t`` are integer (exact table look-ups) or floating point (fractional
  timesteps: ``log sigma`` is interpolated linearly in ``t`` between neighbouring integers,
  see :func:`t_to_sigma`; :func:`sigma_to_t` is its exact inverse).
* Arrays ``x``: the leading axis is the batch, ``[B, ...]``. Per-sample quantities such as
  ``t``, ``alpha`` or ``sigma`` have shape ``[B]`` (or are scalars) and are broadcast over
  the trailing axes of ``x``. Per-sample reductions (dynamic thresholding, guidance
  rescale) reduce over every axis but the first.
* A model output ("prediction") is one of ``"eps"`` (the noise), ``"x0"`` (the clean
  sample) or ``"v"`` (``v = alpha_t eps - sigma_t x_0``, Salimans & Ho 2022, arXiv
  2202.00512, Sec. 4 / App. D).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = [
    "LOSS_WEIGHTS",
    "PREDICTIONS",
    "SCHEDULES",
    "SPACINGS",
    "Schedule",
    "alpha_sigma",
    "classifier_free_guidance",
    "convert_prediction",
    "denoising_loss",
    "dynamic_threshold",
    "karras_sigmas",
    "loss_weight",
    "make_schedule",
    "q_sample",
    "sigma_to_t",
    "static_threshold",
    "t_to_sigma",
    "timesteps",
    "x0_and_eps",
]

SCHEDULES = ("linear", "cosine", "scaled_linear")
SPACINGS = ("leading", "trailing", "linspace")
PREDICTIONS = ("eps", "x0", "v")
LOSS_WEIGHTS = ("uniform", "min_snr")
_COSINE_MAX_BETA = 0.999  # Nichol & Dhariwal 2021 clip beta_t to <= 0.999 (Sec. 3.2)


def _check(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not one of {allowed}")


def _bcast(a, x):
    """Reshape per-sample ``a`` ``[B]`` (or scalar) to broadcast against ``x`` ``[B, ...]``."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (jnp.ndim(x) - a.ndim))


# ----------------------------------------------------------------------------- schedules


class Schedule(NamedTuple):
    """Tables of a discrete VP schedule; every field has shape ``[T]``, indexed by ``t``.

    A NamedTuple, hence a pytree: it can be passed through ``jax.jit`` as an argument.
    """

    betas: jnp.ndarray
    alphas: jnp.ndarray  # 1 - betas
    alphas_cumprod: jnp.ndarray  # abar_t
    sqrt_alphas_cumprod: jnp.ndarray  # alpha_t (VP)
    sqrt_one_minus_alphas_cumprod: jnp.ndarray  # sigma_t (VP)
    sigmas: jnp.ndarray  # VE sigma = sqrt((1 - abar) / abar), increasing in t
    log_snr: jnp.ndarray  # log(abar / (1 - abar)) = -2 log sigma

    @property
    def num_train_steps(self) -> int:
        return self.betas.shape[0]


def make_schedule(kind, num_train_steps=1000, beta_start=1e-4, beta_end=0.02, cosine_s=0.008,
                  dtype=None):
    """Builds the tables of a discrete VP noise schedule.

    * ``"linear"``: ``betas = linspace(beta_start, beta_end, T)`` (DDPM, Ho et al. 2020,
      2006.11239, Sec. 4).
    * ``"scaled_linear"``: ``betas = linspace(sqrt(beta_start), sqrt(beta_end), T)^2``
      (the latent-diffusion / Stable Diffusion schedule; there it is used with
      ``beta_start=0.00085, beta_end=0.012``).
    * ``"cosine"``: ``abar(u) = f(u) / f(0)``, ``f(u) = cos((u + s) / (1 + s) * pi / 2)^2``
      (Nichol & Dhariwal 2021, arXiv 2102.09672, Eq. 17), discretised as
      ``beta_t = min(1 - abar((t+1)/T) / abar(t/T), 0.999)``, so that without the clip
      ``alphas_cumprod[t] = abar((t + 1) / T)`` exactly. ``beta_start/beta_end`` are unused.

    The tables are computed once in float64 NumPy (they are constants) and stored as
    ``dtype`` (default: JAX's default float dtype, float32 unless x64 is enabled).

    Returns:
      A :class:`Schedule` whose fields have shape ``[num_train_steps]``.
    """
    _check("kind", kind, SCHEDULES)
    T = int(num_train_steps)
    if T < 2:
        raise ValueError(f"num_train_steps={num_train_steps!r} must be an integer >= 2")
    if kind == "linear":
        betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    elif kind == "scaled_linear":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    else:
        u = np.arange(T + 1, dtype=np.float64) / T
        f = np.cos((u + cosine_s) / (1.0 + cosine_s) * np.pi / 2) ** 2
        betas = np.minimum(1.0 - f[1:] / f[:-1], _COSINE_MAX_BETA)
    if not (np.all(betas > 0) and np.all(betas < 1)):
        raise ValueError(f"betas must lie in (0, 1); got range [{betas.min()}, {betas.max()}]"
                         f" from beta_start={beta_start!r}, beta_end={beta_end!r}")
    log_abar = np.cumsum(np.log1p(-betas))
    abar = np.exp(log_abar)
    one_minus = -np.expm1(log_abar)  # 1 - abar without cancellation near t = 0
    sigmas = np.sqrt(one_minus / abar)
    dtype = jnp.result_type(float) if dtype is None else dtype
    cast = lambda a: jnp.asarray(a, dtype=dtype)
    return Schedule(
        betas=cast(betas), alphas=cast(1.0 - betas), alphas_cumprod=cast(abar),
        sqrt_alphas_cumprod=cast(np.sqrt(abar)), sqrt_one_minus_alphas_cumprod=cast(
            np.sqrt(one_minus)), sigmas=cast(sigmas), log_snr=cast(log_abar - np.log(one_minus)))


def timesteps(num_train_steps, num_steps, spacing="leading", offset=0):
    """The ``num_steps`` integer timesteps a sampler visits, in decreasing order.

    Follows the conventions of the diffusers schedulers (``timestep_spacing``), with
    ``T = num_train_steps`` and ``n = num_steps``:

    * ``"leading"``: ``arange(n) * (T // n)``, reversed, plus ``offset`` (diffusers'
      ``steps_offset``). T=1000, n=10: ``[900, 800, ..., 100, 0]``.
    * ``"trailing"``: ``round(T - k * T / n) - 1`` for ``k = 0 .. n-1``.
      T=1000, n=10: ``[999, 899, ..., 199, 99]``.
    * ``"linspace"``: ``round(linspace(0, T - 1, n))`` reversed (NumPy rounding, half to
      even). T=1000, n=10: ``[999, 888, 777, ..., 111, 0]``.

    "trailing" and "linspace" always start at ``T - 1``; "leading" starts lower when ``n``
    does not divide ``T`` (the DDIM paper's choice, 2010.02502 Sec. 4.2, and diffusers'
    default). Returns an int32 array ``[num_steps]``.
    """
    _check("spacing", spacing, SPACINGS)
    T, n = int(num_train_steps), int(num_steps)
    if not 1 <= n <= T:
        raise ValueError(f"num_steps={num_steps!r} must be in [1, num_train_steps={T}]")
    if spacing == "leading":
        ts = (np.arange(n) * (T // n))[::-1] + int(offset)
    elif spacing == "trailing":
        ts = np.round(T - np.arange(n) * (T / n)) - 1
    else:
        ts = np.round(np.linspace(0, T - 1, n))[::-1]
    if ts.min() < 0 or ts.max() > T - 1:
        raise ValueError(f"offset={offset!r} moves timesteps outside [0, {T - 1}]")
    return jnp.asarray(ts.astype(np.int32))


def karras_sigmas(sigma_min, sigma_max, n, rho=7.0):
    """Karras et al. 2022 (2206.00364) Eq. 5: ``n`` VE sigmas from ``sigma_max`` down to
    ``sigma_min``, evenly spaced in ``sigma^(1/rho)``. The trailing ``sigma = 0`` of the
    paper is not included (the samplers append it). Returns ``[n]``."""
    n = int(n)
    if n < 1:
        raise ValueError(f"n={n!r} must be >= 1")
    ramp = jnp.linspace(0.0, 1.0, n) if n > 1 else jnp.zeros((1,))
    lo, hi = jnp.asarray(sigma_min) ** (1.0 / rho), jnp.asarray(sigma_max) ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def t_to_sigma(schedule, t):
    """VE sigma at timesteps ``t`` (any shape). Integer ``t``: table look-up. Float ``t``:
    ``log sigma`` interpolated linearly between the neighbouring integer timesteps
    (clamped to ``[0, T-1]``), the convention of k-diffusion / diffusers' ``_sigma_to_t``."""
    t = jnp.asarray(t)
    if jnp.issubdtype(t.dtype, jnp.integer):
        return schedule.sigmas[t]
    grid = jnp.arange(schedule.num_train_steps, dtype=t.dtype)
    return jnp.exp(jnp.interp(t, grid, jnp.log(schedule.sigmas)))


def sigma_to_t(schedule, sigma):
    """Fractional timestep of VE noise level ``sigma`` (any shape): the inverse of
    :func:`t_to_sigma`, i.e. ``t`` interpolated linearly in ``log sigma`` and clamped to
    ``[0, T-1]``. This is how sigma-space samplers (Karras sigmas) feed a network trained
    on integer timesteps."""
    log_sigmas = jnp.log(schedule.sigmas)
    grid = jnp.arange(schedule.num_train_steps, dtype=log_sigmas.dtype)
    return jnp.interp(jnp.log(sigma), log_sigmas, grid)


def alpha_sigma(schedule, t):
    """VP coefficients ``(alpha_t, sigma_t)`` at timesteps ``t`` (shape of ``t``).

    Integer ``t`` reads the tables; float ``t`` goes through :func:`t_to_sigma` and
    ``alpha = 1 / sqrt(1 + sigma^2)``, ``sigma_t = sigma * alpha``.
    """
    t = jnp.asarray(t)
    if jnp.issubdtype(t.dtype, jnp.integer):
        return schedule.sqrt_alphas_cumprod[t], schedule.sqrt_one_minus_alphas_cumprod[t]
    s = t_to_sigma(schedule, t)
    alpha = 1.0 / jnp.sqrt(1.0 + s * s)
    return alpha, s * alpha


# ----------------------------------------------------------------------------- forward process


def q_sample(schedule, x0, t, noise):
    """Forward process ``x_t = alpha_t x_0 + sigma_t eps`` (DDPM, 2006.11239, Eq. 4).

    Args: ``x0`` and ``noise`` ``[B, ...]``; ``t`` ``[B]`` or scalar (int or float).
    Returns ``x_t`` ``[B, ...]``.
    """
    alpha, sigma = alpha_sigma(schedule, t)
    return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise


def x0_and_eps(pred, x_t, alpha, sigma, prediction="eps"):
    """``(x0, eps)`` implied by a model output, given VP ``alpha``/``sigma`` (``[B]`` or
    scalars, broadcast over ``x_t`` ``[B, ...]``).

    eps: ``x0 = (x_t - sigma eps) / alpha``. x0: ``eps = (x_t - alpha x0) / sigma``.
    v (Salimans & Ho 2022, 2202.00512, Sec. 4; uses ``alpha^2 + sigma^2 = 1``):
    ``x0 = alpha x_t - sigma v``, ``eps = sigma x_t + alpha v``.
    """
    _check("prediction", prediction, PREDICTIONS)
    a, s = _bcast(alpha, x_t), _bcast(sigma, x_t)
    if prediction == "eps":
        return (x_t - s * pred) / a, pred
    if prediction == "x0":
        return pred, (x_t - a * pred) / s
    return a * x_t - s * pred, s * x_t + a * pred


def convert_prediction(pred, x_t, t, schedule, from_, to):
    """Converts a model output between ``"eps"``, ``"x0"`` and ``"v"`` at timesteps ``t``.

    Args: ``pred``, ``x_t`` ``[B, ...]``; ``t`` ``[B]`` or scalar. Returns ``[B, ...]``.
    """
    _check("to", to, PREDICTIONS)
    alpha, sigma = alpha_sigma(schedule, t)
    if from_ == to:
        _check("from_", from_, PREDICTIONS)
        return pred
    x0, eps = x0_and_eps(pred, x_t, alpha, sigma, from_)
    if to == "x0":
        return x0
    if to == "eps":
        return eps
    return _bcast(alpha, x_t) * eps - _bcast(sigma, x_t) * x0


def loss_weight(schedule, t, kind="uniform", gamma=5.0, prediction="eps"):
    """Per-sample weight of the denoising loss, shape of ``t``.

    ``"uniform"``: 1 (the "simple" loss of DDPM, 2006.11239 Eq. 14, in whatever target
    space ``prediction`` names). ``"min_snr"``: Min-SNR-gamma (Hang et al. 2023,
    arXiv 2303.09556): the x0-space weight ``min(SNR, gamma)`` expressed for the
    prediction target, i.e. ``min(SNR, gamma) / SNR`` for eps, ``min(SNR, gamma)`` for
    x0 and ``min(SNR, gamma) / (SNR + 1)`` for v, with ``SNR = alpha_t^2 / sigma_t^2``.
    """
    _check("kind", kind, LOSS_WEIGHTS)
    _check("prediction", prediction, PREDICTIONS)
    sig = t_to_sigma(schedule, t)
    if kind == "uniform":
        return jnp.ones_like(sig)
    snr = 1.0 / (sig * sig)
    clipped = jnp.minimum(snr, gamma)
    if prediction == "eps":
        return clipped / snr
    if prediction == "x0":
        return clipped
    return clipped / (snr + 1.0)


def denoising_loss(prediction_fn, schedule, x0, t, eps, *, prediction="eps", weighting="uniform"):
    """DDPM's simple loss (Ho et al. 2020, 2006.11239, Eq. 14) for given draws ``t`` and ``eps``.

    ``x_t = alpha_t x0 + sigma_t eps`` (Eq. 4); the network's output
    ``f = prediction_fn(x_t, t)`` is regressed onto the target ``prediction`` names (eps as in
    Eq. 14, or x0 or v), ``w(t) ||f - target||^2`` with ``w = loss_weight(schedule, t,
    weighting, prediction=prediction)``, the squared error averaged over every axis but the
    batch. Shapes: ``x0``, ``eps`` ``[B, ...]``, ``t`` ``[B]``. Returns
    ``(mean_b w_b mse_b, mse [B])``: the loss and the unweighted per-sample errors.
    """
    x_t = q_sample(schedule, x0, t, eps)
    if prediction == "eps":
        target = eps
    elif prediction == "x0":
        target = x0
    else:
        target = convert_prediction(eps, x_t, t, schedule, "eps", prediction)
    per_sample = jnp.mean((prediction_fn(x_t, t) - target) ** 2, axis=_per_sample_axes(x0))
    weight = loss_weight(schedule, t, weighting, prediction=prediction)
    return jnp.mean(weight * per_sample), per_sample


# ----------------------------------------------------------------------------- guidance


def _per_sample_axes(x):
    return tuple(range(1, jnp.ndim(x))) if jnp.ndim(x) > 1 else None


def classifier_free_guidance(cond, uncond, scale, rescale=0.0):
    """Classifier-free guidance with optional rescale.

    ``guided = uncond + scale * (cond - uncond)`` (Ho & Salimans 2022; GLIDE / Imagen),
    written as ``(1 - scale) * uncond + scale * cond`` so that ``scale = 1`` returns
    ``cond`` and ``scale = 0`` returns ``uncond`` exactly. With ``rescale = phi > 0``
    (Lin et al. 2023, arXiv 2305.08891, Eq. 15-16) the guided output is rescaled to the
    per-sample standard deviation of ``cond`` and blended:
    ``phi * guided * std(cond) / std(guided) + (1 - phi) * guided``; ``phi = 0`` is a no-op.
    Standard deviations are per sample, over all axes but the first.

    Args: ``cond``, ``uncond`` ``[B, ...]``; ``scale``, ``rescale`` scalars (or ``[B]``).
    """
    cond, uncond = jnp.asarray(cond), jnp.asarray(uncond)
    scale = _bcast(scale, cond)
    guided = (1.0 - scale) * uncond + scale * cond
    if isinstance(rescale, (int, float)) and rescale == 0:
        return guided
    axes = _per_sample_axes(guided)
    std_cond = jnp.std(cond, axis=axes, keepdims=True)
    std_guided = jnp.std(guided, axis=axes, keepdims=True)
    tiny = jnp.finfo(guided.dtype).tiny
    rescaled = guided * (std_cond / jnp.maximum(std_guided, tiny))
    return guided + _bcast(rescale, guided) * (rescaled - guided)


def static_threshold(x0):
    """Static thresholding: clip the x0 prediction to ``[-1, 1]`` (Imagen, 2205.11487,
    Sec. 2.3)."""
    return jnp.clip(x0, -1.0, 1.0)


def dynamic_threshold(x0, percentile=0.995):
    """Imagen dynamic thresholding (Saharia et al. 2022, arXiv 2205.11487, Sec. 2.3).

    Per sample: ``s`` = the ``percentile`` quantile (linear interpolation) of ``|x0|``
    over all axes but the first, ``s = max(s, 1)``; the output is
    ``clip(x0, -s, s) / s`` and so always lies in ``[-1, 1]``; when the quantile is
    ``<= 1``, ``s = 1`` and this is static clipping (a no-op for samples in range).

    Args: ``x0`` ``[B, ...]`` (or ``[N]``, treated as one sample). Returns ``x0``'s shape.
    """
    x0 = jnp.asarray(x0)
    if not 0.0 < float(percentile) <= 1.0:
        raise ValueError(f"percentile={percentile!r} must be in (0, 1]")
    flat = x0.reshape(x0.shape[0], -1) if x0.ndim > 1 else x0.reshape(1, -1)
    s = jnp.maximum(jnp.quantile(jnp.abs(flat), percentile, axis=-1), 1.0)
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1)) if x0.ndim > 1 else s[0]
    return jnp.clip(x0, -s, s) / s
