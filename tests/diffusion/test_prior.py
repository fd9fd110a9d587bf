"""DALL-E 2's diffusion prior: sequence layout, causal and padding masks, the null conditioning,
best-of-K selection, and a toy text -> embedding problem learnt end to end and sampled."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxzoo.diffusion import gaussian as dif
from jaxzoo.diffusion import samplers as smp
from jaxzoo.diffusion.prior import DiffusionPrior, best_of, prior_loss, sequence_layout
from jaxzoo.diffusion.unet import denoiser

B, L, D, E = 3, 4, 5, 6
TINY = dict(embed_dim=E, width=16, depth=2, num_heads=2, max_text_len=8)
MASK = np.asarray([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]], bool)  # row 2: the first token is padding


def _random_params(model, *args, scale=0.3, seed=1, **kwargs):
    """Parameters of the right shapes drawn with NumPy (every layer far from its init, so every
    path carries signal); shapes from jax.eval_shape, so nothing is compiled."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


def _inputs(seed=0, batch=B, num_text=L):
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)  # noqa: E731
    return dict(x_t=normal(batch, E), t=jnp.asarray([0, 500, 999][:batch], jnp.int32),
                text_tokens=normal(batch, num_text, D), text_mask=jnp.asarray(MASK[:batch, :num_text]),
                text_embed=normal(batch, E))


@pytest.fixture(scope="module")
def prior():
    """Model, random parameters and a jitted apply returning (x0 [B, E], hidden [B, L + 4, W]);
    every call passes the same keywords (drop always an array), so it compiles once per shape."""
    model = DiffusionPrior(**TINY)
    i = _inputs()
    params = _random_params(model, i["x_t"], i["t"], text_tokens=i["text_tokens"],
                            text_mask=i["text_mask"], text_embed=i["text_embed"])
    apply = jax.jit(lambda p, x_t, t, text_tokens, text_mask, text_embed, drop: model.apply(
        p, x_t, t, text_tokens=text_tokens, text_mask=text_mask, text_embed=text_embed, drop=drop,
        return_hidden=True))

    def run(p=params, drop=None, **kw):
        kw = {**_inputs(), **kw}
        drop = jnp.zeros(kw["x_t"].shape[0], bool) if drop is None else jnp.asarray(drop)
        out, hidden = apply(p, drop=drop, **kw)
        return np.asarray(out), np.asarray(hidden)

    return model, params, run


def _changed(a, b):
    return np.abs(a - b).max() > 1e-3


def _new_query(params):
    """Parameters with another learned query token. (Not a constant shift: every LayerNorm
    removes the mean over features, so adding c * ones to any token changes nothing.)"""
    shift = jnp.asarray(np.random.default_rng(9).normal(size=TINY["width"]), jnp.float32)
    return {"params": {**params["params"], "query": params["params"]["query"] + shift}}


def test_sequence_layout_follows_the_paper_order():
    lay = sequence_layout(3)
    assert lay["text"] == slice(0, 3)
    assert [lay[k] for k in ("text_embed", "timestep", "noised_image", "query", "length")] == [3, 4, 5, 6, 7]
    assert sequence_layout(0)["query"] == 3 and list(range(5))[sequence_layout(0)["text"]] == []
    with pytest.raises(ValueError):
        sequence_layout(-1)


def test_output_shape_and_every_input_matters(prior):
    _, params, run = prior
    i = _inputs()
    base, hidden = run()
    assert base.shape == (B, E) and hidden.shape == (B, L + 4, TINY["width"])
    assert np.all(np.isfinite(base))
    real = jnp.asarray(MASK, jnp.float32)[..., None]  # perturb real text tokens only
    perturbed = dict(x_t=i["x_t"] + 0.5, t=jnp.asarray([10, 20, 30], jnp.int32),
                     text_tokens=i["text_tokens"] + real, text_embed=i["text_embed"] + 0.5)
    for name, value in perturbed.items():
        out, _ = run(**{name: value})
        assert np.abs(out - base).max(axis=1).min() > 1e-3, name  # every example changes
    assert _changed(run(_new_query(params))[0], base)


@pytest.mark.parametrize("part", ["text_embed", "timestep", "noised_image", "query"])
def test_causal_mask_hides_later_parts_from_earlier_positions(prior, part):
    """Perturbing the part at position p leaves every hidden state before p unchanged (causal
    attention), and changes the hidden state at p and the output."""
    _, params, run = prior
    i = _inputs()
    lay = sequence_layout(L)
    base, hidden = run()
    if part == "query":
        out, h = run(_new_query(params))
    else:
        name, value = {"text_embed": ("text_embed", i["text_embed"] + 0.5),
                       "timestep": ("t", i["t"] + 7),
                       "noised_image": ("x_t", i["x_t"] + 0.5)}[part]
        out, h = run(**{name: value})
    p = lay[part]
    np.testing.assert_allclose(h[:, :p], hidden[:, :p], atol=1e-6, rtol=0)
    assert _changed(h[:, p], hidden[:, p]) and _changed(out, base)


def test_padded_text_tokens_change_nothing(prior):
    _, _, run = prior
    i = _inputs()
    base, hidden = run()
    pad = jnp.asarray(~MASK, jnp.float32)[..., None]
    out, h = run(text_tokens=i["text_tokens"] + 10.0 * pad)
    np.testing.assert_allclose(out, base, atol=1e-6, rtol=0)
    keep = np.concatenate([MASK, np.ones((B, 4), bool)], axis=1)  # every non-padded position
    np.testing.assert_allclose(h[keep], hidden[keep], atol=1e-6, rtol=0)
    assert _changed(h[~keep], hidden[~keep])  # the padded positions' own states do change
    # Padding to a longer L (two more padded tokens) changes nothing either: the trailing four
    # tokens use fixed rows of the position table.
    longer = jnp.concatenate([i["text_tokens"], jnp.ones((B, 2, D))], axis=1)
    mask = jnp.concatenate([i["text_mask"], jnp.zeros((B, 2), bool)], axis=1)
    np.testing.assert_allclose(run(text_tokens=longer, text_mask=mask)[0], base, atol=1e-5, rtol=0)


def test_drop_is_the_null_text_conditioning(prior):
    _, _, run = prior
    drop = jnp.asarray([True, False, True])
    out, _ = run(drop=drop)
    null, _ = run(text_mask=jnp.zeros((B, L), bool), text_embed=jnp.zeros((B, E)))
    cond, _ = run()
    np.testing.assert_allclose(out[[0, 2]], null[[0, 2]], atol=1e-6, rtol=0)
    np.testing.assert_allclose(out[1], cond[1], atol=1e-6, rtol=0)  # per sample
    assert _changed(null, cond)
    other = _inputs(seed=5)
    all_dropped = run(drop=jnp.ones(B, bool))[0]
    np.testing.assert_allclose(run(drop=jnp.ones(B, bool), text_tokens=other["text_tokens"],
                                   text_mask=jnp.ones((B, L), bool), text_embed=other["text_embed"])[0],
                               all_dropped, atol=1e-6, rtol=0)
    assert _changed(all_dropped[1], cond[1])


def test_batched_equals_per_example_loop(prior):
    _, _, run = prior
    i = _inputs()
    batched, _ = run(drop=jnp.asarray([False, True, False]))
    loop = [run(drop=jnp.asarray([b == 1]), **{k: v[b:b + 1] for k, v in i.items()})[0][0]
            for b in range(B)]
    np.testing.assert_allclose(batched, np.stack(loop), atol=1e-5, rtol=1e-5)


def test_int_float_and_scalar_timesteps(prior):
    _, _, run = prior
    as_int, _ = run()
    np.testing.assert_allclose(run(t=jnp.asarray([0.0, 500.0, 999.0]))[0], as_int, atol=1e-5, rtol=0)
    fractional = run(t=jnp.asarray([0.5, 500.5, 998.5]))[0]
    assert np.all(np.isfinite(fractional)) and _changed(fractional, as_int)
    np.testing.assert_allclose(run(t=jnp.asarray(500, jnp.int32))[0],
                               run(t=jnp.full((B,), 500, jnp.int32))[0], atol=1e-6, rtol=0)


def test_gradients_finite_for_params_and_inputs_at_extremes(prior):
    model, params, _ = prior
    i = _inputs()

    def loss(p, x_t, tokens, embed, drop):
        return jnp.mean(model.apply(p, x_t, i["t"], text_tokens=tokens, text_mask=i["text_mask"],
                                    text_embed=embed, drop=drop) ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    for scale, drop in ((1.0, [False] * B), (1e4, [True, False, False])):
        grads = grad(params, i["x_t"] * scale, i["text_tokens"] * scale, i["text_embed"] * scale,
                     jnp.asarray(drop))
        leaves = jax.tree.leaves(grads)
        assert all(np.all(np.isfinite(g)) for g in leaves), scale
        assert np.abs(grads[1]).min(axis=1).max() > 0  # x_t reaches the output
    assert np.abs(grads[2][0]).max() == 0 and np.abs(grads[3][0]).max() == 0  # dropped: no text grad


def test_dropout_only_in_training():
    model = DiffusionPrior(**dict(TINY, dropout=0.3))
    i = _inputs()
    params = _random_params(model, **i)
    run = jax.jit(lambda key, train: model.apply(params, **i, train=train, rngs={"dropout": key}),
                  static_argnums=1)
    np.testing.assert_array_equal(run(jax.random.key(0), False), run(jax.random.key(1), False))
    assert _changed(np.asarray(run(jax.random.key(0), True)), np.asarray(run(jax.random.key(0), False)))


def test_guided_denoiser_pairs_conditional_and_null(prior):
    model, params, run = prior
    i = _inputs()
    text = dict(text_tokens=i["text_tokens"], text_mask=i["text_mask"], text_embed=i["text_embed"])
    call = jax.jit(lambda fn, x, t: fn(x, t))
    cond, uncond = call(denoiser(model, params, guided=True, **text), i["x_t"], i["t"])
    np.testing.assert_allclose(cond, run()[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(uncond, run(drop=jnp.ones(B, bool))[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(call(denoiser(model, params, **text), i["x_t"], i["t"]), cond,
                               atol=1e-5, rtol=0)


def test_best_of_matches_numpy_loop():
    rng = np.random.default_rng(3)
    samples, text = rng.normal(size=(3, 5, E)), rng.normal(size=(5, E))
    expected = np.stack([samples[np.argmax([s[b] @ text[b] for s in samples]), b] for b in range(5)])
    got = np.asarray(best_of(jnp.asarray(samples), jnp.asarray(text)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert len({np.argmax([s[b] @ text[b] for s in samples]) for b in range(5)}) > 1  # not trivial
    with pytest.raises(ValueError):
        best_of(samples[:, :4], text)


def test_prior_loss_is_the_x0_mse_of_denoising_loss():
    rng = np.random.default_rng(4)
    pred, x0 = rng.normal(size=(4, E)), rng.normal(size=(4, E))
    np.testing.assert_allclose(prior_loss(pred, x0), np.mean((pred - x0) ** 2), rtol=1e-6)
    assert float(prior_loss(x0, x0)) == 0.0
    sch = dif.make_schedule("cosine", 100)
    fn = lambda x_t, t: 0.5 * x_t  # noqa: E731
    t, eps = jnp.asarray([0, 10, 50, 99]), jnp.asarray(rng.normal(size=(4, E)), jnp.float32)
    x0 = jnp.asarray(x0, jnp.float32)
    loss, _ = dif.denoising_loss(fn, sch, x0, t, eps, prediction="x0")
    np.testing.assert_allclose(prior_loss(fn(dif.q_sample(sch, x0, t, eps), t), x0), loss, rtol=1e-6)


def test_bad_inputs():
    model = DiffusionPrior(**TINY)
    i = _inputs()
    trace = lambda **kw: jax.eval_shape(  # noqa: E731
        lambda: model.init(jax.random.key(0), **{**i, **kw}))
    for bad in (dict(x_t=jnp.zeros((B, E + 1))), dict(text_embed=jnp.zeros((B + 1, E))),
                dict(text_tokens=jnp.zeros((B, 9, D)), text_mask=jnp.ones((B, 9), bool)),
                dict(text_mask=jnp.ones((B, L + 1), bool)), dict(text_tokens=jnp.zeros((B, D)))):
        with pytest.raises(ValueError):
            trace(**bad)


def _flax_like_init(shapes, seed):
    """Initial parameters as Flax draws them for this model (LayerNorm scale 1, biases 0,
    weights N(0, 0.02^2)), from NumPy: a jitted model.init costs seconds of compilation on CPU."""
    rng = np.random.default_rng(seed)

    def init(path, s):
        name = path[-1].key
        if name == "scale":
            return jnp.ones(s.shape, s.dtype)
        if name == "bias":
            return jnp.zeros(s.shape, s.dtype)
        return jnp.asarray(0.02 * rng.normal(size=s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(init, shapes)


@pytest.mark.slow
def test_learns_a_toy_text_to_image_embedding_map():
    """x0 = normalize(A z_t) for unit text embeddings z_t (E = 8), with token features a fixed
    linear function of z_t; trained 200 steps with the x0 MSE and 10% text dropout, then sampled
    with 10 DDIM steps. Samples must match their own captions, not shuffled ones (measured:
    mean cosine 0.996 against 0.006 for shuffled text)."""
    e_dim, n_text, d_text, batch = 8, 3, 4, 64
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(e_dim, e_dim)), jnp.float32)
    to_tokens = jnp.asarray(rng.normal(size=(e_dim, n_text * d_text)), jnp.float32)
    normalize = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731

    def data(key, n):
        z_t = normalize(jax.random.normal(key, (n, e_dim)))
        return z_t, (z_t @ to_tokens).reshape(n, n_text, d_text), normalize(z_t @ a.T)

    model = DiffusionPrior(e_dim, width=32, depth=2, num_heads=2, max_text_len=n_text)
    schedule = dif.make_schedule("cosine", 1000)
    z_t, tokens, x0 = data(jax.random.key(0), batch)
    params = _flax_like_init(jax.eval_shape(lambda: model.init(
        jax.random.key(0), x0, jnp.zeros(batch, jnp.int32), text_tokens=tokens, text_embed=z_t)), 1)
    tx = optax.adam(3e-3)

    @jax.jit
    def step(params, opt_state, key):
        k_data, k_t, k_eps, k_drop = jax.random.split(key, 4)
        z_t, tokens, x0 = data(k_data, batch)
        t = jax.random.randint(k_t, (batch,), 0, schedule.num_train_steps)
        x_t = dif.q_sample(schedule, x0, t, jax.random.normal(k_eps, x0.shape))
        drop = jax.random.bernoulli(k_drop, 0.1, (batch,))
        loss = lambda p: prior_loss(model.apply(p, x_t, t, text_tokens=tokens, text_embed=z_t,  # noqa: E731
                                                drop=drop), x0)
        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, value

    opt_state, key = tx.init(params), jax.random.key(2)
    for i in range(200):
        params, opt_state, value = step(params, opt_state, jax.random.fold_in(key, i))
    assert np.isfinite(value)

    n = 128
    z_t, tokens, x0 = data(jax.random.key(7), n)
    x_T = jax.random.normal(jax.random.key(8), (n, e_dim))
    cosine = lambda s: float(jnp.mean(jnp.sum(normalize(s) * x0, axis=-1)))  # noqa: E731
    draw = lambda z, tok: smp.sample(  # noqa: E731
        denoiser(model, params, text_tokens=tok, text_embed=z), x_T, None, schedule, 10,
        method="ddim", prediction="x0")
    shuffle = jnp.roll(jnp.arange(n), 1)
    matched, shuffled = cosine(draw(z_t, tokens)), cosine(draw(z_t[shuffle], tokens[shuffle]))
    assert matched > 0.9 and shuffled < 0.3, (matched, shuffled)


def test_slerp_keeps_unit_norm_and_moves_at_constant_angular_speed():
    from jaxzoo.diffusion.prior import slerp

    rng = np.random.default_rng(3)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 8)))
    ts = np.linspace(0, 1, 5)
    out = np.asarray(slerp(a, b, ts))
    np.testing.assert_allclose(out[0], a, atol=1e-6)
    np.testing.assert_allclose(out[-1], b, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    theta = np.arccos(np.clip(a @ b, -1, 1))
    # arccos near 1 turns float32 rounding into ~3e-4 rad; the angles themselves are exact
    np.testing.assert_allclose(np.arccos(np.clip(out.astype(np.float64) @ a, -1, 1)), ts * theta,
                               atol=2e-3)
    same = np.asarray(slerp(a, a, ts))  # parallel: no division by sin(0)
    assert np.isfinite(same).all()
    np.testing.assert_allclose(same, np.broadcast_to(a, same.shape), atol=1e-6)
