"""VAE density estimation launcher.

    python -m experiments.vae --config=experiments/configs/vae.py:cpu --workdir=/tmp/vae

Writes to the workdir: config.json, metrics.jsonl (+ tensorboard/), checkpoints/, eval.json
(`test_elbo`: mean -ELBO and `test_nll_iwae_<k>`: mean importance-sampled -log p(x), both in nats
per image, plus `test_kl`, `test_recon`), samples.png (prior samples) and reconstructions.png
(test image above its reconstruction).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxzoo import viz
from jaxzoo.data import digits, pipeline, tfds_utils
from jaxzoo.errors import ConfigError
from jaxzoo.train import cli, loop, mesh as mesh_lib, metrics as metrics_lib
from jaxzoo.train.progress import progress
from jaxzoo.vae import elbo as vae_core
from jaxzoo.vae.model import VAE, importance_nll, negative_elbo


def load_data(config):
    """Returns (train source, test {"x": [M, D]}, image shape, transform).

    The train source yields `image` rows; `transform(batch, rng)` turns a batch of them into
    `{"x": [B, D]}` in [0, 1]: thresholded at 0.5 (static binarisation) or sampled as
    x ~ Bernoulli(intensity) afresh for every batch (dynamic, Burda et al. Sec. 5). The test set
    is binarised once with a fixed seed so every evaluation scores the same data. MNIST is read
    from its TFDS data source row by row (each process reads only its shard); digits are small
    enough to hold in memory.
    """
    data_dir = config.data.data_dir or None
    if config.data.name == "digits":
        train, test = digits.load("train", data_dir), digits.load("test", data_dir)
        max_value = digits.MAX_VALUE
    elif config.data.name == "mnist":
        train = tfds_utils.data_source("mnist", "train", data_dir)
        test = pipeline.to_arrays(tfds_utils.data_source("mnist", "test", data_dir), keys=("image",))
        max_value = 255
    else:
        raise ConfigError(f"data.name={config.data.name!r}; allowed: 'digits', 'mnist'")
    if config.data.binarize not in ("static", "dynamic"):
        raise ConfigError(f"data.binarize={config.data.binarize!r}; allowed: 'static', 'dynamic'")
    shape = test["image"].shape[1:]
    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / max_value
    p_test = flat(test["image"])
    if config.data.binarize == "static":
        x_test = (p_test >= 0.5).astype(np.float32)
        transform = lambda batch, rng: {"x": (flat(batch["image"]) >= 0.5).astype(np.float32)}
    else:
        x_test = (np.random.default_rng(123).random(p_test.shape) < p_test).astype(np.float32)
        transform = lambda batch, rng: {
            "x": (rng.random((len(batch["image"]), p_test.shape[1])) < flat(batch["image"])).astype(np.float32)}
    return train, {"x": x_test}, shape, transform


def make_optimizer(config):
    o = config.optim
    if o.schedule == "constant":
        lr = o.lr
    elif o.schedule == "cosine":
        lr = optax.cosine_decay_schedule(o.lr, config.total_steps, alpha=0.1)
    elif o.schedule == "iwae":  # Burda et al. Sec. 5: 3^i epochs at lr * 10^(-i/7), i = 0..7
        epochs = np.cumsum([3**i for i in range(8)])[:-1]
        lr = optax.piecewise_constant_schedule(
            o.lr, {int(e * o.steps_per_epoch): 10 ** (-1 / 7) for e in epochs})
    else:
        raise ConfigError(f"optim.schedule={o.schedule!r}; allowed: constant, cosine, iwae")
    return optax.adam(lr, b1=o.b1, b2=o.b2, eps=o.eps)


def make_model(config, data_dim: int) -> VAE:
    m = config.model
    return VAE(data_dim=data_dim, latent_dim=m.latent_dim, hidden=tuple(m.hidden),
               likelihood=m.likelihood, activation=m.activation)


def evaluate(config, model: VAE, params, x_test: np.ndarray, key) -> dict:
    """Mean -ELBO (100 posterior samples per image) and importance-sampled NLL, nats/image."""
    e = config.eval
    k = e.num_importance_samples
    if e.max_examples:
        x_test = x_test[:e.max_examples]

    @jax.jit
    def scores(params, x, key):
        key_elbo, key_iw = jax.random.split(key)
        mean, logvar = model.apply(params, x, method=VAE.encode)
        z = vae_core.reparameterize(key_elbo, mean, logvar, 100)
        recon = -jnp.mean(model.apply(params, x, z, method=VAE.log_px_given_z), axis=0)
        kl = vae_core.gaussian_kl_to_standard(mean, logvar)
        nll = importance_nll(model, params, x, key_iw, k, e.chunk_size)
        return recon, kl, nll

    out = {"recon": [], "kl": [], "nll": []}
    starts = range(0, len(x_test), e.batch_size)
    with progress(len(starts), desc=f"eval (k={k})", unit="batch") as bar:
        for i, start in enumerate(starts):
            recon, kl, nll = scores(params, x_test[start:start + e.batch_size], jax.random.fold_in(key, i))
            for name, v in zip(out, (recon, kl, nll)):
                out[name].append(np.asarray(v))
            bar.update(1)
    recon, kl, nll = (np.concatenate(out[n]) for n in ("recon", "kl", "nll"))
    return {"test_elbo": float(np.mean(recon + kl)), "test_recon": float(np.mean(recon)),
            "test_kl": float(np.mean(kl)), f"test_nll_iwae_{k}": float(np.mean(nll)),
            "num_test_examples": int(len(x_test))}


def save_pictures(model: VAE, params, x_test, shape, workdir, key) -> None:
    if jax.process_index() != 0:
        return
    h, w = shape[:2]
    z = jax.random.normal(key, (64, model.latent_dim))
    samples = np.asarray(model.apply(params, z, method=VAE.mean_output))
    viz.save_png(workdir / "samples.png", viz.image_grid(samples.reshape(-1, h, w), 8), scale=4)
    x = x_test[:32]
    mean, _ = model.apply(params, x, method=VAE.encode)
    recon = np.asarray(model.apply(params, mean, method=VAE.mean_output))
    rows = np.concatenate([x.reshape(4, 8, h, w), recon.reshape(4, 8, h, w)], axis=1)
    viz.save_png(workdir / "reconstructions.png", viz.image_grid(rows.reshape(-1, h, w), 8), scale=4)


def train_and_evaluate(config, workdir, hooks=()):
    """Trains, then evaluates and writes eval.json. Returns the eval dict (None if preempted)."""
    workdir = pathlib.Path(workdir)
    train, test, shape, transform = load_data(config)
    data_dim = test["x"].shape[1]
    model = make_model(config, data_dim)
    loader = pipeline.StepIndexedLoader(train, config.batch_size, seed=config.seed,
                                        transform=transform, keys=("image",))
    task = loop.Task(
        init_params=lambda key: model.init(key, jnp.zeros((1, data_dim)), key),
        loss_fn=lambda params, batch, key: negative_elbo(model, params, batch["x"], key),
        tx=make_optimizer(config),
        loader=loader,
    )
    result = loop.train(config, workdir, task, hooks=hooks)
    if result.preempted:
        return None
    params = mesh_lib.to_host(result.state.params)
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)
    metrics = evaluate(config, model, params, test["x"], eval_key)
    metrics_lib.write_eval(workdir, metrics, result.step)
    save_pictures(model, params, test["x"], shape, workdir, eval_key)
    return metrics


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
