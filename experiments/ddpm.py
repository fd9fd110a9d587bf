"""DDPM launcher: trains a U-Net noise predictor, samples with DDIM and DPM-Solver++, scores them.

    python -m experiments.ddpm --config=experiments/configs/ddpm.py:cpu --workdir=/tmp/ddpm

Writes to the workdir: config.json, metrics.jsonl (+ tensorboard/), checkpoints/,
fd_classifier.msgpack (the feature network, trained once per workdir), eval.json, samples.png
(an 8x8 grid from the last sampler setting) and samplers.png (one row per sampler setting, the
same starting noise in every row).

eval.json: ``fd_small_cnn_<method>_<steps>`` is the Frechet distance between Gaussians fitted to
the penultimate features of a small CNN classifier trained on the same training images (NOT
Inception FID; comparable only with other numbers from this launcher and config) for
``eval.num_samples`` samples of the EMA parameters against every training image; beside it
``fd_small_cnn_floor_test`` (the held-out test images: what a perfect model would score, up to
the sample size; the cpu variant draws as many samples as there are test images so that both carry
the same small-sample bias) and ``fd_small_cnn_ceiling_noise`` (Gaussian noise clipped to the
image range), the classifier's test accuracy, timings, and ``nn_train_distance_ratio``: the
median pixel distance of the last setting's samples to their nearest training image over the
same median for the test images (about 1: samples are as novel as unseen data; near 0: copies).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxzoo import viz
from jaxzoo.data import digits, pipeline, tfds_utils
from jaxzoo.diffusion import evaluation, gaussian as diffusion, samplers
from jaxzoo.diffusion.unet import UNet, denoiser
from jaxzoo.errors import ConfigError
from jaxzoo.train import cli, loop, mesh as mesh_lib, metrics as metrics_lib
from jaxzoo.train.progress import progress

DATASETS = ("digits16", "cifar10")


@dataclasses.dataclass
class Data:
    """``train`` / ``test``: ``{"image": [N, H, W, C], "label": [N]}``; images are uint8
    (0..255) or float32 already in [-1, 1]; :func:`to_model_range` maps either to [-1, 1]."""

    train: dict
    test: dict
    num_classes: int

    @property
    def shape(self):
        return self.train["image"].shape[1:]


def to_model_range(images) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    return images.astype(np.float32)


def digits16(split: str, data_dir=None, size: int = 16) -> dict:
    """scikit-learn's 8x8 digits (values 0..16), bilinearly resized to ``size`` x ``size`` and
    scaled to [-1, 1]: ``image`` float32 [N, size, size, 1], ``label`` int64 [N]."""
    d = digits.load(split, data_dir)
    x = jnp.asarray(d["image"], jnp.float32) / digits.MAX_VALUE
    x = jax.image.resize(x, (x.shape[0], size, size, 1), "linear")
    return {"image": np.asarray(jnp.clip(x, 0.0, 1.0) * 2.0 - 1.0), "label": d["label"]}


def load_data(config) -> Data:
    data_dir = config.data.data_dir or None
    if config.data.name == "digits16":
        return Data(digits16("train", data_dir), digits16("test", data_dir), 10)
    if config.data.name == "cifar10":
        arrays = lambda split: pipeline.to_arrays(
            tfds_utils.data_source("cifar10", split, data_dir), keys=("image", "label"))
        return Data(arrays("train"), arrays("test"), 10)
    raise ConfigError(f"data.name={config.data.name!r}; allowed: {DATASETS}")


def make_schedule(config) -> diffusion.Schedule:
    d = config.diffusion
    return diffusion.make_schedule(d.schedule, d.num_train_steps, d.beta_start, d.beta_end)


def make_model(config, out_channels: int) -> UNet:
    m = config.model
    return UNet(out_channels=out_channels, channels=m.channels, channel_mult=tuple(m.channel_mult),
                num_res_blocks=m.num_res_blocks, attention_resolutions=tuple(m.attention_resolutions),
                num_heads=m.num_heads, dropout=m.dropout, num_groups=m.num_groups,
                scale_shift_norm=m.scale_shift_norm, num_classes=m.num_classes)


def make_optimizer(config):
    o = config.optim
    lr = optax.linear_schedule(0.0, o.lr, o.warmup_steps) if o.warmup_steps else o.lr
    return optax.chain(optax.clip_by_global_norm(o.grad_clip), optax.adam(lr, b1=o.b1, b2=o.b2))


def make_loss_fn(config, model: UNet, schedule: diffusion.Schedule):
    """DDPM's L_simple (Eq. 14, `diffusion.denoising_loss`) in the space of
    ``diffusion.prediction``, optionally weighted, t uniform in [0, T); class labels are dropped
    with probability ``label_dropout`` for classifier-free guidance."""
    d = config.diffusion
    conditional = config.model.num_classes > 0

    def loss_fn(params, batch, key):
        x0 = batch["image"]
        key_t, key_eps, key_drop, key_dropout = jax.random.split(key, 4)
        b = x0.shape[0]
        t = jax.random.randint(key_t, (b,), 0, schedule.num_train_steps)
        eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
        kwargs = {}
        if conditional:
            kwargs = {"label": batch["label"],
                      "drop": jax.random.bernoulli(key_drop, config.label_dropout, (b,))}
        predict = lambda x_t, t: model.apply(params, x_t, t, train=True,  # noqa: E731
                                             rngs={"dropout": key_dropout}, **kwargs)
        loss, per_sample = diffusion.denoising_loss(predict, schedule, x0, t, eps,
                                                    prediction=d.prediction, weighting=d.loss_weight)
        return loss, {"mse": jnp.mean(per_sample)}

    return loss_fn


def make_task(config, data: Data, model: UNet) -> loop.Task:
    schedule = make_schedule(config)
    flip = config.data.random_flip

    def transform(batch, rng):
        x = to_model_range(batch["image"])
        if flip:
            x = np.where(rng.random(len(x))[:, None, None, None] < 0.5, x[:, :, ::-1], x)
        return {"image": x, "label": batch["label"].astype(np.int32)}

    shape = data.shape
    return loop.Task(
        init_params=lambda key: model.init(key, jnp.zeros((1, *shape)), jnp.zeros((1,), jnp.int32)),
        loss_fn=make_loss_fn(config, model, schedule),
        tx=make_optimizer(config),
        loader=pipeline.StepIndexedLoader(data.train, config.batch_size, seed=config.seed,
                                          transform=transform),
    )


def generate(config, model: UNet, params, key, shape, method: str, num_steps: int,
             batch_size: int = 0, mesh=None) -> np.ndarray:
    """Images of ``shape`` ``[N, H, W, C]`` in [-1, 1] from noise drawn with ``key`` (the same key
    gives the same starting noise for every sampler), in batches of ``batch_size`` (0: all).
    With a ``mesh`` of several devices each batch is split over them (padded to a multiple of
    the device count). Class-conditional models draw labels ``i % num_classes`` and are guided
    with ``eval.guidance_scale`` when it is not 1."""
    schedule = make_schedule(config)
    num_samples = shape[0]
    x_T = np.asarray(jax.random.normal(key, tuple(shape)))
    batch_size = batch_size or num_samples
    devices = mesh.devices.size if mesh is not None else 1
    if devices > 1:  # a global array from the (identical) host copy on every process
        sharding = mesh_lib.batch_sharding(mesh)
        place = lambda a: jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
    else:
        place = jnp.asarray
    scale = float(config.eval.guidance_scale)
    guided = model.num_classes > 0 and scale != 1.0
    out = []
    for start in range(0, num_samples, batch_size):
        x = x_T[start:start + batch_size]
        n, pad = len(x), (-len(x)) % devices
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        label = None
        if model.num_classes > 0:
            label = place(np.arange(start, start + len(x)) % model.num_classes)
        fn = denoiser(model, params, guided=guided, label=label)
        images = samplers.sample(
            fn, place(x), None, schedule, num_steps, method=method,
            prediction=config.diffusion.prediction, timestep_spacing=config.eval.spacing,
            guidance_scale=scale if guided else None)
        out.append(mesh_lib.to_host(images)[:n])
    return np.clip(np.concatenate(out), -1.0, 1.0)


def fd_classifier(config, data: Data, workdir: pathlib.Path):
    """The Frechet feature network, trained once per workdir (`evaluation.cached_classifier`).
    Returns ``(model, params, test_accuracy, seconds_spent)``."""
    f = config.fd
    t0 = time.perf_counter()
    model, params = evaluation.cached_classifier(
        workdir / "fd_classifier.msgpack", to_model_range(data.train["image"]), data.train["label"],
        data.num_classes, widths=tuple(f.widths), feature_dim=f.feature_dim, steps=f.steps,
        batch_size=f.batch_size, lr=f.lr, seed=f.seed, tag=config.data.name)
    acc = evaluation.accuracy(model, params, to_model_range(data.test["image"]), data.test["label"])
    return model, params, acc, time.perf_counter() - t0


# ----------------------------------------------------------------------------- evaluation


def evaluate(config, model: UNet, params, data: Data, workdir: pathlib.Path, key,
             mesh=None) -> tuple[dict, dict]:
    """FD of every sampler setting (plus floor and ceiling); returns (metrics, {setting: images}).
    Sampling runs data-parallel over ``mesh`` when given."""
    t_start = time.perf_counter()
    if mesh is not None:
        params = jax.device_put(params, mesh_lib.replicated(mesh))
    e = config.eval
    clf, clf_params, acc, clf_seconds = fd_classifier(config, data, workdir)
    feats = lambda images: evaluation.feature_moments(clf, clf_params, to_model_range(images))  # noqa: E731
    reference = to_model_range(data.train["image"])
    if config.fd.max_reference and len(reference) > config.fd.max_reference:
        keep = np.random.default_rng(0).permutation(len(reference))[:config.fd.max_reference]
        reference = reference[np.sort(keep)]
    ref = feats(reference)
    n = e.num_samples
    noise = np.clip(np.asarray(jax.random.normal(jax.random.fold_in(key, 1), (n, *data.shape))), -1, 1)
    metrics = {
        "fd_features": (f"penultimate ReLU layer ({config.fd.feature_dim}-d) of a small CNN "
                        f"classifier trained on the {config.data.name} training images; not "
                        "Inception FID"),
        "fd_classifier_test_accuracy": acc,
        "fd_classifier_seconds": clf_seconds,
        "num_fd_reference": int(len(reference)),
        "num_fd_samples": int(n),
        "num_fd_test": int(len(data.test["image"])),
        "fd_small_cnn_floor_test": evaluation.frechet_distance64(feats(data.test["image"]), ref),
        "fd_small_cnn_ceiling_noise": evaluation.frechet_distance64(feats(noise), ref),
    }
    images = {}
    settings = [(m, s) for m in e.methods for s in e.num_steps]
    with progress(len(settings), desc="eval samplers", unit="setting") as bar:
        for method, steps in settings:
            t0 = time.perf_counter()
            x = generate(config, model, params, key, (n, *data.shape), method, steps, e.batch_size,
                         mesh)
            name = f"{method}_{steps}"
            metrics[f"sampling_seconds_{name}"] = time.perf_counter() - t0
            metrics[f"fd_small_cnn_{name}"] = evaluation.frechet_distance64(feats(x), ref)
            images[name] = x
            bar.update(1)
    if images:  # memorisation check on the last setting: ~1 = as novel as held-out digits
        test_nn = np.median(evaluation.nearest_train_distance(to_model_range(data.test["image"]), reference))
        metrics["nn_train_distance_ratio"] = float(
            np.median(evaluation.nearest_train_distance(x, reference)) / test_nn)
    metrics["eval_seconds"] = time.perf_counter() - t_start
    return metrics, images


def save_pictures(config, images: dict, workdir: pathlib.Path) -> None:
    if jax.process_index() != 0 or not images:
        return
    unit = lambda x: (x + 1.0) / 2.0
    last = list(images.values())[-1]
    grid = config.eval.grid_size
    viz.save_png(workdir / "samples.png", viz.image_grid(unit(last[:grid]), 8), scale=4)
    cols = min(10, len(last))
    rows = np.concatenate([x[:cols] for x in images.values()])
    viz.save_png(workdir / "samplers.png", viz.image_grid(unit(rows), cols), scale=4)


def train_and_evaluate(config, workdir, hooks=()):
    """Trains, then evaluates and writes eval.json. Returns the eval dict (None if preempted)."""
    workdir = pathlib.Path(workdir)
    data = load_data(config)
    model = make_model(config, data.shape[-1])
    result = loop.train(config, workdir, make_task(config, data, model), hooks=hooks)
    if result.preempted:
        return None
    state = result.state  # sample with the EMA parameters when the config keeps them
    params = mesh_lib.to_host(state.ema_params if state.ema_params is not None else state.params)
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)
    metrics, images = evaluate(config, model, params, data, workdir, eval_key, result.mesh)
    metrics_lib.write_eval(workdir, metrics, result.step)
    save_pictures(config, images, workdir)
    return metrics


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
