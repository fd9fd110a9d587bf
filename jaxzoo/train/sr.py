"""What the super-resolution launchers (experiments/esrgan.py, experiments/srgan.py) share:
data from the config, two-network GAN training through the one-network runtime, starting the GAN
stage from the PSNR stage's checkpoint, and evaluation (eval.json + PNG triptychs).

Two networks, one optimiser step. The runtime (`jaxzoo.train.loop`) differentiates one
`loss_fn(params, batch, key)` and applies one optax transformation. A GAN stage therefore keeps
`params = {"generator": ..., "discriminator": ...}`, gives each sub-tree its own optimiser with
`gan_optimizer` (optax.multi_transform keyed by the top-level name), and returns
`loss = L_G + L_D` where
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

import json
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxzoo import metrics as image_metrics
from jaxzoo import viz
from jaxzoo.core.sr import rgb_to_y, shave
from jaxzoo.data import sr_images
from jaxzoo.train import loop, mesh as mesh_lib
from jaxzoo.train.config import ConfigError
from jaxzoo.train.progress import progress

NETWORKS = ("generator", "discriminator")


# ----------------------------------------------------------------------------- data


def load_data(config):
    """(train pairs, test pairs) for `config.data` (source, test_source, test_dir, ...)."""
    d = config.data
    for source, field in ((d.source, "train_dir"), (d.test_source, "test_dir")):
        if source not in sr_images.SOURCES:
            raise ConfigError(f"data source {source!r}; allowed: {sr_images.SOURCES}")
        if source == "dir" and not d[field]:
            raise ConfigError(f"data source 'dir' needs --config.data.{field}=/path/to/HR/images")
    train = sr_images.load_pairs(d.source, "train", scale=d.scale, root=d.train_dir, data_dir=d.tfds_dir,
                                 limit=d.max_train_images)
    test = sr_images.load_pairs(d.test_source, "test", scale=d.scale, root=d.test_dir, data_dir=d.tfds_dir,
                                limit=config.eval.max_images)
    return train, test


def make_loader(config, train_pairs):
    return sr_images.training_loader(train_pairs, config.batch_size, config.data.patch_size,
                                     seed=config.seed, scale=config.data.scale,
                                     augment=config.data.augment)


# ----------------------------------------------------------------------------- GAN plumbing


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

    generate: `(generator params, lr) -> sr`; discriminate: `(discriminator params, x) -> logits`.
    generator_loss: `(sr, hr, real_logits, fake_logits) -> (L_G, {term: scalar})`, where
      real_logits carry no gradient and fake_logits = D(sr) with D's params frozen, so L_G
      trains the generator only.
    discriminator_loss: `(real_logits, fake_logits) -> (L_D, terms)` with fake_logits computed
      on stop_gradient(sr), so L_D trains the discriminator only.
    Returns `L_G + L_D` and every term plus `loss_g`, `loss_d` (see the module docstring).
    """

    def loss_fn(params, batch, key):
        del key
        g, d = params["generator"], params["discriminator"]
        sr = generate(g, batch["lr"])
        real = discriminate(d, batch["hr"])
        loss_d, d_terms = discriminator_loss(real, discriminate(d, jax.lax.stop_gradient(sr)))
        fake = discriminate(jax.lax.stop_gradient(d), sr)
        loss_g, g_terms = generator_loss(sr, batch["hr"], jax.lax.stop_gradient(real), fake)
        return loss_g + loss_d, {"loss_g": loss_g, "loss_d": loss_d, **g_terms, **d_terms}

    return loss_fn


def multistep_schedule(lr: float, milestones, gamma: float = 0.5) -> optax.Schedule:
    """`lr`, multiplied by `gamma` at each step in `milestones` (PyTorch's MultiStepLR; ESRGAN
    halves, gamma 0.5)."""
    return optax.piecewise_constant_schedule(lr, {int(m): gamma for m in milestones})


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


def read_config(workdir) -> ml_collections.ConfigDict:
    """The config a run wrote to `workdir/config.json`."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: init_from must be the workdir of a finished "
                                "psnr-stage run")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_generator(init_from: str, config, make_psnr_task: Callable):
    """The generator params of the newest checkpoint of the psnr-stage run in `init_from`.

    `make_psnr_task(psnr_config)` builds that run's loop.Task (its loader is not used). The
    psnr run's model settings must equal `config.model` (the GAN stage continues that network).
    """
    if not init_from:
        raise ConfigError("the gan stage starts from a trained psnr-stage model: set "
                          "--config.init_from=/path/to/psnr/workdir")
    psnr_config = read_config(init_from)
    if psnr_config.get("stage") != "psnr":
        raise ConfigError(f"init_from={init_from!r} holds a {psnr_config.get('stage')!r}-stage run; "
                          "it must be a psnr-stage workdir")
    ours, theirs = config.model.to_dict(), psnr_config.model.to_dict()
    if json.loads(json.dumps(ours, default=str)) != theirs:
        raise ConfigError(f"config.model {ours} differs from the psnr run's model {theirs} "
                          f"({init_from}/config.json)")
    step, state = loop.restore_state(psnr_config, init_from, make_psnr_task(psnr_config))
    print(f"[jaxzoo] generator initialised from {init_from} (psnr step {step})", flush=True)
    return mesh_lib.to_host(state.params)


# ----------------------------------------------------------------------------- evaluation


def quantize(img) -> np.ndarray:
    """Clip to [0, 1] and round to 8-bit levels, as saved images (and SR benchmarks) are."""
    return np.round(np.clip(np.asarray(img, np.float32), 0.0, 1.0) * 255.0) / 255.0


def y_metrics(pred, truth, border: int) -> tuple[float, float]:
    """(PSNR, SSIM) on the BT.601 luma of [H, W, 3] images after shaving `border` pixels."""
    a = shave(rgb_to_y(jnp.asarray(pred, jnp.float32)), border)
    b = shave(rgb_to_y(jnp.asarray(truth, jnp.float32)), border)
    return float(image_metrics.psnr(a, b)), float(image_metrics.ssim(a, b))


def evaluate(config, generate: Callable, params, test_pairs, workdir) -> dict:
    """PSNR/SSIM of the model and of bicubic upsampling on each test image (Y channel, `scale`
    pixels shaved), their means, and `test_<k>_<name>.png` triptychs (bicubic | output | truth).

    generate: `(params, lr [1, h, w, 3]) -> [1, scale h, scale w, 3]`.
    """
    workdir = pathlib.Path(workdir)
    scale, border = config.data.scale, config.data.scale
    count = len(test_pairs) if not config.eval.max_images else min(config.eval.max_images, len(test_pairs))
    run = jax.jit(generate)
    out = {k: [] for k in ("test_psnr_per_image", "test_ssim_per_image", "bicubic_psnr_per_image",
                           "bicubic_ssim_per_image", "test_images")}
    with progress(count, desc="eval", unit="image") as bar:
        for k in range(count):
            pair = test_pairs[k]
            hr, lr = sr_images.to_float(pair.hr), sr_images.to_float(pair.lr)
            pred = quantize(run(params, jnp.asarray(lr[None]))[0])
            bicubic = quantize(sr_images.upsample_bicubic(lr, scale))
            p, s = y_metrics(pred, hr, border)
            bp, bs = y_metrics(bicubic, hr, border)
            for name, v in (("test_psnr", p), ("test_ssim", s), ("bicubic_psnr", bp), ("bicubic_ssim", bs)):
                out[f"{name}_per_image"].append(v)
            out["test_images"].append(pair.name)
            if k < config.eval.num_pictures and jax.process_index() == 0:
                viz.save_png(workdir / f"test_{k}_{pair.name}.png", np.concatenate([bicubic, pred, hr], 1))
            bar.update(1)
    for name in ("test_psnr", "test_ssim", "bicubic_psnr", "bicubic_ssim"):
        out[name] = float(np.mean(out[f"{name}_per_image"]))
    out["num_test_images"] = count
    return out
