"""The U-Net: DDPM's size, attention against NumPy, conditioning, guidance in the sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.diffusion import gaussian as dif
from jaxzoo.diffusion import samplers as smp
from jaxzoo.diffusion.unet import AttentionBlock, UNet, denoiser, timestep_embedding

B, H, C = 3, 8, 2
TINY = dict(out_channels=C, channels=8, channel_mult=(1, 2), num_res_blocks=1,
            attention_resolutions=(4,), num_groups=4)
FULL = dict(TINY, num_classes=5, cond_dim=3, num_cond_tokens=2, context_dim=6, num_heads=2)
# One level, attention at full resolution: the cheapest network to compile, for sampler tests.
MINI = dict(out_channels=C, channels=8, channel_mult=(1,), num_res_blocks=1,
            attention_resolutions=(H,), num_groups=4)


def _random_params(model, *args, scale=0.3, seed=1, **kwargs):
    """Parameters of the right shapes drawn with NumPy (every layer non-zero, the zero-initialised
    output layers included); shapes from jax.eval_shape, so nothing is compiled."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return dict(x=jnp.asarray(rng.normal(size=(B, H, H, C)), jnp.float32),
                t=jnp.asarray([0, 500, 999], jnp.int32),
                label=jnp.asarray([0, 4, 2]), cond=jnp.asarray(rng.normal(size=(B, 3)), jnp.float32),
                context=jnp.asarray(rng.normal(size=(B, 4, 6)), jnp.float32),
                context_mask=jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool))


@pytest.fixture(scope="module")
def full():
    """The fully conditioned model, random parameters, and one jitted apply shared by tests
    (every call passes the same set of keyword arguments, so it compiles once per batch size)."""
    model = UNet(**FULL)
    i = _inputs()
    params = _random_params(model, i["x"], i["t"], label=i["label"], cond=i["cond"],
                            context=i["context"], context_mask=i["context_mask"])
    apply = jax.jit(lambda p, x, t, label, cond, context, context_mask, drop: model.apply(
        p, x, t, label=label, cond=cond, context=context, context_mask=context_mask, drop=drop))
    run = lambda p, drop=None, **kw: np.asarray(apply(
        p, **kw, drop=jnp.zeros(kw["x"].shape[0], bool) if drop is None else drop))
    return model, params, run


def test_paper_configuration_has_ddpm_parameter_count():
    """DDPM's CIFAR-10 network (Ho et al. 2020, App. B): 35.7M parameters."""
    model = UNet(out_channels=3, dropout=0.1)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,))),
                            jax.random.key(0))
    count = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
    assert round(count / 1e5) == 357, count


def test_timestep_embedding_matches_numpy():
    t = np.array([0.0, 1.0, 17.5, 999.0])
    angle = t[:, None] / 10000.0 ** (2 * np.arange(8)[None] / 16)  # frequencies 10000^(-2i/dim)
    np.testing.assert_allclose(timestep_embedding(t, 16), np.concatenate([np.sin(angle), np.cos(angle)], 1),
                               atol=2e-4)


def test_attention_with_context_matches_numpy():
    rng = np.random.default_rng(0)
    block = AttentionBlock(num_heads=2, num_groups=2)
    x = jnp.asarray(rng.normal(size=(2, 3, 3, 4)), jnp.float32)
    ctx = jnp.asarray(rng.normal(size=(2, 5, 7)), jnp.float32)
    mask = jnp.asarray([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0]], bool)
    params = _random_params(block, x, ctx, mask, scale=0.5)
    got = np.asarray(block.apply(params, x, ctx, mask))

    p = jax.tree.map(np.asarray, params["params"])
    xn = np.asarray(x, np.float64).reshape(2, 9, 2, 2)  # GroupNorm: 2 groups of 2 channels
    mean, var = xn.mean((1, 3), keepdims=True), xn.var((1, 3), keepdims=True)
    y = ((xn - mean) / np.sqrt(var + 1e-6)).reshape(2, 9, 4)
    y = y * p["GroupNorm_0"]["scale"] + p["GroupNorm_0"]["bias"]
    qkv = y @ p["qkv"]["kernel"] + p["qkv"]["bias"]
    ckv = np.asarray(ctx) @ p["context_kv"]["kernel"] + p["context_kv"]["bias"]
    q, k, v = qkv[..., :4], np.concatenate([qkv[..., 4:8], ckv[..., :4]], 1), np.concatenate(
        [qkv[..., 8:], ckv[..., 4:]], 1)
    keep = np.concatenate([np.ones((2, 9), bool), np.asarray(mask)], 1)
    out = np.zeros((2, 9, 4))
    for h in range(2):
        s = slice(2 * h, 2 * h + 2)
        logits = np.einsum("bqd,bkd->bqk", q[..., s], k[..., s]) / np.sqrt(2)
        logits = np.where(keep[:, None, :], logits, -np.inf)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        out[..., s] = np.einsum("bqk,bkd->bqd", w / w.sum(-1, keepdims=True), v[..., s])
    want = np.asarray(x) + (out @ p["proj_out"]["kernel"] + p["proj_out"]["bias"]).reshape(2, 3, 3, 4)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_batched_equals_per_item_and_every_input_matters(full):
    model, params, run = full
    i = _inputs()
    out = run(params, **i)
    assert out.shape == (B, H, H, C) and np.all(np.isfinite(out))
    for b in range(B):
        np.testing.assert_allclose(out[b:b + 1], run(params, **{k: v[b:b + 1] for k, v in i.items()}),
                                   atol=1e-5)
    for name in ("x", "t", "label", "cond", "context"):
        other = _inputs(seed=1) if name != "label" else {"label": jnp.asarray([1, 3, 0])}
        changed = run(params, **{**i, name: other[name] if name != "t" else i["t"] + 7})
        assert np.all(np.abs(changed - out).max(axis=(1, 2, 3)) > 1e-4), name


def test_masked_tokens_are_ignored_and_drop_is_the_null_conditioning(full):
    model, params, run = full
    i = _inputs()
    out = run(params, **i)
    # Changing only masked-out tokens changes nothing.
    noisy = jnp.where(i["context_mask"][..., None], i["context"], 1e3)
    np.testing.assert_allclose(run(params, **{**i, "context": noisy}), out, atol=1e-5)
    # drop = True is the null conditioning: null class, zero vector, no text tokens (the DALL-E 2
    # extra tokens stay, computed from the zero vector) ...
    dropped = run(params, **i, drop=jnp.asarray([True, False, True]))
    null = run(params, **{**i, "label": jnp.full((B,), 5), "cond": jnp.zeros((B, 3)),
                          "context_mask": jnp.zeros((B, 4), bool)})
    np.testing.assert_allclose(dropped[[0, 2]], null[[0, 2]], atol=1e-5)
    np.testing.assert_allclose(dropped[1], out[1], atol=1e-5)
    # ... which is also what the model computes when given no conditioning at all.
    uncond = jax.jit(lambda p, x, t: model.apply(p, x, t))(params, i["x"], i["t"])
    np.testing.assert_allclose(uncond, null, atol=1e-5)


def test_dropout_only_in_training():
    model = UNet(**dict(MINI, dropout=0.5))
    x, t = jnp.ones((2, H, H, C)), jnp.asarray([3, 700])
    params = _random_params(model, x, t)
    apply = jax.jit(lambda key, train: model.apply(params, x, t, train=train, rngs={"dropout": key}),
                    static_argnums=1)
    run = lambda seed, train: np.asarray(apply(jax.random.key(seed), train))
    np.testing.assert_array_equal(run(0, False), run(1, False))
    assert not np.allclose(run(0, True), run(1, True))
    np.testing.assert_array_equal(run(0, True), run(0, True))


def _tiny_conditional():
    model = UNet(**dict(MINI, num_classes=3))
    return model, _random_params(model, jnp.zeros((1, H, H, C)), jnp.zeros((1,), jnp.int32),
                                 label=jnp.zeros((1,), jnp.int32), scale=0.1, seed=2)


def test_guidance_scale_one_is_conditional_and_zero_is_unconditional():
    model, params = _tiny_conditional()
    sch = dif.make_schedule("linear")
    x_T = jax.random.normal(jax.random.key(5), (4, H, H, C))
    label = jnp.asarray([0, 1, 2, 0])
    run = lambda fn, scale=None: np.asarray(smp.sample(fn, x_T, None, sch, 2, method="dpmpp_2m",
                                                       guidance_scale=scale))
    cond = run(denoiser(model, params, label=label))
    uncond = run(denoiser(model, params))
    guided = lambda s: run(denoiser(model, params, guided=True, label=label), s)
    assert np.abs(cond - uncond).max() > 1e-3  # the label matters
    np.testing.assert_allclose(guided(1.0), cond, atol=1e-5)
    np.testing.assert_allclose(guided(0.0), uncond, atol=1e-5)
    assert np.abs(guided(3.0) - cond).max() > 1e-3


def test_second_sampler_call_with_new_params_and_labels_does_not_retrace():
    model, params = _tiny_conditional()
    sch = dif.make_schedule("linear")
    x_T = jax.random.normal(jax.random.key(5), (2, H, H, C))
    call = lambda p, label: smp.sample(denoiser(model, p, guided=True, label=label), x_T, None, sch,
                                       2, method="ddim", guidance_scale=2.0)
    first = np.asarray(call(params, jnp.asarray([0, 1])))
    size = smp._sample_jit._cache_size()
    other = jax.tree.map(lambda a: a * 0.5, params)
    second = np.asarray(call(other, jnp.asarray([2, 2])))
    assert smp._sample_jit._cache_size() == size
    assert np.abs(first - second).max() > 1e-4
    # An equal (not identical) model object also reuses the compiled sampler.
    model2 = UNet(**dict(MINI, num_classes=3))
    smp.sample(denoiser(model2, params, guided=True, label=jnp.asarray([0, 1])), x_T, None, sch, 2,
               method="ddim", guidance_scale=2.0)
    assert smp._sample_jit._cache_size() == size


def test_gradients_finite_at_extreme_inputs():
    model = UNet(**dict(MINI, dropout=0.1))
    x = jnp.concatenate([jnp.full((1, H, H, C), 1e3), jnp.zeros((1, H, H, C))])
    t = jnp.asarray([999.0, 0.0])
    params = _random_params(model, x, t, scale=0.1)
    loss = lambda p: jnp.mean(model.apply(p, x, t, train=True, rngs={"dropout": jax.random.key(0)}) ** 2)
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def _trace_init(model, *args, **kwargs):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))


def test_bad_inputs():
    x, t = jnp.zeros((1, H, H, C)), jnp.zeros((1,))
    with pytest.raises(ValueError, match="num_classes=0"):
        _trace_init(UNet(**TINY), x, t, label=jnp.zeros((1,), jnp.int32))
    with pytest.raises(ValueError, match="context_dim=0"):
        _trace_init(UNet(**TINY), x, t, context=jnp.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"context must be \[B, L, 6\]"):
        _trace_init(UNet(**FULL), x, t, context=jnp.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match="divisible by"):
        _trace_init(UNet(**dict(TINY, channel_mult=(1, 2, 2, 2))), jnp.zeros((1, 6, 6, C)), t)
    with pytest.raises(ValueError, match="num_groups=3"):
        _trace_init(UNet(**dict(TINY, num_groups=3)), x, t)
    with pytest.raises(ValueError, match=r"x must be \[B, H, W, C\]"):
        _trace_init(UNet(**TINY), jnp.zeros((H, H, C)), t)
