"""The text-to-image launchers' shared runtime: ShapeWorld at 16x16, the frozen text encoder (CLIP
text embeddings as CLIP computes them), the sampler settings grid, batched sampling."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxzoo.clip import training as clip_training
from jaxzoo.data import shapeworld, tfds_utils
from jaxzoo.diffusion import text_to_image as t2i
from jaxzoo.diffusion.unet import UNet

SMALL = {"train": 12, "validation": 2, "test": 6, "test_compositional": 4}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    tfds_utils.prepare(shapeworld.ShapeWorld, root, config="size_32", split_sizes=SMALL)
    return root


def test_downsample_is_the_rounded_mean_of_each_square():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    out = shapeworld.downsample(x, 2)
    expect = np.round(x.reshape(2, 2, 2, 2, 2, 3).astype(float).mean((2, 4))).astype(np.uint8)
    np.testing.assert_array_equal(out, expect)
    np.testing.assert_array_equal(shapeworld.downsample(x, 4), x)
    with pytest.raises(ValueError, match="cannot average"):
        shapeworld.downsample(x, 3)


def test_load_at_16_averages_the_32_images_and_halves_the_geometry(data_dir):
    big, small = shapeworld.load("test", 32, data_dir), shapeworld.load("test", 16, data_dir)
    np.testing.assert_array_equal(small["image"], shapeworld.downsample(big["image"], 16))
    for key in ("boxes", "center", "radius"):
        np.testing.assert_allclose(small[key], big[key] / 2)
    assert small["captions"] == big["captions"]
    with pytest.raises(Exception, match="allowed"):
        shapeworld.load("test", 24, data_dir)


def _settings_config(**eval_kw):
    e = dict(num_steps=(10, 25), guidance_scale=3.0, guidance_scales=(1.0, 3.0, 5.0), sweep_steps=25,
             threshold="static")
    e.update(eval_kw)
    return ml_collections.ConfigDict({"eval": e})


def test_settings_grid_names_and_dedupes():
    names = [n for n, _ in t2i.settings(_settings_config())]
    assert names == ["steps10_w3_static", "steps25_w3_static", "steps25_w1_static", "steps25_w5_static"]
    both = dict(t2i.settings(_settings_config(threshold="dynamic"), weight_thresholds=("static", "dynamic")))
    assert list(both) == ["steps10_w3_dynamic", "steps25_w3_dynamic", "steps25_w1_static",
                          "steps25_w3_static", "steps25_w5_static", "steps25_w1_dynamic",
                          "steps25_w5_dynamic"]
    assert both["steps25_w5_static"] == {"num_steps": 25, "guidance_scale": 5.0, "threshold": "static"}
    assert [n for n, _ in t2i.settings(_settings_config(threshold=""))][0] == "steps10_w3"


def test_frozen_text_encoder_embeds_as_clip_does():
    recipe = clip_training.shapeworld_recipe()
    with recipe.unlocked():
        recipe.model.update(text_width=16, text_depth=1, text_heads=2, embed_dim=8, cnn_widths=(4, 8))
    model = clip_training.make_model(recipe, "softmax", vocab_size=40)
    tokens = jnp.asarray([[5, 9, 12, 6, 0, 0] + [0] * 18, [5, 7, 6, 0, 0, 0] + [0] * 18])
    params = model.init(jax.random.key(0), tokens, jnp.zeros((1, 32, 32, 3)))
    p = params["params"]
    enc = t2i.TextEncoder(model.text, p["text"], p["text_projection"]["kernel"])
    got = enc.encode_numpy(np.asarray(tokens), embed=True)
    want = model.apply(params, tokens, method=model.encode_text)
    np.testing.assert_allclose(got["embed"], want, atol=1e-5)
    assert got["context"].shape == (2, 24, 16) and got["context_pooled"].shape == (2, 16)
    np.testing.assert_array_equal(got["context_mask"], np.asarray(tokens) != 0)
    grads = jax.grad(lambda q: jnp.sum(t2i.TextEncoder(model.text, q).encode(tokens)["context"]))(p["text"])
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(grads))  # frozen
    bare = t2i.TextEncoder(model.text, p["text"])
    with pytest.raises(ValueError, match="no CLIP projection"):
        bare.embed(tokens)


def test_sample_batches_shares_noise_on_request_and_checks_rows():
    config = ml_collections.ConfigDict({
        "eval": {"batch_size": 3, "method": "ddim", "spacing": "trailing"},
        "diffusion": {"schedule": "cosine", "num_train_steps": 100, "beta_start": 1e-4, "beta_end": 0.02,
                      "prediction": "eps"}})
    model = UNet(out_channels=3, channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(),
                 num_groups=4, num_classes=3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), jnp.zeros((1,), jnp.int32),
                        label=jnp.zeros((1,), jnp.int32))
    label = np.asarray([0, 1, 2, 0, 1])
    kw = dict(num_steps=3, guidance_scale=2.0, threshold="static")
    x = t2i.sample(config, model, params, {"label": label}, jax.random.key(1), (4, 4, 3), **kw)
    assert x.shape == (5, 4, 4, 3) and np.abs(x).max() <= 1.0
    whole = config.copy_and_resolve_references()
    whole.eval.batch_size = 5
    np.testing.assert_allclose(
        t2i.sample(whole, model, params, {"label": label}, jax.random.key(1), (4, 4, 3), **kw), x, atol=1e-5)
    same = t2i.sample(config, model, params, {"label": np.zeros(4, int)}, jax.random.key(1), (4, 4, 3),
                      same_noise=True, **kw)
    np.testing.assert_allclose(same, np.broadcast_to(same[:1], same.shape), atol=1e-5)
    with pytest.raises(ValueError, match="same number of rows"):
        t2i.sample(config, model, params, {"label": label, "cond": np.zeros((2, 1))}, jax.random.key(1),
                   (4, 4, 3), **kw)
