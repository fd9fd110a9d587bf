"""The shared transformer block and the ViT / text towers: masks, pooling, positions, batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.core.positional import sincos_2d_positions
from jaxzoo.nn.towers import ConvNet, MAPHead, TextTransformer, ViT
from jaxzoo.nn.transformer import Block

RNG = np.random.default_rng(0)


def test_sincos_2d_positions_follow_the_formula():
    h, w, d = 3, 4, 16
    table = np.asarray(sincos_2d_positions(h, w, d))
    assert table.shape == (h * w, d)
    for y in range(h):
        for x in range(w):
            row = table[y * w + x]
            for i in range(d // 4):
                omega = 10000.0 ** (-i / (d // 4 - 1))
                np.testing.assert_allclose(
                    [row[i], row[d // 4 + i], row[d // 2 + i], row[3 * d // 4 + i]],
                    [np.sin(x * omega), np.cos(x * omega), np.sin(y * omega), np.cos(y * omega)],
                    atol=1e-6)
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_2d_positions(2, 2, 6)


@pytest.mark.parametrize("pool, position", [("cls", "learned"), ("mean", "sincos2d"), ("map", "learned")])
def test_vit_batched_equals_one_image_at_a_time_and_has_gradients(pool, position):
    model = ViT(patch_size=4, width=16, depth=2, num_heads=2, pool=pool, position=position)
    images = jnp.asarray(RNG.normal(size=(3, 8, 12, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), images[:1])
    pooled, tokens = model.apply(variables, images)
    assert pooled.shape == (3, 16) and tokens.shape == (3, 6 + (pool == "cls"), 16)
    for i in range(3):
        p, t = model.apply(variables, images[i:i + 1])
        np.testing.assert_allclose(p[0], pooled[i], atol=1e-5)
        np.testing.assert_allclose(t[0], tokens[i], atol=1e-5)
    grads = jax.grad(lambda v: jnp.sum(model.apply(v, images)[0] ** 2))(variables)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert float(optax_norm(grads)) > 0


def optax_norm(tree):
    return jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(tree)))


def test_vit_patch_embedding_is_a_linear_map_of_each_patch():
    model = ViT(patch_size=4, width=8, depth=0, num_heads=2, pool="mean", position="sincos2d")
    images = jnp.asarray(RNG.normal(size=(1, 8, 8, 3)), jnp.float32)
    variables = model.init(jax.random.key(1), images)
    kernel = np.asarray(variables["params"]["patch_embed"]["kernel"])  # [4, 4, 3, 8]
    bias = np.asarray(variables["params"]["patch_embed"]["bias"])
    x = np.asarray(images[0])
    patches = np.stack([x[r:r + 4, c:c + 4].reshape(-1) for r in (0, 4) for c in (0, 4)])
    embedded = patches @ kernel.reshape(-1, 8) + bias + np.asarray(sincos_2d_positions(2, 2, 8))
    mu, var = embedded.mean(-1, keepdims=True), embedded.var(-1, keepdims=True)
    ln = variables["params"]["ln_post"]
    want = (embedded - mu) / np.sqrt(var + 1e-6) * np.asarray(ln["scale"]) + np.asarray(ln["bias"])
    np.testing.assert_allclose(np.asarray(model.apply(variables, images)[1][0]), want, atol=1e-5)


def _numpy_convnet(params, x, widths, convs):
    """The ConvNet forward by explicit loops: zero-padded 3x3 correlation, ReLU, 2x2 max-pool."""
    for i in range(len(widths)):
        for j in range(convs):
            kernel = np.asarray(params[f"conv_{i}_{j}"]["kernel"])  # [3, 3, C_in, C_out]
            bias = np.asarray(params[f"conv_{i}_{j}"]["bias"])
            h, w, _ = x.shape
            padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
            out = np.empty((h, w, kernel.shape[-1]))
            for r in range(h):
                for c in range(w):
                    out[r, c] = np.einsum("abi,abio->o", padded[r:r + 3, c:c + 3], kernel) + bias
            x = np.maximum(out, 0.0)
        h, w, ch = x.shape
        x = x.reshape(h // 2, 2, w // 2, 2, ch).max(axis=(1, 3))
    return x.mean(axis=(0, 1)), x


@pytest.mark.parametrize("convs", [1, 2])
def test_convnet_matches_a_loop_reference_batched_and_has_gradients(convs):
    widths = (4, 6)
    model = ConvNet(widths=widths, convs=convs)
    images = jnp.asarray(RNG.normal(size=(3, 8, 12, 3)), jnp.float32)
    variables = model.init(jax.random.key(0), images[:1])
    pooled, features = model.apply(variables, images)
    assert pooled.shape == (3, 6) and features.shape == (3, 2, 3, 6)
    for i in range(3):
        want_pooled, want_features = _numpy_convnet(variables["params"], np.asarray(images[i]),
                                                    widths, convs)
        np.testing.assert_allclose(pooled[i], want_pooled, atol=1e-5)
        np.testing.assert_allclose(features[i], want_features, atol=1e-5)
        p, _ = model.apply(variables, images[i:i + 1])
        np.testing.assert_allclose(p[0], pooled[i], atol=1e-5)
    grads = jax.grad(lambda v: jnp.sum(model.apply(v, images)[0] ** 2))(variables)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert float(optax_norm(grads)) > 0
    with pytest.raises(ValueError, match="multiple of 2\\^2"):
        model.apply(variables, images[:, :6])


def test_map_head_is_invariant_to_the_order_of_tokens():
    head = MAPHead(num_heads=2)
    tokens = jnp.asarray(RNG.normal(size=(2, 5, 8)), jnp.float32)
    variables = head.init(jax.random.key(0), tokens)
    a = head.apply(variables, tokens)
    b = head.apply(variables, tokens[:, ::-1])
    np.testing.assert_allclose(a, b, atol=1e-5)


def _text(**kw):
    return TextTransformer(vocab_size=20, max_len=8, width=16, depth=2, num_heads=2, **kw)


def test_causal_text_outputs_ignore_later_tokens_and_pool_at_the_first_eos():
    model = _text(causal=True, pool="eos", eos_id=3)
    tokens = jnp.asarray([[5, 6, 3, 7, 3, 9], [5, 3, 8, 8, 8, 8]])
    variables = model.init(jax.random.key(0), tokens)
    pooled, h = model.apply(variables, tokens)
    changed = tokens.at[:, 4:].set(11)
    pooled2, h2 = model.apply(variables, changed)
    np.testing.assert_allclose(h[:, :4], h2[:, :4], atol=1e-6)
    np.testing.assert_allclose(pooled, pooled2, atol=1e-6)
    np.testing.assert_allclose(pooled, jnp.stack([h[0, 2], h[1, 1]]), atol=1e-6)
    assert not np.allclose(h[:, 4:], h2[:, 4:])


@pytest.mark.parametrize("pool", ["first", "mean"])
def test_bidirectional_text_masks_padding(pool):
    model = _text(causal=False, pool=pool, pad_id=0)
    tokens = jnp.asarray([[2, 5, 6, 0, 0], [2, 7, 0, 0, 0]])
    variables = model.init(jax.random.key(0), tokens)
    pooled, h = model.apply(variables, tokens)
    short, _ = model.apply(variables, tokens[:, :3])  # the same text with less padding
    np.testing.assert_allclose(pooled, short, atol=1e-5)
    # Bidirectional: the first position sees later real tokens.
    other, _ = model.apply(variables, tokens.at[0, 2].set(9))
    assert not np.allclose(other[0], pooled[0])
    if pool == "mean":
        np.testing.assert_allclose(pooled[1], h[1, :2].mean(0), atol=1e-6)


def test_block_cross_attention_reads_only_unmasked_context():
    block = Block(num_heads=2, cross_attention=True)
    x = jnp.asarray(RNG.normal(size=(2, 3, 8)), jnp.float32)
    context = jnp.asarray(RNG.normal(size=(2, 4, 8)), jnp.float32)
    valid = jnp.asarray([[True, True, False, False], [True, True, True, True]])
    variables = block.init(jax.random.key(0), x, context=context, context_mask=valid)
    run = lambda c: block.apply(variables, x, context=c, context_mask=valid)[0]  # noqa: E731
    out = run(context)
    np.testing.assert_allclose(run(context.at[0, 2:].set(5.0))[0], out[0], atol=1e-6)
    assert not np.allclose(run(context.at[0, 1].set(5.0))[0], out[0])
    with pytest.raises(ValueError, match="activation"):
        Block(num_heads=2, activation="swish").init(jax.random.key(0), x)
