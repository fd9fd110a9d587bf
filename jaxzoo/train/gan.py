"""Two networks trained in one optimiser step through the one-network runtime (GANs).

The runtime (`jaxzoo.train.loop`) differentiates one `loss_fn(params, batch, key)` and applies one
optax transformation. A GAN therefore keeps `params = {"generator": ..., "discriminator": ...}`,
gives each sub-tree its own optimiser with `gan_optimizer` (optax.multi_transform keyed by the
top-level name), and returns `loss = L_G + L_D` where
  * L_D is computed on `stop_gradient(G(x))`, so it sends no gradient to the generator, and
  * L_G is computed with `stop_gradient(discriminator params)`, so it sends none to D.
The gradient of the sum is then (dL_G/dG, dL_D/dD), both evaluated at the current (G, D): one
step updates both networks simultaneously from the same batch. That is what ESRGAN's and
BasicSR's `optimize_parameters` do: the fake batch is produced once by the current G; the G step
scores it with the not-yet-updated D; the D step uses that same fake batch, detached (i.e. the
pre-update G). So both updates are gradients at the old (G, D), exactly as here. The reported
`loss` is the sum, and each term is reported by name.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

NETWORKS = ("generator", "discriminator")


def gan_optimizer(generator_tx: optax.GradientTransformation,
                  discriminator_tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """One optax transformation for `{"generator": ..., "discriminator": ...}` params that
    applies `generator_tx` to the first sub-tree and `discriminator_tx` to the second, each with
    its own state (e.g. its own Adam moments)."""

    def labels(params):
        if set(params) != set(NETWORKS):
            raise ValueError(f"GAN params must have exactly the keys {NETWORKS}, got {sorted(params)}")
        return {name: jax.tree.map(lambda _: name, params[name]) for name in NETWORKS}

    return optax.multi_transform({"generator": generator_tx, "discriminator": discriminator_tx}, labels)


def gan_loss_fn(generate: Callable, discriminate: Callable, generator_loss: Callable,
                discriminator_loss: Callable):
    """`loss_fn(params, batch, key)` for the runtime that trains both networks in one step.

    generate: `(generator params, batch["lr"]) -> fake`; discriminate: `(discriminator params,
      x) -> logits`; `batch["hr"]` holds the real samples.
    generator_loss: `(fake, real_x, real_logits, fake_logits) -> (L_G, {term: scalar})`, where
      real_logits carry no gradient and fake_logits = D(fake) with D's params frozen, so L_G
      trains the generator only.
    discriminator_loss: `(real_logits, fake_logits) -> (L_D, terms)` with fake_logits computed
      on stop_gradient(fake), so L_D trains the discriminator only.
    Returns `L_G + L_D` and every term plus `loss_g`, `loss_d` and the mean real and fake logits
    `d_real_logit`, `d_fake_logit` (how far apart the discriminator holds them).
    """

    def loss_fn(params, batch, key):
        del key
        g, d = params["generator"], params["discriminator"]
        fake_x = generate(g, batch["lr"])
        real = discriminate(d, batch["hr"])
        fake_detached = discriminate(d, jax.lax.stop_gradient(fake_x))
        loss_d, d_terms = discriminator_loss(real, fake_detached)
        fake = discriminate(jax.lax.stop_gradient(d), fake_x)
        loss_g, g_terms = generator_loss(fake_x, batch["hr"], jax.lax.stop_gradient(real), fake)
        logits = {"d_real_logit": jnp.mean(real), "d_fake_logit": jnp.mean(fake_detached)}
        return loss_g + loss_d, {"loss_g": loss_g, "loss_d": loss_d, **g_terms, **d_terms, **logits}

    return loss_fn


def discriminator_apply(model, sample_shape) -> Callable:
    """`(params, x) -> logits` running `model` in training mode (batch statistics), for
    discriminators with BatchNorm (`model(x, train=True)`). The running averages it would update
    are discarded: a discriminator is only ever evaluated while training, where PyTorch's
    BatchNorm also normalises with the batch statistics, so running statistics never influence
    anything. They are therefore not part of the trained state; placeholder zeros (from the
    shapes of `model.init` on `sample_shape`) fill the collection."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(sample_shape))
    stats = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes.get("batch_stats"))

    def apply(params, x):
        if stats is None:
            return model.apply({"params": params}, x, train=True)
        out, _ = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                             mutable=["batch_stats"])
        return out

    return apply
