"""Pixel and perceptual losses of SRGAN (Ledig et al. 1609.04802) and ESRGAN (Wang et al.
1809.00219), and ESRGAN's network interpolation. Pure jax.numpy. The adversarial losses both
papers use are in `jaxzoo.core.gan_losses`.

Conventions:
  pred, target       images or feature maps of equal shape [...]; pixel and feature losses
                     are means over every element.
  params_a/params_b  pytrees of floating-point arrays with identical structure and shapes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "interpolate_params",
    "l1_loss",
    "l2_loss",
    "perceptual_loss",
]


def _pair(a, b, what):
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"{what}: shapes differ, {a.shape} vs {b.shape}")
    return a, b


def l1_loss(pred, target):
    """Mean absolute error, ESRGAN's L_1 = E ||G(x_i) - y||_1 (Sec. 3.2, Eq. 3)."""
    pred, target = _pair(pred, target, "l1_loss")
    return jnp.mean(jnp.abs(pred - target))


def l2_loss(pred, target):
    """Mean squared error, SRGAN's pixel-wise MSE loss (Eq. 4) averaged over all elements."""
    pred, target = _pair(pred, target, "l2_loss")
    return jnp.mean(jnp.square(pred - target))


def perceptual_loss(features_pred, features_target, criterion: str = "l1"):
    """Distance between feature maps phi(G(x)) and phi(y) of a fixed network.

    ESRGAN (Sec. 3.3) uses the L1 distance of VGG19 conv5_4 features *before* activation
    (`criterion="l1"`, the default); SRGAN's VGG loss (Eq. 5) is the mean squared distance
    of post-activation VGG19 features (`criterion="l2"`). The features come from
    `jaxzoo.sr.vgg.VGGFeatures`; the caller picks the layer and stops gradients into
    the target branch.
    """
    if criterion == "l1":
        return l1_loss(features_pred, features_target)
    if criterion == "l2":
        return l2_loss(features_pred, features_target)
    raise ValueError(f"criterion={criterion!r}; allowed: 'l1', 'l2'")


def _key_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                    for k in path) or "<root>"


def interpolate_params(params_a, params_b, alpha):
    """ESRGAN network interpolation (Sec. 3.4, Eq. 4): (1 - alpha) theta_a + alpha theta_b.

    With theta_a the PSNR-oriented and theta_b the GAN generator, alpha in [0, 1] trades
    fidelity for perceptual quality. alpha = 0 returns params_a and alpha = 1 params_b exactly
    (for finite parameters). A Python alpha outside [0, 1] is a ValueError; a traced alpha is
    not checked. Mismatched trees raise a ValueError naming the first differing key or shape.
    Leaves keep the dtype of params_a.
    """
    if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    flat_a, tree_a = jax.tree_util.tree_flatten_with_path(params_a)
    flat_b, tree_b = jax.tree_util.tree_flatten_with_path(params_b)
    keys_a = [_key_name(p) for p, _ in flat_a]
    keys_b = [_key_name(p) for p, _ in flat_b]
    if keys_a != keys_b or tree_a != tree_b:
        only_a = [k for k in keys_a if k not in set(keys_b)]
        only_b = [k for k in keys_b if k not in set(keys_a)]
        if only_a:
            raise ValueError(f"params_b lacks key {only_a[0]!r} (and {len(only_a) - 1} more)")
        if only_b:
            raise ValueError(f"params_a lacks key {only_b[0]!r} (and {len(only_b) - 1} more)")
        raise ValueError("params_a and params_b have the same keys but different tree structure")
    for key, (_, a), (_, b) in zip(keys_a, flat_a, flat_b):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(f"shape mismatch at {key!r}: {jnp.shape(a)} vs {jnp.shape(b)}")
        if not jnp.issubdtype(jnp.result_type(a), jnp.inexact):
            raise ValueError(f"{key!r} is not floating point ({jnp.result_type(a)})")
    leaves = [((1 - alpha) * a + alpha * b).astype(jnp.result_type(a))
              for (_, a), (_, b) in zip(flat_a, flat_b)]
    return jax.tree_util.tree_unflatten(tree_a, leaves)
