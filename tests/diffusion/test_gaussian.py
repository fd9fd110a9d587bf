"""Tests for jaxzoo.diffusion.gaussian: schedules, timesteps, conversions, guidance, thresholds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.diffusion import gaussian as dif

T = 1000


# ----------------------------------------------------------------------------- schedules


def test_bad_names_raise_and_list_allowed():
    with pytest.raises(ValueError, match="linear.*cosine.*scaled_linear"):
        dif.make_schedule("quadratic")
    with pytest.raises(ValueError, match="leading"):
        dif.timesteps(T, 10, "uniform")
    sch = dif.make_schedule("linear")
    x = jnp.zeros((2, 3))
    t = jnp.array([0, 1])
    with pytest.raises(ValueError, match="eps.*x0.*v"):
        dif.convert_prediction(x, x, t, sch, "epsilon", "x0")
    with pytest.raises(ValueError, match="min_snr"):
        dif.loss_weight(sch, t, kind="snr")
    with pytest.raises(ValueError, match="num_steps"):
        dif.timesteps(T, 0)
    with pytest.raises(ValueError, match="num_steps"):
        dif.timesteps(T, T + 1)
    with pytest.raises(ValueError, match="percentile"):
        dif.dynamic_threshold(x, percentile=1.5)
    with pytest.raises(ValueError, match="betas"):
        dif.make_schedule("linear", beta_end=1.5)


def test_linear_schedule_endpoints_and_tables():
    sch = dif.make_schedule("linear", num_train_steps=T, beta_start=1e-4, beta_end=0.02)
    betas = np.linspace(1e-4, 0.02, T)
    np.testing.assert_allclose(sch.betas, betas, rtol=1e-6)
    assert sch.num_train_steps == T
    abar = np.cumprod(1.0 - betas)
    np.testing.assert_allclose(sch.alphas_cumprod, abar, rtol=1e-5)
    np.testing.assert_allclose(sch.alphas, 1.0 - betas, rtol=1e-6)
    np.testing.assert_allclose(sch.sqrt_alphas_cumprod, np.sqrt(abar), rtol=1e-5)
    np.testing.assert_allclose(sch.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - abar), rtol=1e-4)
    np.testing.assert_allclose(sch.sigmas, np.sqrt((1 - abar) / abar), rtol=1e-4)
    np.testing.assert_allclose(sch.log_snr, np.log(abar / (1 - abar)), rtol=1e-4, atol=1e-4)
    # DDPM's endpoints: abar_T ~ 4e-5 (Ho et al. 2020, Sec. 4), abar_0 = 1 - beta_1.
    assert 3e-5 < float(sch.alphas_cumprod[-1]) < 5e-5
    np.testing.assert_allclose(sch.sigmas[0], np.sqrt(1e-4 / (1 - 1e-4)), rtol=1e-5)


@pytest.mark.parametrize("kind", dif.SCHEDULES)
def test_schedules_monotone_and_finite(kind):
    sch = dif.make_schedule(kind)
    for field in sch:
        assert np.all(np.isfinite(np.asarray(field))), kind
    assert np.all(np.diff(np.asarray(sch.alphas_cumprod)) < 0)
    assert np.all(np.diff(np.asarray(sch.sigmas)) > 0)
    assert np.all(np.diff(np.asarray(sch.log_snr)) < 0)
    assert np.all((np.asarray(sch.betas) > 0) & (np.asarray(sch.betas) <= 0.999 + 1e-7))
    np.testing.assert_allclose(np.asarray(sch.sqrt_alphas_cumprod) ** 2
                               + np.asarray(sch.sqrt_one_minus_alphas_cumprod) ** 2, 1.0,
                               rtol=1e-6)


def test_scaled_linear_is_linear_in_sqrt_beta():
    sch = dif.make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    sq = np.sqrt(np.asarray(sch.betas, np.float64))
    np.testing.assert_allclose(sq[[0, -1]], [0.00085**0.5, 0.012**0.5], rtol=1e-6)
    np.testing.assert_allclose(np.diff(sq), (sq[-1] - sq[0]) / (T - 1), rtol=1e-3)


def test_cosine_alpha_bar_closed_form():
    """Nichol & Dhariwal Eq. 17: abar[t] = f((t+1)/T) / f(0) wherever beta is not clipped."""
    s = 0.008
    with jax.enable_x64(True):
        sch = dif.make_schedule("cosine", cosine_s=s)
        u = (np.arange(T) + 1.0) / T
        f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
        expected = f(u) / f(0.0)
        unclipped = np.asarray(sch.betas) < 0.999
        assert unclipped[: T - 1].all() and not unclipped[-1]  # only beta_{T-1} is clipped
        np.testing.assert_allclose(np.asarray(sch.alphas_cumprod)[unclipped],
                                   expected[unclipped], rtol=1e-9)
        assert float(sch.betas[-1]) == pytest.approx(0.999)


# ----------------------------------------------------------------------------- timesteps


def test_timesteps_match_hand_computed_diffusers_examples():
    # T=1000, n=10 (diffusers DDIMScheduler.set_timesteps for each timestep_spacing).
    np.testing.assert_array_equal(dif.timesteps(T, 10, "leading"), np.arange(900, -1, -100))
    np.testing.assert_array_equal(dif.timesteps(T, 10, "trailing"), np.arange(999, 98, -100))
    np.testing.assert_array_equal(dif.timesteps(T, 10, "linspace"), np.arange(999, -1, -111))
    # T=1000, n=3: leading step 1000 // 3 = 333; trailing 999, round(666.67)-1, round(333.33)-1;
    # linspace(0, 999, 3) = [0, 499.5, 999] and 499.5 rounds half-to-even to 500.
    np.testing.assert_array_equal(dif.timesteps(T, 3, "leading"), [666, 333, 0])
    np.testing.assert_array_equal(dif.timesteps(T, 3, "trailing"), [999, 666, 332])
    np.testing.assert_array_equal(dif.timesteps(T, 3, "linspace"), [999, 500, 0])
    # Stable Diffusion's steps_offset=1 with leading spacing.
    np.testing.assert_array_equal(dif.timesteps(T, 4, "leading", offset=1), [751, 501, 251, 1])
    # Every spacing with n = T visits all timesteps.
    for spacing in dif.SPACINGS:
        np.testing.assert_array_equal(dif.timesteps(T, T, spacing), np.arange(T - 1, -1, -1))
        assert dif.timesteps(T, 7, spacing).dtype == jnp.int32


def test_karras_sigmas_eq5():
    sig = np.asarray(dif.karras_sigmas(0.002, 80.0, 6, rho=7.0), np.float64)
    np.testing.assert_allclose(sig[[0, -1]], [80.0, 0.002], rtol=1e-5)
    assert np.all(np.diff(sig) < 0)
    root = sig ** (1 / 7)
    np.testing.assert_allclose(np.diff(root), (root[-1] - root[0]) / 5, rtol=1e-4)
    np.testing.assert_allclose(dif.karras_sigmas(0.1, 10.0, 1), [10.0], rtol=1e-6)


def test_sigma_t_interpolation_round_trip():
    with jax.enable_x64(True):
        sch = dif.make_schedule("cosine")
        t_int = jnp.arange(T)
        np.testing.assert_allclose(dif.sigma_to_t(sch, sch.sigmas), np.arange(T), atol=1e-8)
        np.testing.assert_allclose(dif.t_to_sigma(sch, t_int.astype(jnp.float64)), sch.sigmas,
                                   rtol=1e-12)
        t_frac = jnp.linspace(0.0, T - 1.0, 777)
        np.testing.assert_allclose(dif.sigma_to_t(sch, dif.t_to_sigma(sch, t_frac)), t_frac,
                                   atol=1e-8)
        # log sigma is linear between neighbouring integers.
        mid = dif.t_to_sigma(sch, jnp.asarray(10.5))
        np.testing.assert_allclose(mid, np.sqrt(sch.sigmas[10] * sch.sigmas[11]), rtol=1e-12)
        a_i, s_i = dif.alpha_sigma(sch, t_int)
        a_f, s_f = dif.alpha_sigma(sch, t_int.astype(jnp.float64))
        np.testing.assert_allclose(a_i, a_f, rtol=1e-10)
        np.testing.assert_allclose(s_i, s_f, rtol=1e-10)
        np.testing.assert_allclose(a_f**2 + s_f**2, 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------- forward process


def _noised(schedule, t, shape=(5, 3, 4), seed=0):
    k0, k1 = jax.random.split(jax.random.key(seed))
    x0 = jax.random.normal(k0, shape)
    eps = jax.random.normal(k1, shape)
    return x0, eps, dif.q_sample(schedule, x0, t, eps)


def test_q_sample_formula_and_batching():
    sch = dif.make_schedule("linear")
    t = jnp.array([0, 10, 500, 998, 999])
    x0, eps, xt = _noised(sch, t)
    ab = np.asarray(sch.alphas_cumprod)[np.asarray(t)][:, None, None]
    np.testing.assert_allclose(xt, np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps, rtol=1e-5,
                               atol=1e-6)
    per_item = [dif.q_sample(sch, x0[i], t[i], eps[i]) for i in range(5)]
    np.testing.assert_allclose(xt, np.stack(per_item), rtol=1e-6)
    np.testing.assert_allclose(dif.q_sample(sch, x0, t.astype(jnp.float32), eps), xt,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_prediction_conversions_round_trip(kind):
    with jax.enable_x64(True):
        sch = dif.make_schedule(kind)
        t = jnp.array([0, 1, 250, 900, 998])  # all but the clipped last cosine step
        x0, eps, xt = _noised(sch, t)
        a, s = dif.alpha_sigma(sch, t)
        v = a[:, None, None] * eps - s[:, None, None] * x0
        truth = {"eps": eps, "x0": x0, "v": v}
        for src in dif.PREDICTIONS:
            for dst in dif.PREDICTIONS:
                got = dif.convert_prediction(truth[src], xt, t, sch, src, dst)
                np.testing.assert_allclose(got, truth[dst], rtol=1e-9, atol=1e-9,
                                           err_msg=f"{src}->{dst}")
        x0_, eps_ = dif.x0_and_eps(v, xt, a, s, "v")
        np.testing.assert_allclose(x0_, x0, atol=1e-10)
        np.testing.assert_allclose(eps_, eps, atol=1e-10)


def test_conversions_finite_with_gradients_at_extreme_timesteps():
    sch = dif.make_schedule("cosine")  # abar[T-1] ~ 2e-9: the most ill-conditioned table
    t = jnp.array([0, T - 1])
    x0, eps, xt = _noised(sch, t, shape=(2, 8))

    def f(pred):
        out = [dif.convert_prediction(pred, xt, t, sch, a, b)
               for a in dif.PREDICTIONS for b in dif.PREDICTIONS]
        return sum(jnp.sum(o) for o in out)

    assert np.isfinite(float(f(eps)))
    assert np.all(np.isfinite(np.asarray(jax.grad(f)(eps))))


def test_loss_weights_min_snr():
    with jax.enable_x64(True):
        sch = dif.make_schedule("linear")
        t = jnp.arange(0, T, 37)
        snr = np.exp(np.asarray(sch.log_snr)[np.asarray(t)])
        np.testing.assert_array_equal(dif.loss_weight(sch, t), np.ones(t.shape))
        w_eps = dif.loss_weight(sch, t, "min_snr", gamma=5.0, prediction="eps")
        np.testing.assert_allclose(w_eps, np.minimum(snr, 5.0) / snr, rtol=1e-9)
        assert np.all(np.asarray(w_eps)[snr < 5.0] == pytest.approx(1.0))
        # The three weighted losses are the same x0-space min-SNR loss (Hang et al. Sec. 3).
        x0, eps, xt = _noised(sch, t, shape=(t.shape[0], 6))
        eps_hat = eps + 0.1 * jax.random.normal(jax.random.key(3), eps.shape)
        losses = []
        for pred in dif.PREDICTIONS:
            target = dif.convert_prediction(eps, xt, t, sch, "eps", pred)
            out = dif.convert_prediction(eps_hat, xt, t, sch, "eps", pred)
            w = dif.loss_weight(sch, t, "min_snr", gamma=5.0, prediction=pred)
            losses.append(w * jnp.sum((out - target) ** 2, axis=-1))
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-7)
        np.testing.assert_allclose(losses[2], losses[0], rtol=1e-7)


# ----------------------------------------------------------------------------- guidance


def test_classifier_free_guidance_endpoints_and_formula():
    k0, k1 = jax.random.split(jax.random.key(1))
    cond = jax.random.normal(k0, (3, 4, 5)) * 3.0
    uncond = jax.random.normal(k1, (3, 4, 5))
    np.testing.assert_array_equal(dif.classifier_free_guidance(cond, uncond, 1.0), cond)
    np.testing.assert_array_equal(dif.classifier_free_guidance(cond, uncond, 0.0), uncond)
    g = dif.classifier_free_guidance(cond, uncond, 7.5)
    np.testing.assert_allclose(g, np.asarray(uncond) + 7.5 * (np.asarray(cond) - uncond),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(dif.classifier_free_guidance(cond, uncond, 7.5, rescale=0.0), g)
    np.testing.assert_array_equal(
        dif.classifier_free_guidance(cond, uncond, 7.5, rescale=jnp.float32(0.0)), g)
    # Per-sample scales [B].
    scales = jnp.array([0.0, 1.0, 3.0])
    gs = dif.classifier_free_guidance(cond, uncond, scales)
    for i, w in enumerate([0.0, 1.0, 3.0]):
        np.testing.assert_allclose(gs[i], dif.classifier_free_guidance(cond, uncond, w)[i],
                                   rtol=1e-6)


def test_guidance_rescale_matches_lin_et_al():
    k0, k1 = jax.random.split(jax.random.key(2))
    cond = np.asarray(jax.random.normal(k0, (4, 3, 8)), np.float64)
    uncond = np.asarray(jax.random.normal(k1, (4, 3, 8)), np.float64) * 0.5
    w, phi = 5.0, 0.7
    guided = uncond + w * (cond - uncond)
    std = lambda a: a.reshape(a.shape[0], -1).std(axis=1)[:, None, None]
    rescaled = guided * std(cond) / std(guided)  # Eq. 15
    expected = phi * rescaled + (1 - phi) * guided  # Eq. 16
    got = dif.classifier_free_guidance(jnp.asarray(cond, jnp.float32),
                                       jnp.asarray(uncond, jnp.float32), w, rescale=phi)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    full = dif.classifier_free_guidance(cond, uncond, w, rescale=1.0)
    np.testing.assert_allclose(std(np.asarray(full)), std(cond), rtol=1e-5)


def test_static_threshold():
    x = jnp.array([[-3.0, -1.0, 0.2, 1.0, 7.0]])
    np.testing.assert_array_equal(dif.static_threshold(x),
                                  np.float32([[-1.0, -1.0, 0.2, 1.0, 1.0]]))


def test_dynamic_threshold_bounds_noop_and_percentile():
    key = jax.random.key(4)
    x = jax.random.normal(key, (6, 3, 16)) * jnp.array([0.1, 0.3, 2.0, 5.0, 50.0, 1e30])[
        :, None, None]
    y = dif.dynamic_threshold(x, 0.995)
    assert np.all(np.isfinite(np.asarray(y)))
    assert float(jnp.max(jnp.abs(y))) <= 1.0
    # Samples whose |x| stays within [-1, 1] are untouched (s = 1).
    np.testing.assert_array_equal(y[:2], x[:2])
    # NumPy reference: per-sample quantile of |x|, s = max(s, 1), clip and divide.
    flat = np.abs(np.asarray(x, np.float64)).reshape(6, -1)
    s = np.maximum(np.quantile(flat, 0.995, axis=1), 1.0)[:, None, None]
    np.testing.assert_allclose(y, np.clip(np.asarray(x, np.float64), -s, s) / s, rtol=1e-5)
    # Percentile 1.0 divides by max |x|; a lower percentile saturates the largest values.
    big = x[2:3]
    np.testing.assert_allclose(dif.dynamic_threshold(big, 1.0),
                               big / jnp.max(jnp.abs(big)), rtol=1e-6)
    low = dif.dynamic_threshold(big, 0.5)
    assert float(jnp.mean(jnp.abs(low) == 1.0)) == pytest.approx(0.5, abs=1 / 48 + 1e-6)
    # Batched == per-item loop, and gradients are finite at extreme magnitudes.
    per = jnp.concatenate([dif.dynamic_threshold(x[i:i + 1]) for i in range(6)])
    np.testing.assert_allclose(per, y, rtol=1e-6, atol=1e-7)
    g = jax.grad(lambda a: jnp.sum(dif.dynamic_threshold(a) ** 2))(x)
    assert np.all(np.isfinite(np.asarray(g)))
