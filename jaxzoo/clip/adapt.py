"""Adapting a frozen CLIP to a downstream image classification task, the three ways Bahng et
al. 2022 ("Exploring Visual Prompts for Adapting Large-Scale Models", arXiv 2203.17274) compare:

  fine_tune      the image tower, its projection and a new linear head, all trained;
  linear_probe   scikit-learn's logistic regression on the frozen unit image embeddings
                 (CLIP Sec. 3.2 and Appendix A.3, the protocol Bahng et al. compare with);
  visual_prompt  learned pixels in a frame of width `pad` added to the image border (Bahng's
                 "padding" prompter, Sec. 3), CLIP frozen, the classes read through the
                 zero-shot text head.

Names and axes, fixed once: images are float32 [N, S, S, C] in CLIP's range [-1, 1]
(`training.to_model_range`); labels are int [N] in 0..K-1; `class_embeds` are unit text
embeddings [K, E], and downstream class k is read as class_embeds[k] (Bahng's label mapping
when the text tower cannot name the downstream classes: ShapeWorld's vocabulary has no digits).
A pad prompt is a dict of four arrays, top/bottom [pad, S, C] and left/right [S - 2 pad, pad, C]:
2 pad S C + 2 pad (S - 2 pad) C numbers, zero in the interior by construction.

Every method returns at least {"accuracy": test accuracy, "params": number of trained
parameters}.
Training runs one jitted step per batch; the batch of step s is
`pipeline.global_batch_indices(s, ...)` (epochs of a permutation drawn from the seed), and any
random initialisation comes from `jax.random.key(seed)`, so a result is a function of the seed.
`study(model, variables, class_embeds, config)` runs the three and the prompt-free baseline on
a task (`digits_task`: scikit-learn's 8x8 digits upsampled to the model's image size).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxzoo.clip import evaluation
from jaxzoo.clip.model import CLIP, l2_normalize
from jaxzoo.data import pipeline
from jaxzoo.errors import ConfigError

TASKS = ("digits",)
PROBE_CS = (0.01, 0.1, 1.0, 10.0, 100.0)  # logistic_probe's sweep of C = 1 / L2 strength


# ---------------------------------------------------------------------------------------------
# The padding prompt (pure jax.numpy).


def pad_prompt_init(image_size: int, pad: int, channels: int = 3, key=None) -> dict:
    """A padding prompt for S x S images: top, bottom [pad, S, C], left, right [S - 2 pad, pad, C].

    Zeros when `key` is None (the prompt-free image: training starts at the zero-shot
    classifier, the baseline it must improve on); with a key N(0, 1) as Bahng et al.'s
    `PadPrompter` (`torch.randn`).
    """
    if not 0 < 2 * pad < image_size:
        raise ValueError(f"pad={pad} must be in [1, image_size / 2) for image_size={image_size}")
    shapes = {"top": (pad, image_size, channels), "bottom": (pad, image_size, channels),
              "left": (image_size - 2 * pad, pad, channels),
              "right": (image_size - 2 * pad, pad, channels)}
    if key is None:
        return {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}
    keys = jax.random.split(key, len(shapes))
    return {k: jax.random.normal(kk, s, jnp.float32) for kk, (k, s) in zip(keys, shapes.items())}


def pad_prompt_frame(prompt: dict):
    """The prompt as an image [S, S, C]: its four pieces around a zero interior (Bahng Sec. 3)."""
    top, bottom, left, right = prompt["top"], prompt["bottom"], prompt["left"], prompt["right"]
    interior = jnp.zeros((left.shape[0], top.shape[1] - 2 * left.shape[1], top.shape[2]), top.dtype)
    middle = jnp.concatenate([left, interior, right], axis=1)
    return jnp.concatenate([top, middle, bottom], axis=0)


def apply_pad_prompt(prompt: dict, images):
    """images [..., S, S, C] + the prompt's frame: the border pixels shifted, the rest unchanged."""
    return images + pad_prompt_frame(prompt).astype(images.dtype)


def num_params(tree) -> int:
    """The number of numbers in a pytree of arrays."""
    return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def prompt_logits(model: CLIP, variables, class_embeds, prompt: dict, images):
    """logits [N, K] = t * encode_image(images + prompt) @ class_embeds.T (CLIP's zero-shot
    logits on the prompted images; t the model's temperature; a bias would not change the
    softmax over classes)."""
    scale, _ = model.apply(variables, method=model.scale_and_bias)
    embeds = model.apply(variables, apply_pad_prompt(prompt, images), method=model.encode_image)
    return scale * embeds @ jnp.asarray(class_embeds).T


def prompt_loss(model: CLIP, variables, class_embeds, prompt: dict, images, labels):
    """The mean cross-entropy of `prompt_logits` against labels [N]: the prompt's objective."""
    logits = prompt_logits(model, variables, class_embeds, prompt, images)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ---------------------------------------------------------------------------------------------
# Training and prediction helpers.


def _train(loss_fn: Callable, params, frozen, tx, x, y, *, steps: int, batch_size: int, seed: int):
    """Minimises `loss_fn(params, frozen, images, labels)` over `steps` batches of (x, y), one
    jitted step per batch (a `lax.scan` over the steps would be one program, but XLA's CPU
    backend ran the ConvNet's convolutions inside that loop about 20x slower); returns the
    trained params.
    `frozen` is an argument, not a closure, so large arrays are not baked into the
    compiled program (and are never updated)."""

    @jax.jit
    def step(params, opt_state, frozen, images, labels):
        grads = jax.grad(loss_fn)(params, frozen, images, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    x, y = np.asarray(x), np.asarray(y, np.int32)
    opt_state = tx.init(params)
    for s in range(steps):
        i = pipeline.global_batch_indices(s, batch_size, len(x), seed)
        params, opt_state = step(params, opt_state, frozen, x[i], y[i])
    return params


def _predict(fn: Callable, args, x, batch_size: int = 256) -> np.ndarray:
    """argmax over classes of jitted `fn(*args, images)` [B, K], in chunks of one shape."""
    jitted = jax.jit(fn)
    return evaluation.map_batches(lambda chunk: np.argmax(np.asarray(jitted(*args, chunk)), -1),
                                  x, batch_size, np.zeros((0,), np.int64))


def _schedule(lr: float, steps: int):
    return optax.cosine_decay_schedule(lr, max(steps, 1))


def _check_labels(y, num_classes: int, what: str) -> None:
    if len(y) and (np.min(y) < 0 or np.max(y) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}) for {what}; got "
                         f"[{np.min(y)}, {np.max(y)}]")


# ---------------------------------------------------------------------------------------------
# The three methods.


class ImageClassifier(nn.Module):
    """CLIP's image tower and projection and a linear head: images [B, H, W, C] -> logits [B, K].

    Parameter names: `vision` and `visual_projection` as in `CLIP` (so CLIP's can be copied in),
    `head` the new Dense. The head reads the unit image embedding, as the linear probe and the
    zero-shot classifier do.
    """

    vision: nn.Module  # CLIP's image tower (ViT or ConvNet)
    embed_dim: int
    num_classes: int

    @nn.compact
    def __call__(self, images, deterministic: bool = True):
        pooled, _ = self.vision(images, deterministic=deterministic)
        embeds = nn.Dense(self.embed_dim, use_bias=False, name="visual_projection")(pooled)
        return nn.Dense(self.num_classes, name="head")(l2_normalize(embeds))


def fine_tune(model: CLIP, variables, x_train, y_train, x_test, y_test, *, steps: int,
              batch_size: int, lr: float, seed: int = 0) -> dict:
    """Full fine-tuning (Bahng et al.'s upper baseline): `ImageClassifier` initialised from
    CLIP's image tower and projection, the head at Flax's default initialisation from
    `jax.random.key(seed)`, all trained with Adam at `lr` decayed to 0 along a cosine and the
    cross-entropy. Returns test accuracy and the number of trained parameters (tower +
    projection + head)."""
    num_classes = int(np.max(y_train)) + 1
    _check_labels(y_test, num_classes, "fine_tune's test set")
    classifier = ImageClassifier(vision=model.vision, embed_dim=model.embed_dim,
                                 num_classes=num_classes)
    params = classifier.init(jax.random.key(seed), jnp.zeros((1, *x_train.shape[1:])))["params"]
    params = {**params, "vision": variables["params"]["vision"],
              "visual_projection": variables["params"]["visual_projection"]}

    def loss_fn(params, frozen, images, labels):
        del frozen
        logits = classifier.apply({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    params = _train(loss_fn, params, None, optax.adam(_schedule(lr, steps)), x_train, y_train,
                    steps=steps, batch_size=batch_size, seed=seed)
    pred = _predict(lambda p, x: classifier.apply({"params": p}, x), (params,), x_test)
    return {"accuracy": float(np.mean(pred == np.asarray(y_test))), "params": num_params(params)}


def logistic_probe(f_train, y_train, f_test, y_test,
                   C: float | Sequence[float] = PROBE_CS, seed: int = 0) -> dict:
    """Multinomial logistic regression (L-BFGS, at most 1,000 iterations: CLIP Appendix A.3) on
    features [N, E], each standardised with the training set's mean and deviation. A sequence
    of C (= 1 / the L2 strength) is swept on a held-out fifth of the training set (CLIP sweeps
    96 values on a validation set; we sweep a few), then the best is refit on all of it.
    Returns accuracy, params (weights + biases: K E + K, or E + 1 for two classes) and C.

    Standardising is our addition: the coordinates of the cpu CLIP's unit embeddings of digits
    vary by about 0.005 across images, so on raw features the L2 penalty swamps the fit (test
    accuracy 0.54 at the best C against 0.85 standardised) and L-BFGS crawls. The probe stays
    linear in the embeddings.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    f_train, f_test = np.asarray(f_train, np.float64), np.asarray(f_test, np.float64)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)

    def fit(c, f, y):
        scaler = StandardScaler().fit(f)
        return scaler, LogisticRegression(C=c, max_iter=1000).fit(scaler.transform(f), y)

    def score(fitted, f, y):
        return fitted[1].score(fitted[0].transform(f), y)

    # One BLAS thread: on a busy 2-core machine (with XLA's threads alive) the default pool
    # makes these small fits 20-50x slower.
    with threadpool_limits(1):
        if np.ndim(C):
            perm = np.random.default_rng(seed).permutation(len(f_train))
            held, kept = perm[:len(perm) // 5], perm[len(perm) // 5:]
            scores = [score(fit(c, f_train[kept], y_train[kept]), f_train[held], y_train[held])
                      for c in C]
            C = C[int(np.argmax(scores))]  # the first (most regularised) of equals
        fitted = fit(float(C), f_train, y_train)
    probe = fitted[1]
    return {"accuracy": float(score(fitted, f_test, y_test)),
            "params": int(probe.coef_.size + probe.intercept_.size), "C": float(C)}


def linear_probe(model: CLIP, variables, x_train, y_train, x_test, y_test, *,
                 C: float | Sequence[float] = PROBE_CS, seed: int = 0) -> dict:
    """A linear probe (CLIP Sec. 3.2): `logistic_probe` on the frozen unit image embeddings."""
    return logistic_probe(evaluation.image_embeddings(model, variables, x_train), y_train,
                          evaluation.image_embeddings(model, variables, x_test), y_test,
                          C=C, seed=seed)


def visual_prompt(model: CLIP, variables, class_embeds, x_train, y_train, x_test, y_test, *,
                  pad: int, steps: int, batch_size: int, lr: float, seed: int = 0) -> dict:
    """A padding prompt (Bahng Sec. 3) trained through the frozen CLIP with the cross-entropy of
    `prompt_logits`; downstream class k is read as class_embeds[k] ([K, E]).

    Bahng et al.'s code (main_clip.py) trains with SGD (lr 40, momentum 0.9, 1000 warm-up
    steps, cosine) from N(0, 1) pixels, on CLIP's normalised inputs; we use Adam at `lr`
    decayed to 0 along a cosine, from a zero prompt (so step 0 is the zero-shot classifier).
    Returns test accuracy, params (the prompt's size) and the trained `prompt` (a dict).
    """
    class_embeds = jnp.asarray(class_embeds, jnp.float32)
    _check_labels(y_train, len(class_embeds), "visual_prompt's class_embeds")
    _check_labels(y_test, len(class_embeds), "visual_prompt's class_embeds")
    prompt = pad_prompt_init(x_train.shape[1], pad, x_train.shape[-1])

    def loss_fn(prompt, frozen, images, labels):
        return prompt_loss(model, frozen[0], frozen[1], prompt, images, labels)

    prompt = _train(loss_fn, prompt, (variables, class_embeds), optax.adam(_schedule(lr, steps)),
                    x_train, y_train, steps=steps, batch_size=batch_size, seed=seed)
    pred = _predict(lambda p, v, c, x: prompt_logits(model, v, c, p, x),
                    (prompt, variables, class_embeds), x_test)
    return {"accuracy": float(np.mean(pred == np.asarray(y_test))), "params": num_params(prompt),
            "prompt": jax.device_get(prompt)}


def zero_shot(model: CLIP, variables, class_embeds, x_test, y_test) -> float:
    """The prompt-free, label-mapped accuracy: argmax_k cos(image, class_embeds[k]) == label."""
    return evaluation.zero_shot_accuracy(evaluation.image_embeddings(model, variables, x_test),
                                         y_test, class_embeds)


# ---------------------------------------------------------------------------------------------
# Downstream tasks and the study.


def digits_task(image_size: int, data_dir=None):
    """scikit-learn's digits (`jaxzoo.data.digits`: 1500 train / 297 test) as
    (x_train, y_train, x_test, y_test): images float32 [N, S, S, 3] in [-1, 1] (grey level 0 ->
    -1, 16 -> 1, bilinearly upsampled from 8 x 8, repeated over RGB), labels int32 [N] 0..9."""
    from jaxzoo.data import digits

    out = []
    for split in ("train", "test"):
        data = digits.load(split, data_dir)
        grey = jnp.asarray(data["image"], jnp.float32) * (2.0 / digits.MAX_VALUE) - 1.0
        grey = jax.image.resize(grey, (len(grey), image_size, image_size, 1), "bilinear")
        images = np.clip(np.repeat(np.asarray(grey), 3, axis=-1), -1.0, 1.0)
        out += [images, np.asarray(data["label"], np.int32)]
    return tuple(out)


def study_config() -> ml_collections.ConfigDict:
    """The study's settings (timed in `study`'s docstring).

    Separate step counts, as a prompt step and a fine-tuning step cost differently per tower
    (a prompt gets no weight gradients but still backpropagates through the whole tower to the
    pixels); the learning rates are the best of a small sweep on the cpu CLIP when its image
    tower was a ViT (fine_tune 3e-4 / 1e-3 / 3e-3, prompt 0.01 / 0.03 / 0.1 / 0.3 / 1), not
    swept again for the ConvNet.
    """
    return ml_collections.ConfigDict(dict(
        task="digits",  # one of TASKS
        batch_size=64,
        fine_tune_steps=150,
        fine_tune_lr=1e-3,
        pad=4,  # of 32: Bahng's 30 of 224 is 13%
        prompt_steps=300,
        prompt_lr=0.03,
        probe_cs=PROBE_CS,  # C = 1 / L2 strength, swept (CLIP App. A.3)
    ))


def study(model: CLIP, variables, class_embeds, config, *, image_size: int, data_dir=None,
          seed: int = 0) -> dict:
    """Fine-tuning, a linear probe and a visual prompt on `config.task` (`study_config()`'s
    fields), with the prompt-free label-mapped zero-shot baseline; `class_embeds` [>= K, E],
    downstream class k read as row k; the task's images at the CLIP's `image_size`, from the
    TFDS `data_dir` (None: the default).

    Returns flat {"adapt_zero_shot_accuracy", "adapt_{fine_tune,linear_probe,visual_prompt}_
    {accuracy,params}"} (accuracies float, params int).

    Measured at `study_config()`'s settings with the CLIP of experiments/configs/clip.py:cpu
    (ConvNet widths 32/64/128 on 32 x 32 images; softmax loss) and the zero-shot embeddings of
    ShapeWorld's first 10 class names: 38 s on 2 CPU cores, digits preparation included.
    Test accuracy (trained parameters): zero-shot 0.104, fine-tuning 0.990 (102,090), linear
    probe 0.828 (650), visual prompt 0.744 (1,344). As in Bahng et al., the prompt lifts the
    label-mapped zero-shot classifier far above chance with 1.3% of fine-tuning's parameters,
    below the linear probe.
    """
    if config.task not in TASKS:
        raise ConfigError(f"task={config.task!r}; allowed: {TASKS}")
    x_train, y_train, x_test, y_test = digits_task(image_size, data_dir)
    num_classes = int(np.max(y_train)) + 1
    if len(class_embeds) < num_classes:
        raise ConfigError(f"{config.task} has {num_classes} classes but class_embeds has "
                          f"{len(class_embeds)} rows")
    class_embeds = np.asarray(class_embeds)[:num_classes]
    out = {"adapt_zero_shot_accuracy": zero_shot(model, variables, class_embeds, x_test, y_test)}
    train = dict(batch_size=config.batch_size, seed=seed)
    results = {
        "fine_tune": fine_tune(model, variables, x_train, y_train, x_test, y_test,
                               steps=config.fine_tune_steps, lr=config.fine_tune_lr, **train),
        "linear_probe": linear_probe(model, variables, x_train, y_train, x_test, y_test,
                                     C=tuple(config.probe_cs), seed=seed),
        "visual_prompt": visual_prompt(model, variables, class_embeds, x_train, y_train, x_test,
                                       y_test, pad=config.pad, steps=config.prompt_steps,
                                       lr=config.prompt_lr, **train),
    }
    for name, r in results.items():
        out[f"adapt_{name}_accuracy"], out[f"adapt_{name}_params"] = r["accuracy"], r["params"]
    return out
