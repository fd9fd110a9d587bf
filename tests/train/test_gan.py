"""Two-network GAN steps through the one-network runtime: each network gets only its own loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxzoo.train import gan


def _toy():
    generate = lambda g, lr: g["w"] * lr + g["b"]  # noqa: E731
    discriminate = lambda d, x: d["v"] * jnp.mean(x ** 2, axis=(1, 2, 3)) + d["c"]  # noqa: E731

    def generator_loss(sr, hr, real, fake):
        pixel = jnp.mean((sr - hr) ** 2)
        adv = jnp.mean(jax.nn.softplus(-fake)) + 0.1 * jnp.mean(real)
        return pixel + 0.5 * adv, {"pixel": pixel, "adv": adv}

    def discriminator_loss(real, fake):
        loss = jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
        return loss, {"d": loss}

    rng = np.random.default_rng(0)
    batch = {"lr": jnp.asarray(rng.random((3, 2, 2, 1))), "hr": jnp.asarray(rng.random((3, 2, 2, 1)))}
    params = {"generator": {"w": jnp.asarray(0.7), "b": jnp.asarray(0.1)},
              "discriminator": {"v": jnp.asarray(-1.3), "c": jnp.asarray(0.2)}}
    return generate, discriminate, generator_loss, discriminator_loss, batch, params


def test_each_network_gets_only_its_own_loss_gradient():
    generate, discriminate, g_loss, d_loss, batch, params = _toy()
    loss_fn = gan.gan_loss_fn(generate, discriminate, g_loss, d_loss)
    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, None)
    assert float(loss) == pytest.approx(float(terms["loss_g"] + terms["loss_d"]))

    def only_g(g):  # the generator's loss with the discriminator held fixed
        sr = generate(g, batch["lr"])
        d = params["discriminator"]
        return g_loss(sr, batch["hr"], discriminate(d, batch["hr"]), discriminate(d, sr))[0]

    def only_d(d):  # the discriminator's loss on a fixed fake batch
        sr = generate(params["generator"], batch["lr"])
        return d_loss(discriminate(d, batch["hr"]), discriminate(d, sr))[0]

    ref_g, ref_d = jax.grad(only_g)(params["generator"]), jax.grad(only_d)(params["discriminator"])
    for k in ref_g:
        np.testing.assert_allclose(grads["generator"][k], ref_g[k], rtol=1e-6)
    for k in ref_d:
        np.testing.assert_allclose(grads["discriminator"][k], ref_d[k], rtol=1e-6)
    assert float(jnp.abs(ref_g["w"])) > 0 and float(jnp.abs(ref_d["v"])) > 0


def test_one_joint_step_equals_two_updates_from_the_same_point():
    generate, discriminate, g_loss, d_loss, batch, params = _toy()
    loss_fn = gan.gan_loss_fn(generate, discriminate, g_loss, d_loss)
    tx = gan.gan_optimizer(optax.sgd(0.1), optax.sgd(0.3))
    grads = jax.grad(lambda p: loss_fn(p, batch, None)[0])(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    # Alternating updates, each at the old (G, D), as ESRGAN's optimize_parameters does.
    sr_old = generate(params["generator"], batch["lr"])
    d_old = params["discriminator"]
    gg = jax.grad(lambda g: g_loss(generate(g, batch["lr"]), batch["hr"], discriminate(d_old, batch["hr"]),
                                   discriminate(d_old, generate(g, batch["lr"])))[0])(params["generator"])
    gd = jax.grad(lambda d: d_loss(discriminate(d, batch["hr"]), discriminate(d, sr_old))[0])(d_old)
    for k in gg:
        np.testing.assert_allclose(new["generator"][k], params["generator"][k] - 0.1 * gg[k], rtol=1e-6)
    for k in gd:
        np.testing.assert_allclose(new["discriminator"][k], d_old[k] - 0.3 * gd[k], rtol=1e-6)


def test_gan_optimizer_keeps_separate_states_and_checks_keys():
    params = {"generator": {"w": jnp.ones(2)}, "discriminator": {"v": jnp.ones(3)}}
    tx = gan.gan_optimizer(optax.adam(1e-3), optax.sgd(1.0))
    state = tx.init(params)
    grads = {"generator": {"w": jnp.full(2, 5.0)}, "discriminator": {"v": jnp.full(3, 2.0)}}
    updates, _ = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["generator"]["w"], -1e-3, rtol=1e-4)  # Adam's first step
    np.testing.assert_allclose(updates["discriminator"]["v"], -2.0)
    with pytest.raises(ValueError, match="generator"):
        tx.init({"g": params["generator"]})
