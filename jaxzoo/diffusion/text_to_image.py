"""What the text-to-image launchers share (experiments/glide.py, imagen.py, dalle2.py): ShapeWorld
image-caption pairs at the generation size, the CLIP and the attribute probe that score samples,
and one evaluation that writes the same metrics for every model.

Images are float32 in [-1, 1] inside models and uint8 on disk; ``S = config.data.image_size``
(16, 32 or 64: 16 is ShapeWorld's 32x32 rendering averaged over 2x2 pixels). Captions are token
ids ``[N, data.max_len]`` of ShapeWorld's tokenizer ([BOS] text [EOS] [PAD]...).

Scoring (:func:`evaluate`), for every sampler setting a launcher lists (sampler steps, guidance
weight, thresholding), on the test captions of :func:`benchmark` (DrawBench-style categories,
Saharia et al. 2022, arXiv 2205.11487, Sec. 4.2, built by :mod:`jaxzoo.diffusion.probe`):
* ``caption_accuracy_<category>_<setting>``: the fraction of generated images whose objects the
  attribute probe reads as the caption says; ``real_caption_accuracy_<category>`` is the same
  for the real images the captions describe (the probe's own accuracy: the ceiling).
* ``clip_score_<setting>``: the mean cosine between the CLIP embeddings of each image
  (upsampled to CLIP's 32x32 when smaller) and its caption (CLIP score as GLIDE, Sec. 5.1, and
  Imagen, Sec. 4.1, report it, without CLIPScore's 2.5 factor and clipping at 0).
* ``fd_probe_<setting>``: the Frechet distance (Heusel et al. 2017) between Gaussians fitted to
  the probe's penultimate features of the samples and of the real training images, with its
  floor ``fd_probe_floor_test`` (real test images) and ceiling ``fd_probe_ceiling_noise``.
The CLIP is `config.clip.workdir`'s (an experiments/clip.py run) or, when that is empty, the
`clip.training.shapeworld_recipe` model trained once per data directory and cached beside the
dataset, as is the probe; both are shared by the three launchers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxzoo.clip import evaluation as clip_eval, training as clip_training
from jaxzoo.clip.model import l2_normalize
from jaxzoo.data import shapeworld, shapeworld_render, tfds_utils
from jaxzoo.diffusion import evaluation, gaussian, probe as probe_lib, samplers
from jaxzoo.diffusion.unet import denoiser
from jaxzoo.errors import ConfigError
from jaxzoo.nn.towers import TextTransformer
from jaxzoo.train import checkpoint, loop
from jaxzoo.train.progress import progress

def check_image_size(size: int) -> None:
    if size not in shapeworld.LOAD_SIZES:
        raise ConfigError(f"data.image_size={size}; allowed: {shapeworld.LOAD_SIZES}")


def load_split(config, split: str) -> dict:
    """A ShapeWorld split (`shapeworld.load`) with images at ``data.image_size``."""
    check_image_size(config.data.image_size)
    return shapeworld.load(split, config.data.image_size, config.data.data_dir or None)


def tokenizer(config):
    """ShapeWorld's tokenizer (the same at every image size), or `data.tokenizer` for TFDS pairs."""
    d = config.data
    if d.name == "shapeworld":
        return shapeworld.tokenizer(d.image_size, d.data_dir or None)
    return clip_training.tokenizer(config)


def pairs(config, data: dict, tok) -> clip_training.Pairs:
    """Images with at most ``data.max_objects`` objects and all their captions, tokenised."""
    d = config.data
    keep = np.flatnonzero(data["num_objects"] <= d.max_objects)
    flat = [c for i in keep for c in data["captions"][i]]
    ids, _ = shapeworld.encode(tok, flat, d.max_len)
    return clip_training.Pairs(data["image"][keep], ids.reshape(len(keep), -1, d.max_len))


def to_model_range(images) -> np.ndarray:
    return clip_training.to_model_range(images)


def to_uint8(images) -> np.ndarray:
    """float in [-1, 1] -> uint8 (clipped)."""
    return np.round((np.clip(np.asarray(images, np.float32), -1, 1) + 1) * 127.5).astype(np.uint8)


# ----------------------------------------------------------------------------- training


def make_schedule(config) -> gaussian.Schedule:
    d = config.diffusion
    return gaussian.make_schedule(d.schedule, d.num_train_steps, d.beta_start, d.beta_end)


def optimizer(config) -> optax.GradientTransformation:
    """AdamW, linear warm-up then cosine decay, gradients clipped by global norm."""
    o = config.optim
    lr = optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps, config.total_steps)
    return optax.chain(optax.clip_by_global_norm(o.grad_clip),
                       optax.adamw(lr, weight_decay=o.weight_decay))


def denoising_loss_fn(config, model, conditioning: Callable):
    """``(params, batch, key) -> (loss, terms)``: DDPM's L_simple (Ho et al. 2020, Eq. 14) in
    the space of ``diffusion.prediction``, t uniform in [0, T), on ``batch["image"]``, with the
    model called as ``model(x_t, t, train=True, **conditioning(batch, key))`` (the launcher's
    text, drops for classifier-free guidance, low-resolution input...)."""
    schedule, prediction = make_schedule(config), config.diffusion.prediction

    def loss_fn(params, batch, key):
        x0 = batch["image"]
        b = x0.shape[0]
        key_t, key_eps, key_cond, key_dropout = jax.random.split(key, 4)
        t = jax.random.randint(key_t, (b,), 0, schedule.num_train_steps)
        eps = jax.random.normal(key_eps, x0.shape, x0.dtype)
        kwargs = conditioning(batch, key_cond)
        predict = lambda x_t, t: model.apply(params, x_t, t, train=True,  # noqa: E731
                                             rngs={"dropout": key_dropout}, **kwargs)
        loss, per_sample = gaussian.denoising_loss(predict, schedule, x0, t, eps,
                                                   prediction=prediction)
        return loss, {"mse": jnp.mean(per_sample)}

    return loss_fn


def drop_mask(key, probability: float, batch: int):
    """``[batch]`` bool, each True with ``probability`` (a dropped condition)."""
    return jax.random.bernoulli(key, probability, (batch,))


def sample(config, model, params, conditioning: dict, key, shape, *, num_steps: int,
           guidance_scale: float, threshold: str = "", same_noise: bool = False) -> np.ndarray:
    """Samples ``[N, *shape]`` with the family's scanned sampler (``eval.method``,
    ``eval.spacing``), in batches of ``eval.batch_size``; ``conditioning`` holds ``[N, ...]``
    arrays passed to the model. Guided by ``guidance_scale`` through one batched call per step
    (conditional and unconditional halves together) unless it is 1, the conditional model.
    The starting noise is drawn from ``key`` (``same_noise``: one draw shared by every sample)."""
    e, schedule = config.eval, make_schedule(config)
    n = len(next(iter(conditioning.values())))
    rows = {k: len(v) for k, v in conditioning.items()}
    if set(rows.values()) != {n}:
        raise ValueError(f"conditioning arrays must have the same number of rows; got {rows}")
    noise = np.asarray(jax.random.normal(key, (1 if same_noise else n, *shape)))
    noise = np.broadcast_to(noise, (n, *shape))
    guided = float(guidance_scale) != 1.0
    out = []
    for start in range(0, n, e.batch_size):
        part = {k: jnp.asarray(v[start:start + e.batch_size]) for k, v in conditioning.items()}
        fn = denoiser(model, params, guided=guided, **part)
        x = samplers.sample(fn, jnp.asarray(noise[start:start + e.batch_size]), None, schedule,
                            num_steps, method=e.method, prediction=config.diffusion.prediction,
                            timestep_spacing=e.spacing,
                            guidance_scale=float(guidance_scale) if guided else None,
                            threshold=threshold or None)
        out.append(np.asarray(x))
    return np.concatenate(out)


def settings(config, weight_thresholds: Sequence[str] = ()) -> list[tuple[str, dict]]:
    """The sampler settings scored, named ``steps<N>_w<weight>[_<threshold>]``: every
    ``eval.num_steps`` at ``eval.guidance_scale`` with ``eval.threshold``, then every
    ``eval.guidance_scales`` weight at ``eval.sweep_steps`` steps with each of
    ``weight_thresholds`` (default: ``eval.threshold`` alone)."""
    e = config.eval
    grid = [(s, e.guidance_scale, e.threshold) for s in e.num_steps]
    grid += [(e.sweep_steps, w, th) for th in (weight_thresholds or (e.threshold,))
             for w in e.guidance_scales]
    out, seen = [], set()
    for s, w, th in grid:
        name = f"steps{s}_w{float(w):g}" + (f"_{th}" if th else "")
        if name not in seen:
            seen.add(name)
            out.append((name, {"num_steps": int(s), "guidance_scale": float(w), "threshold": th}))
    return out


# ----------------------------------------------------------------------------- scorers


def _models_dir(config) -> pathlib.Path:
    path = tfds_utils.data_dir(config.data.data_dir or None) / "jaxzoo_models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def scoring_clip(config):
    """(model, variables, tokenizer) of the CLIP that scores samples and, for Imagen and DALL-E 2,
    encodes text: `clip.workdir`'s softmax run, or the cached `shapeworld_recipe` CLIP (trained
    with `clip.steps` steps on first use, resumable)."""
    c = config.clip
    if c.workdir:
        model, params, tok, _ = clip_training.restore(c.workdir, "softmax")
        return model, params, tok
    recipe = clip_training.shapeworld_recipe(c.steps, c.seed, config.data.data_dir)
    digest = hashlib.sha1(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    run_dir = _models_dir(config) / f"clip_{digest}"
    if not _finished(run_dir / "softmax", c.steps):
        tok = clip_training.tokenizer(recipe)
        model = clip_training.make_model(recipe, "softmax", **clip_training.text_spec(tok))
        train_pairs = clip_training.shapeworld_pairs(recipe, "train", tok)
        task = clip_training.task(recipe, model, clip_training.training_loader(recipe, train_pairs))
        print(f"training the scoring CLIP ({c.steps} steps, cached in {run_dir})", flush=True)
        loop.train(recipe, run_dir / "softmax", task)
    model, params, tok, _ = clip_training.restore(run_dir, "softmax")
    return model, params, tok


def _finished(run_dir: pathlib.Path, steps: int) -> bool:
    if not (run_dir / "checkpoints").is_dir():
        return False
    ckpt = checkpoint.Checkpointer(run_dir / "checkpoints")
    try:
        return steps in ckpt.all_steps()
    finally:
        ckpt.close()


def scoring_probe(config):
    """(Probe, params) for ``data.image_size``, trained once and cached beside the dataset."""
    p = config.probe
    size = config.data.image_size
    path = _models_dir(config) / f"probe_{size}.msgpack"
    return probe_lib.cached_probe(path, size, config.data.data_dir or None, widths=tuple(p.widths),
                                  feature_dim=p.feature_dim, steps=p.steps, batch_size=p.batch_size,
                                  lr=p.lr, seed=p.seed)


@dataclasses.dataclass
class TextEncoder:
    """A frozen text tower (``params`` are constants, gradients stopped).

    ``encode(tokens [N, L])`` -> ``context`` ``[N, L, W]`` (every token's output),
    ``context_mask`` ``[N, L]`` (the non-padding tokens) and ``context_pooled`` ``[N, W]``
    (the end-of-text token's output): the U-Net's text inputs. With the CLIP ``projection``
    kernel ``[W, E]``, ``embed(tokens)`` is the unit CLIP text embedding ``[N, E]``."""

    module: TextTransformer
    params: dict
    projection: Optional[jnp.ndarray] = None

    @property
    def width(self) -> int:
        return self.module.width

    def encode(self, tokens) -> dict:
        tokens = jnp.asarray(tokens)
        pooled, features = jax.lax.stop_gradient(self.module.apply({"params": self.params}, tokens))
        return {"context": features, "context_mask": tokens != self.module.pad_id,
                "context_pooled": pooled}

    def embed(self, tokens):
        if self.projection is None:
            raise ValueError("this text encoder has no CLIP projection")
        pooled = self.encode(tokens)["context_pooled"]
        return l2_normalize(pooled @ jax.lax.stop_gradient(self.projection))

    def encode_numpy(self, tokens, embed: bool = False, batch_size: int = 256) -> dict:
        """`encode` over ``[N, L]`` in batches as NumPy arrays, with ``embed`` the CLIP text
        embedding ``[N, E]`` under the key "embed"."""
        fn = _jitted_encoding(self, embed)
        parts = [fn(jnp.asarray(tokens[i:i + batch_size])) for i in range(0, len(tokens), batch_size)]
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}

    def __hash__(self):
        return id(self)


@functools.lru_cache(maxsize=8)
def _jitted_encoding(encoder: TextEncoder, embed: bool):
    def fn(tokens):
        out = encoder.encode(tokens)
        if embed:
            out["embed"] = encoder.embed(tokens)
        return out

    return jax.jit(fn)


def text_encoder(config, kind: str = "clip") -> tuple[TextEncoder, object]:
    """(a frozen text encoder, the tokenizer): the scoring CLIP's text tower and projection
    (`kind="clip"`), or a randomly initialised tower of the same shape seeded by
    `config.seed` (`kind="random"`, no projection: the floor of Imagen's encoder ablation)."""
    model, params, tok = scoring_clip(config)
    module = model.text
    if kind == "clip":
        p = params["params"]
        return TextEncoder(module, p["text"], p["text_projection"]["kernel"]), tok
    random = module.init(jax.random.key(config.seed), jnp.zeros((1, module.max_len), jnp.int32))
    return TextEncoder(module, random["params"]), tok


# ----------------------------------------------------------------------------- evaluation


@dataclasses.dataclass
class Benchmark:
    """The test captions every model is scored on: ``specs`` (with categories), their ``tokens``
    int32 ``[N, max_len]`` and the ``real`` images uint8 ``[N, S, S, 3]`` they describe."""

    specs: list
    tokens: np.ndarray
    real: np.ndarray

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.specs]


def benchmark(config, tok) -> Benchmark:
    e = config.eval
    test, comp = load_split(config, "test"), load_split(config, "test_compositional")
    specs = probe_lib.caption_specs(test, comp, e.per_category, seed=e.seed)
    tokens = shapeworld.encode(tok, [s.text for s in specs], config.data.max_len)[0]
    source = {"test": test["image"], "test_compositional": comp["image"]}
    real = np.stack([source[s.source[0]][s.source[1]] for s in specs])
    return Benchmark(specs, tokens, real)


@dataclasses.dataclass
class Scorer:
    """The probe and CLIP that score images, and the probe-feature moments of real images."""

    probe: tuple
    clip: tuple
    reference: tuple  # (mu, cov) of the training images' probe features
    clip_size: int = 32

    def read(self, images) -> "probe_lib.Reading":
        return probe_lib.read(*self.probe, images)

    def clip_score(self, images_uint8, tokens) -> float:
        model, params, _ = self.clip
        x = to_model_range(images_uint8)
        if x.shape[1] != self.clip_size:
            x = np.asarray(jax.image.resize(x, (len(x), self.clip_size, self.clip_size, x.shape[-1]),
                                            "bilinear"))
        image = clip_eval.image_embeddings(model, params, x)
        text = clip_eval.text_embeddings(model, params, tokens)
        return float(np.mean(np.sum(image * text, -1)))

    def fd(self, images_uint8) -> float:
        """Frechet distance of the images' probe features to the training images'."""
        return evaluation.frechet_distance64(_moments(self.read(images_uint8).features), self.reference)

    def scores(self, images_uint8, bench: Benchmark) -> dict:
        """caption_accuracy_<category>, clip_score and fd_probe of images made for ``bench``."""
        reading = self.read(images_uint8)
        out = {f"caption_accuracy_{k}": v
               for k, v in probe_lib.caption_accuracy(bench.specs, reading).items()}
        out["clip_score"] = self.clip_score(images_uint8, bench.tokens)
        out["fd_probe"] = evaluation.frechet_distance64(_moments(reading.features), self.reference)
        return out


def _moments(features) -> tuple:
    f = np.asarray(features, np.float64)
    return np.mean(f, 0), np.cov(f, rowvar=False)


def scorer(config) -> Scorer:
    probe = scoring_probe(config)
    train = load_split(config, "train")
    reference = _moments(probe_lib.read(*probe, train["image"]).features)
    return Scorer(probe, scoring_clip(config), reference)


Generate = Callable[..., np.ndarray]  # (tokens [N, L], key, **setting) -> images [N, S, S, 3] in [-1, 1]


def evaluate(config, generate: Generate, settings: Sequence[tuple[str, dict]], bench: Benchmark,
             score: Scorer, key) -> tuple[dict, dict]:
    """Scores every ``(name, setting)``: ``generate(bench.tokens, key, **setting)``. Returns
    (metrics, {name: uint8 images}); the same ``key`` (starting noise) for every setting."""
    t_start = time.perf_counter()
    test = load_split(config, "test")
    noise = to_uint8(np.asarray(jax.random.normal(jax.random.fold_in(key, 1), test["image"].shape)))
    metrics = {f"real_{k}": v for k, v in score.scores(bench.real, bench).items()
               if k != "fd_probe"}
    metrics["fd_probe_floor_test"] = score.fd(test["image"])
    metrics["fd_probe_ceiling_noise"] = score.fd(noise)
    metrics["num_test_captions"] = len(bench.specs)
    metrics.update({f"num_captions_{c}": sum(s.category == c for s in bench.specs)
                    for c in probe_lib.CATEGORIES})
    images = {}
    with progress(len(settings), desc="eval settings", unit="setting") as bar:
        for name, setting in settings:
            t0 = time.perf_counter()
            x = to_uint8(generate(bench.tokens, key, **setting))
            metrics[f"sampling_seconds_{name}"] = time.perf_counter() - t0
            metrics.update({f"{k}_{name}": v for k, v in score.scores(x, bench).items()})
            images[name] = x
            bar.update(1)
    if settings:
        best = max((n for n, _ in settings), key=lambda n: metrics[f"caption_accuracy_single_{n}"])
        metrics["best_setting"] = best
        metrics["best_caption_accuracy_single"] = metrics[f"caption_accuracy_single_{best}"]
    metrics["eval_seconds"] = time.perf_counter() - t_start
    return metrics, images


def save_pictures(workdir, images: dict, bench: Benchmark, best: str, per_category: int = 4):
    """samples.png: ``per_category`` captions of every category at the ``best`` setting, with
    their captions; settings.png: one row per setting, the same eight captions in every row."""
    if jax.process_index() != 0 or not images:
        return
    workdir = pathlib.Path(workdir)
    pick = []
    for category in probe_lib.CATEGORIES:
        pick += [i for i, s in enumerate(bench.specs) if s.category == category][:per_category]
    save_captioned(workdir / "samples.png", images[best][pick], [bench.texts[i] for i in pick],
                   ncols=per_category)
    from jaxzoo import viz

    cols = pick[::max(1, len(pick) // 8)][:8]
    rows = np.concatenate([x[cols] for x in images.values()]).astype(np.float32) / 255.0
    scale = max(1, 64 // images[best].shape[1])
    viz.save_png(workdir / "settings.png", viz.image_grid(rows, len(cols)), scale=scale)


def save_captioned(path, images_uint8, texts, ncols: int = 4):
    """A PNG grid of uint8 images, each upscaled to about 128 pixels with its caption under it."""
    scale = max(1, 128 // images_uint8.shape[1])
    shapeworld_render.save_picture(path, images_uint8, np.zeros((len(texts), 0, 4)),
                                   np.zeros(len(texts), int), list(texts), ncols=ncols, scale=scale)
