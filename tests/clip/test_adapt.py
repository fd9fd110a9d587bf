"""Adapting a frozen CLIP (jaxzoo.clip.adapt): the padding prompt against a pixel loop and its
parameter formula, each method on a toy it must solve with a tiny random CLIP, the digits task,
and the study's keys."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.clip import adapt
from jaxzoo.clip.model import CLIP
from jaxzoo.data import shapeworld
from jaxzoo.errors import ConfigError
from jaxzoo.nn.towers import TextTransformer, ViT

S, E = 16, 8  # image size and embedding width of the tiny CLIP


@functools.lru_cache
def _tiny_clip(seed=0):
    vision = ViT(patch_size=8, width=16, depth=1, num_heads=2, pool="mean", pre_norm=True,
                 activation="quick_gelu", ln_eps=1e-5)
    text = TextTransformer(vocab_size=30, max_len=6, width=16, depth=1, num_heads=2, causal=True,
                           pool="eos", eos_id=shapeworld.EOS, pad_id=shapeworld.PAD,
                           activation="quick_gelu", ln_eps=1e-5)
    model = CLIP(vision=vision, text=text, embed_dim=E)
    variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 6), jnp.int32),
                                    jnp.zeros((1, S, S, 3)))
    return model, variables


def _frame_loop(prompt, s, pad):
    """The prompt's frame pixel by pixel: top rows, bottom rows, then left and right columns."""
    p = {k: np.asarray(v) for k, v in prompt.items()}
    frame = np.zeros((s, s, p["top"].shape[-1]), np.float32)
    for i in range(s):
        for j in range(s):
            if i < pad:
                frame[i, j] = p["top"][i, j]
            elif i >= s - pad:
                frame[i, j] = p["bottom"][i - (s - pad), j]
            elif j < pad:
                frame[i, j] = p["left"][i - pad, j]
            elif j >= s - pad:
                frame[i, j] = p["right"][i - pad, j - (s - pad)]
    return frame


@pytest.mark.parametrize("s, pad, c", [(16, 2, 3), (9, 1, 1), (32, 4, 3)])
def test_the_pad_prompt_is_a_frame_of_width_pad_with_bahngs_parameter_count(s, pad, c):
    prompt = adapt.pad_prompt_init(s, pad, c, key=jax.random.key(s))
    frame = np.asarray(adapt.pad_prompt_frame(prompt))
    np.testing.assert_array_equal(frame, _frame_loop(prompt, s, pad))
    assert np.all(frame[pad:s - pad, pad:s - pad] == 0)
    border = np.ones((s, s), bool)
    border[pad:s - pad, pad:s - pad] = False
    assert np.all(frame[border] != 0)  # N(0, 1) pixels: every border pixel is touched
    assert adapt.num_params(prompt) == 2 * pad * s * c + 2 * pad * (s - 2 * pad) * c
    assert all(np.all(v == 0) for v in adapt.pad_prompt_init(s, pad, c).values())


def test_apply_pad_prompt_batched_equals_one_image_at_a_time():
    prompt = adapt.pad_prompt_init(S, 3, key=jax.random.key(0))
    images = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 3, S, S, 3)), jnp.float32)
    batched = np.asarray(adapt.apply_pad_prompt(prompt, images))
    frame = _frame_loop(prompt, S, 3)
    for a in range(2):
        for b in range(3):
            one = np.asarray(adapt.apply_pad_prompt(prompt, images[a, b]))
            np.testing.assert_array_equal(batched[a, b], one)
            np.testing.assert_allclose(one, np.asarray(images[a, b]) + frame, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="pad=8"):
        adapt.pad_prompt_init(S, 8)


def _interior_task(n=32):
    """Two classes whose interiors are -0.5 and +0.5 (plus noise), borders only noise: the
    prompt never touches the evidence, it can only change how the frozen tower reads it."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    x = rng.normal(0, 0.1, (n, S, S, 3)).astype(np.float32)
    x[:, 2:-2, 2:-2] += np.where(y == 1, 0.5, -0.5)[:, None, None, None]
    return x, y


def test_the_prompt_loss_has_finite_gradients_even_for_huge_prompts():
    model, variables = _tiny_clip()
    x, y = _interior_task(4)
    classes = np.eye(2, E, dtype=np.float32)
    loss_and_grad = jax.jit(jax.value_and_grad(adapt.prompt_loss, argnums=3), static_argnums=0)
    for scale in (0.0, 1.0, 1e4):
        prompt = jax.tree.map(lambda p: scale * p,  # noqa: B023
                              adapt.pad_prompt_init(S, 2, key=jax.random.key(1)))
        loss, grads = loss_and_grad(model, variables, classes, prompt, x, y)
        assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
        if scale < 1e4:  # (a saturated LayerNorm may pass no gradient; it must stay finite)
            assert any(np.any(g != 0) for g in jax.tree.leaves(grads))


def test_the_visual_prompt_leaves_clip_frozen_and_beats_no_prompt():
    model, variables = _tiny_clip(seed=2)
    x, y = _interior_task()
    # Classes u and -u, u the mean image embedding: without a prompt most images read as one
    # class (chance level or so); the prompt must steer the frozen tower to split them.
    from jaxzoo.clip import evaluation

    u = evaluation.image_embeddings(model, variables, x).mean(0)
    classes = np.stack([u, -u]) / np.linalg.norm(u)
    before = jax.tree.map(np.array, variables)
    baseline = adapt.zero_shot(model, variables, classes, x, y)
    kwargs = dict(pad=2, steps=100, batch_size=16, lr=0.1, seed=0)
    out = adapt.visual_prompt(model, variables, classes, x, y, x, y, **kwargs)
    jax.tree.map(np.testing.assert_array_equal, variables, before)  # bit for bit
    assert out["params"] == adapt.num_params(adapt.pad_prompt_init(S, 2))
    frame = np.asarray(adapt.pad_prompt_frame(out["prompt"]))
    assert np.all(frame[2:-2, 2:-2] == 0) and np.any(frame != 0)
    assert baseline <= 0.6 and out["accuracy"] >= 0.9, (baseline, out["accuracy"])
    again = adapt.visual_prompt(model, variables, classes, x, y, x, y, **kwargs)
    jax.tree.map(np.testing.assert_array_equal, again["prompt"], out["prompt"])


def test_the_logistic_probe_separates_separable_features():
    rng = np.random.default_rng(0)
    k, e = 3, 5
    y = np.arange(60) % k
    f = 4.0 * np.eye(k, e)[y] + rng.normal(0, 0.3, (60, e))  # class means 4 apart, noise 0.3
    for C in (1.0, (0.01, 1.0, 100.0)):
        out = adapt.logistic_probe(f[:45], y[:45], f[45:], y[45:], C=C)
        assert out["accuracy"] == 1.0 and out["params"] == k * e + k


def _constant_task(k=3, n=36):
    """k classes of images at grey levels spread over [-0.6, 0.6], plus noise 0.05."""
    rng = np.random.default_rng(1)
    y = np.arange(n) % k
    levels = np.linspace(-0.6, 0.6, k)[y]
    return (levels[:, None, None, None] + rng.normal(0, 0.05, (n, S, S, 3))).astype(np.float32), y


def test_the_linear_probe_counts_weights_and_biases():
    model, variables = _tiny_clip()
    x, y = _constant_task()
    out = adapt.linear_probe(model, variables, x[:24], y[:24], x[24:], y[24:], C=10.0)
    assert out["params"] == 3 * E + 3 and out["accuracy"] == 1.0


def test_fine_tuning_trains_tower_projection_and_head():
    model, variables = _tiny_clip()
    x, y = _constant_task()
    kwargs = dict(batch_size=12, lr=3e-3, seed=0)
    untrained = adapt.fine_tune(model, variables, x, y, x, y, steps=0, **kwargs)
    trained = adapt.fine_tune(model, variables, x, y, x, y, steps=40, **kwargs)
    p = variables["params"]
    expected = adapt.num_params(p["vision"]) + adapt.num_params(p["visual_projection"]) + E * 3 + 3
    assert trained["params"] == untrained["params"] == expected
    assert trained["accuracy"] == 1.0 > untrained["accuracy"], (untrained, trained)


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def test_the_digits_task_is_the_digits_in_the_model_range(digits_dir):
    from jaxzoo.data import digits

    x_train, y_train, x_test, y_test = adapt.digits_task(S, digits_dir)
    assert x_train.shape == (1500, S, S, 3) and x_test.shape == (297, S, S, 3)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert set(np.unique(y_train)) == set(range(10)) and len(y_test) == 297
    assert -1.0 <= x_train.min() < -0.999 and 0.9 < x_train.max() <= 1.0
    np.testing.assert_array_equal(x_train[..., 0], x_train[..., 2])  # grey in every channel
    # At 8 x 8 no resizing: exactly 0 -> -1, 16 -> 1.
    raw = digits.load("test", digits_dir)
    small = adapt.digits_task(8, digits_dir)[2]
    np.testing.assert_allclose(small[..., 0], raw["image"][..., 0] / 8.0 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(y_test, raw["label"])


def test_the_study_reports_every_method(digits_dir):
    model, variables = _tiny_clip()
    config = adapt.study_config()
    config.update(dict(batch_size=8, fine_tune_steps=2, prompt_steps=2, pad=2, probe_cs=(1.0,)))
    classes = np.random.default_rng(0).normal(size=(12, E))  # more rows than classes: first 10
    where = dict(image_size=S, data_dir=str(digits_dir))
    out = adapt.study(model, variables, classes / np.linalg.norm(classes, axis=1, keepdims=True),
                      config, **where)
    methods = ("fine_tune", "linear_probe", "visual_prompt")
    assert set(out) == {"adapt_zero_shot_accuracy"} | {
        f"adapt_{m}_{k}" for m in methods for k in ("accuracy", "params")}
    for key, value in out.items():
        if key.endswith("accuracy"):
            assert isinstance(value, float) and 0.0 <= value <= 1.0, key
        else:
            assert isinstance(value, int) and value > 0, key
    assert out["adapt_linear_probe_params"] == 10 * E + 10
    assert out["adapt_visual_prompt_params"] == 2 * 2 * S * 3 + 2 * 2 * (S - 4) * 3
    config.task = "cifar"
    with pytest.raises(ConfigError, match="task='cifar'"):
        adapt.study(model, variables, classes, config, **where)
