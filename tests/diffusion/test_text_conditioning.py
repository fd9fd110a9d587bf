"""The text-to-image conditioning paths of the U-Net and GLIDE's TextUNet: what each drop flag
removes, the pooled text vector, Imagen's super-resolution inputs (low-resolution image and
noise-augmentation level), per-level block counts and scaled skips, and guidance through the
generic denoiser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.diffusion import gaussian
from jaxzoo.diffusion.glide import TextUNet
from jaxzoo.diffusion.unet import UNet, denoiser
from jaxzoo.nn.towers import TextTransformer

B, H = 3, 8
BASE = dict(out_channels=3, channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), num_groups=4, num_heads=2, scale_shift_norm=True)


def _random_params(model, *args, seed=1, **kwargs):
    """NumPy-drawn parameters of the right shapes, so zero-initialised layers are non-zero too."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), shapes)


def _normal(rng, *shape):
    return jnp.asarray(rng.normal(size=shape), jnp.float32)


@pytest.fixture(scope="module")
def dalle2_like():
    """A U-Net with a conditioning vector (4 tokens) and text (tokens + pooled vector)."""
    model = UNet(**BASE, cond_dim=5, num_cond_tokens=4, context_dim=6)
    rng = np.random.default_rng(0)
    i = dict(x=_normal(rng, B, H, H, 3), t=jnp.asarray([1, 500, 999]), cond=_normal(rng, B, 5),
             context=_normal(rng, B, 4, 6), context_pooled=_normal(rng, B, 6),
             context_mask=jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool))
    params = _random_params(model, **i)
    z = jnp.zeros((B,), bool)

    @jax.jit
    def run(p, i, drop=z, drop_cond=z, drop_context=z):
        return model.apply(p, **i, drop=drop, drop_cond=drop_cond, drop_context=drop_context)

    return params, i, run


def _other_text(i, seed=5):
    rng = np.random.default_rng(seed)
    return dict(i, context=_normal(rng, B, 4, 6), context_pooled=_normal(rng, B, 6))


def test_drop_context_removes_the_text_and_keeps_the_conditioning_vector(dalle2_like):
    params, i, run = dalle2_like
    yes = jnp.ones((B,), bool)
    a = run(params, i, drop_context=yes)
    np.testing.assert_allclose(run(params, _other_text(i), drop_context=yes), a, atol=1e-5)
    moved = run(params, dict(i, cond=i["cond"] + 1.0), drop_context=yes)
    assert np.all(np.abs(np.asarray(moved - a)).max(axis=(1, 2, 3)) > 1e-3)


def test_drop_cond_removes_the_vector_and_keeps_the_text(dalle2_like):
    params, i, run = dalle2_like
    yes = jnp.ones((B,), bool)
    a = run(params, i, drop_cond=yes)
    np.testing.assert_allclose(run(params, dict(i, cond=i["cond"] * 3 + 1), drop_cond=yes), a,
                               atol=1e-5)
    assert np.all(np.abs(np.asarray(run(params, _other_text(i), drop_cond=yes) - a)).max(
        axis=(1, 2, 3)) > 1e-3)


def test_drop_is_both_drops_and_acts_per_sample(dalle2_like):
    params, i, run = dalle2_like
    yes = jnp.ones((B,), bool)
    np.testing.assert_allclose(run(params, i, drop=yes),
                               run(params, i, drop_cond=yes, drop_context=yes), atol=1e-5)
    some = jnp.asarray([True, False, True])
    mixed = np.asarray(run(params, i, drop_context=some))
    np.testing.assert_allclose(mixed[0], run(params, i, drop_context=yes)[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1], run(params, i)[1], atol=1e-5)


def test_pooled_text_vector_reaches_the_network(dalle2_like):
    params, i, run = dalle2_like
    moved = run(params, dict(i, context_pooled=i["context_pooled"] + 1.0))
    assert np.all(np.abs(np.asarray(moved - run(params, i))).max(axis=(1, 2, 3)) > 1e-3)


def test_super_resolution_inputs_reach_the_network_and_are_required():
    model = UNet(**BASE, super_res=True)
    rng = np.random.default_rng(1)
    x, low = _normal(rng, B, H, H, 3), _normal(rng, B, H // 2, H // 2, 3)
    t, aug = jnp.asarray([3, 300, 900]), jnp.asarray([0, 100, 250])
    params = _random_params(model, x, t, low_res=low, aug_t=aug)
    run = jax.jit(lambda low, aug: model.apply(params, x, t, low_res=low, aug_t=aug))
    base = np.asarray(run(low, aug))
    for changed in (run(low, aug + 50), run(low * 0.5, aug)):  # the level, then the image
        assert np.all(np.abs(np.asarray(changed) - base).max(axis=(1, 2, 3)) > 1e-3)
    assert params["params"]["stem"]["kernel"].shape[2] == 6  # x and the upsampled low_res
    with pytest.raises(ValueError, match="super_res=True needs"):
        model.apply(params, x, t, low_res=low)
    with pytest.raises(ValueError, match="super_res=False"):
        UNet(**BASE).init(jax.random.key(0), x, t, aug_t=aug)


def test_per_level_blocks_and_skip_scale():
    x, t = jnp.zeros((1, H, H, 3)), jnp.zeros((1,), jnp.int32)
    count = lambda **kw: sum(int(np.prod(s.shape)) for s in jax.tree.leaves(jax.eval_shape(  # noqa: E731
        lambda: UNet(**dict(BASE, **kw)).init(jax.random.key(0), x, t))))
    assert count(num_res_blocks=(1, 2)) > count(num_res_blocks=1)
    assert count(num_res_blocks=(1, 2)) < count(num_res_blocks=2)
    model = UNet(**dict(BASE, skip_scale=2 ** -0.5))
    params = _random_params(model, x + 1, t)
    out = model.apply(params, x + 1, t)
    same = UNet(**BASE).apply(params, x + 1, t)
    assert np.abs(np.asarray(out - same)).max() > 1e-4  # the skips are scaled
    with pytest.raises(ValueError, match="one count per level"):
        UNet(**dict(BASE, num_res_blocks=(1, 1, 1))).init(jax.random.key(0), x, t)


@pytest.fixture(scope="module")
def glide():
    text = TextTransformer(vocab_size=20, max_len=6, width=8, depth=1, num_heads=2, causal=True,
                           pool="eos", eos_id=2, pad_id=0)
    model = TextUNet(text, UNet(**BASE, context_dim=8))
    tokens = jnp.asarray([[1, 5, 6, 2, 0, 0], [1, 7, 2, 0, 0, 0], [1, 9, 9, 9, 9, 2]])
    x = _normal(np.random.default_rng(2), B, H, H, 3)
    t = jnp.asarray([10, 400, 990])
    params = _random_params(model, x, t, tokens=tokens)
    return model, params, x, t, tokens


def test_glide_dropped_caption_ignores_the_tokens(glide):
    model, params, x, t, tokens = glide
    yes = jnp.ones((B,), bool)
    other = jnp.asarray([[1, 3, 2, 0, 0, 0]] * B)
    dropped = model.apply(params, x, t, tokens=tokens, drop=yes)
    np.testing.assert_allclose(model.apply(params, x, t, tokens=other, drop=yes), dropped, atol=1e-5)
    assert np.abs(np.asarray(model.apply(params, x, t, tokens=tokens) - dropped)).max() > 1e-3
    # padding after the end token changes nothing
    longer = tokens.at[1, 4].set(0)
    np.testing.assert_allclose(model.apply(params, x, t, tokens=longer),
                               model.apply(params, x, t, tokens=tokens), atol=1e-6)


def test_glide_guidance_one_is_conditional_zero_unconditional(glide):
    model, params, x, t, tokens = glide
    cond, uncond = denoiser(model, params, guided=True, tokens=tokens)(x, t)
    np.testing.assert_allclose(cond, model.apply(params, x, t, tokens=tokens), atol=1e-5)
    np.testing.assert_allclose(uncond, model.apply(params, x, t, tokens=tokens,
                                                   drop=jnp.ones((B,), bool)), atol=1e-5)
    np.testing.assert_allclose(gaussian.classifier_free_guidance(cond, uncond, 1.0), cond)
    np.testing.assert_allclose(gaussian.classifier_free_guidance(cond, uncond, 0.0), uncond)
    guided = gaussian.classifier_free_guidance(cond, uncond, 3.0)
    np.testing.assert_allclose(guided, uncond + 3.0 * (cond - uncond), atol=1e-5)


def test_glide_gradients_are_finite_and_reach_the_text_tower(glide):
    model, params, x, t, tokens = glide
    grads = jax.grad(lambda p: jnp.sum(model.apply(p, x, t, tokens=tokens) ** 2))(params)
    leaves = jax.tree.leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    text_grads = jax.tree.leaves(grads["params"]["text"])
    assert max(float(jnp.abs(g).max()) for g in text_grads) > 0


def test_glide_with_the_caption_encoded_once_equals_encoding_every_call(glide):
    model, params, x, t, tokens = glide
    text = model.apply(params, tokens, method=TextUNet.encode_text)
    np.testing.assert_allclose(model.apply(params, x, t, **text), model.apply(params, x, t, tokens=tokens),
                               atol=1e-6)
    with pytest.raises(ValueError, match="pass tokens"):
        model.apply(params, x, t)
