"""GPT model: causality, cached decoding == full forward, scheme equivalences, sampling, GPT-1
task transforms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxzoo.lm import gpt, tasks
from jaxzoo.lm.gpt import GPT, GPTConfig


@pytest.fixture(autouse=True, scope="module")
def _fast_compile():
    """Tiny models: compilation dominates, so skip most XLA optimisation passes here."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)

TINY = dict(vocab_size=23, num_layers=2, num_heads=4, d_model=32, max_len=64)
SCHEMES = {
    "learned": dict(position="learned"),
    "sinusoidal": dict(position="sinusoidal"),
    "rope": dict(position="rope"),
    "rope_gqa_yarn": dict(position="rope", num_kv_heads=2,
                          rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                        "original_max_position_embeddings": 8}),
    "rope_logn": dict(position="rope", logn_train_len=4),
    "t5": dict(position="t5", t5_num_buckets=8, t5_max_distance=16),
    "none": dict(position="none"),
}


def _model(**kw):
    config = GPTConfig(**{**TINY, **kw})
    params = GPT(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
    # T5's table starts at zero: randomise it so the bias matters in the tests
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: jax.random.normal(jax.random.key(1), x.shape) if "t5_bias" in str(p) else x,
        params)
    return config, params


def _tokens(b, t, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, TINY["vocab_size"])


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_causal_and_cached_decoding_equals_full_forward(name):
    config, params = _model(**SCHEMES[name])
    apply = jax.jit(GPT(config).apply)
    x = _tokens(2, 11)
    full = apply(params, x)
    # causal: changing the last token leaves every earlier position unchanged
    x2 = x.at[:, -1].set((x[:, -1] + 1) % config.vocab_size)
    np.testing.assert_allclose(apply(params, x2)[:, :-1], full[:, :-1], atol=1e-5)
    # prefill 5 tokens, then 3 and 3 with the cache
    cache = gpt.init_cache(config, 2, 16)
    outs = []
    for a, b in ((0, 5), (5, 8), (8, 11)):
        logits, cache = apply(params, x[:, a:b], cache=cache)
        outs.append(logits)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["rope", "t5", "learned"])
def test_batched_equals_loop_and_gradients_finite(name):
    config, params = _model(**SCHEMES[name])
    model = GPT(config)
    x = _tokens(3, 9, seed=2)
    batched = model.apply(params, x)
    loop = jax.jit(jax.vmap(lambda row: model.apply(params, row[None])[0]))  # one row at a time
    np.testing.assert_allclose(batched, loop(x), atol=1e-5)

    def loss(p):
        return gpt.lm_loss(model.apply(p, x[:, :-1]), x[:, 1:])[0]

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value) and abs(value - np.log(config.vocab_size)) < 1.0
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) > 0 for g in leaves) == len(leaves)


def test_rope_variants_reduce_to_plain_rope_within_their_range():
    config, params = _model(position="rope")
    x = _tokens(2, 12, seed=3)
    plain = GPT(config).apply(params, x)
    same = {
        "rerope, window >= length": dict(rerope_window=12),
        "logn, length <= train length": dict(logn_train_len=12),
        "linear factor 1": dict(rope_scaling={"rope_type": "linear", "factor": 1.0}),
        "dynamic, length <= original": dict(rope_scaling={
            "rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 12}),
    }
    for what, change in same.items():
        out = GPT(config.replace(**change)).apply(params, x)
        np.testing.assert_allclose(out, plain, atol=2e-5, err_msg=what)
    # and each actually changes the model beyond that range
    for change in (dict(rerope_window=3), dict(logn_train_len=4),
                   dict(rope_scaling={"rope_type": "linear", "factor": 2.0})):
        assert float(jnp.max(jnp.abs(GPT(config.replace(**change)).apply(params, x) - plain))) > 5e-5


def test_gpt2_small_parameter_count():
    d, v, n, L = 768, 50257, 12, 1024
    per_layer = 2 * 2 * d + 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    expected = v * d + L * d + n * per_layer + 2 * d  # tied output layer
    config = GPTConfig(vocab_size=v, num_layers=n, num_heads=12, d_model=d, max_len=L,
                       position="learned")
    assert gpt.num_parameters(config) == expected == 124_439_808


def test_config_and_length_errors():
    with pytest.raises(ValueError, match="position="):
        GPTConfig(position="alibi")
    with pytest.raises(ValueError, match="need position='rope'"):
        GPTConfig(position="t5", logn_train_len=128)
    with pytest.raises(ValueError, match="num_kv_heads"):
        GPTConfig(num_heads=4, num_kv_heads=3)
    config, params = _model(position="learned")
    with pytest.raises(ValueError, match="exceeds the learned position table"):
        GPT(config).apply(params, jnp.zeros((1, 65), jnp.int32))
    with pytest.raises(ValueError, match="exceeds the learned position table"):
        gpt.init_cache(config, 1, 65)
    rconfig, rparams = _model(position="rope", rerope_window=4)
    with pytest.raises(ValueError, match="ReRoPE"):
        GPT(rconfig).apply(rparams, jnp.zeros((1, 2), jnp.int32), cache=gpt.init_cache(rconfig, 1, 4))


def _greedy_reference(config, params, prompt, n):
    """Full forward passes over a fixed-length buffer (causal: the tail does not matter)."""
    p = prompt.shape[1]
    seq = np.zeros((prompt.shape[0], p + n), np.int32)
    seq[:, :p] = prompt
    apply = jax.jit(GPT(config).apply)
    for i in range(p, p + n):
        seq[:, i] = np.argmax(np.asarray(apply(params, jnp.asarray(seq))[:, i - 1]), -1)
    return seq[:, p:]


def test_generate_greedy_matches_full_forward_loop_and_stops():
    config, params = _model(position="rope")
    prompt = _tokens(2, 5, seed=4)
    ref = _greedy_reference(config, params, prompt, 8)
    out = gpt.generate(config, params, prompt, jax.random.key(0), 8, temperature=0.0)
    np.testing.assert_array_equal(out.tokens, ref)
    np.testing.assert_array_equal(out.lengths, [8, 8])
    assert not np.any(out.stopped)
    # stop at the first occurrence of row 0's tokens 3..4 (searched by brute force)
    stop = [int(ref[0, 3]), int(ref[0, 4])]
    first = {r: next((i for i in range(1, 8) if list(ref[r, i - 1:i + 1]) == stop), None) for r in (0, 1)}
    out = gpt.generate(config, params, prompt, jax.random.key(0), 8, temperature=0.0,
                       stop_sequences=[stop], pad_id=-1)
    for r in (0, 1):
        n = 8 if first[r] is None else first[r] - 1
        assert int(out.lengths[r]) == n and bool(out.stopped[r]) == (first[r] is not None)
        np.testing.assert_array_equal(out.tokens[r, :n], ref[r, :n])
        assert np.all(np.asarray(out.tokens[r, n:]) == -1)


def test_generate_sampling_is_reproducible_and_respects_top_k():
    config, params = _model(position="t5")
    prompt = _tokens(4, 3, seed=5)
    a = gpt.generate(config, params, prompt, jax.random.key(7), 6, temperature=1.5, top_k=1)
    greedy = gpt.generate(config, params, prompt, jax.random.key(0), 6, temperature=0.0)
    np.testing.assert_array_equal(a.tokens, greedy.tokens)  # top-1 sampling is greedy
    b = gpt.generate(config, params, prompt, jax.random.key(7), 6, temperature=1.0, top_p=0.9)
    c = gpt.generate(config, params, prompt, jax.random.key(7), 6, temperature=1.0, top_p=0.9)
    np.testing.assert_array_equal(b.tokens, c.tokens)
    with pytest.raises(ValueError, match="prompt"):
        gpt.generate(config, params, jnp.zeros((3,), jnp.int32), jax.random.key(0), 2)


def test_gpt1_task_transforms_and_features():
    sp = tasks.TaskTokens(start=20, delim=21, extract=22)
    assert tasks.classification_input([1, 2], sp) == [20, 1, 2, 22]
    assert tasks.entailment_input([1], [2, 3], sp) == [20, 1, 21, 2, 3, 22]
    ab, ba = tasks.similarity_inputs([1], [2, 3], sp)
    assert ab == [20, 1, 21, 2, 3, 22] and ba == [20, 2, 3, 21, 1, 22]
    assert tasks.multiple_choice_inputs([5], [[6], [7, 8]], sp) == [[20, 5, 21, 6, 22],
                                                                  [20, 5, 21, 7, 8, 22]]
    config, params = _model(position="learned")
    seqs = [ab, ba, tasks.classification_input([4], sp)]
    tokens, idx = tasks.pad_sequences(seqs, pad_id=0, length=8)
    assert tokens.shape == (3, 8) and list(idx) == [5, 5, 2]
    feats = tasks.extract_features(config, params, tokens, idx)
    for i, s in enumerate(seqs):  # padding does not change the features at <e>
        h = GPT(config).apply(params, jnp.asarray([s]), method=GPT.hidden_states)
        np.testing.assert_allclose(feats[i], h[0, -1], atol=1e-5)
    with pytest.raises(ValueError, match="does not fit"):
        tasks.pad_sequences(seqs, length=4)


# ----------------------------------------------------------------------------- YaRN and logn scaling


def _record_attention_inputs(monkeypatch):
    """Replaces the attention module that GPT's blocks (jaxzoo.nn.transformer) call by a proxy
    recording the rotated q and k of every call, in layer order: {"q": [...], "k": [...]} (the
    real module is untouched; monkeypatch restores it after the test). Run the model un-jitted to
    read them."""
    from types import SimpleNamespace

    from jaxzoo.nn import transformer

    real = transformer.attn
    seen = {"q": [], "k": []}

    def dot_product_attention(q, k, v, *args, **kw):
        seen["q"].append(np.asarray(q))
        seen["k"].append(np.asarray(k))
        return real.dot_product_attention(q, k, v, *args, **kw)

    def update_kv_cache(cache, k_new, v_new):
        seen["k"].append(np.asarray(k_new))
        return real.update_kv_cache(cache, k_new, v_new)

    def cached_attention(q, cache, *args, **kw):
        seen["q"].append(np.asarray(q))
        return real.cached_attention(q, cache, *args, **kw)

    proxy = SimpleNamespace(**{**vars(real), "dot_product_attention": dot_product_attention,
                               "update_kv_cache": update_kv_cache,
                               "cached_attention": cached_attention})
    monkeypatch.setattr(transformer, "attn", proxy)
    return seen


def _np_layer0_qk(params, tokens, inv_freq):
    """Layer 0's rotated q and k in NumPy: LayerNorm (eps 1e-6) of the token embeddings, the
    query / key projections, and rotate-half RoPE (pair i = features (i, i + d/2)) by angle
    m * inv_freq[i] at position m. Returns q, k [B, T, heads, head_dim]."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
    x = p["wte"]["embedding"][np.asarray(tokens)]
    ln = p["h_0"]["ln_1"]
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    x = x * ln["scale"] + ln["bias"]
    b, t = tokens.shape
    angle = np.arange(t)[:, None] * np.asarray(inv_freq, np.float64)[None]  # [T, d/2]
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]

    def rotated(name):
        y = x @ p["h_0"]["attn"][name]["kernel"] + p["h_0"]["attn"][name]["bias"]
        y = y.reshape(b, t, -1, 2 * len(inv_freq))
        y1, y2 = np.split(y, 2, axis=-1)
        return np.concatenate([y1 * cos - y2 * sin, y2 * cos + y1 * sin], -1)

    return rotated("query"), rotated("key")


def test_yarn_scales_q_and_k_each_by_its_attention_factor(monkeypatch):
    """YaRN (Peng et al. 2023, 2309.00071, Eq. 22): sqrt(1/t) = 0.1 ln s + 1 multiplies both q
    and k (so the logits scale by its square); the frequencies are the NTK-by-parts table."""
    s, big_l, base = 4.0, 8, 10000.0
    yarn = {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": big_l}
    config, params = _model(position="rope", rope_scaling=yarn)
    x = _tokens(2, 12, seed=6)
    seen = _record_attention_inputs(monkeypatch)
    GPT(config).apply(params, x)
    q_yarn, k_yarn = seen["q"][0], seen["k"][0]  # layer 0: same input in both models
    seen["q"].clear(), seen["k"].clear()
    GPT(config.replace(rope_scaling={**yarn, "attention_factor": 1.0})).apply(params, x)
    q_one, k_one = seen["q"][0], seen["k"][0]
    factor = 0.1 * np.log(s) + 1.0
    np.testing.assert_allclose(q_yarn, factor * q_one, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(k_yarn, factor * k_one, rtol=1e-5, atol=1e-7)
    logits = np.einsum("bqhd,bkhd->bhqk", q_yarn, k_yarn)
    np.testing.assert_allclose(logits, factor**2 * np.einsum("bqhd,bkhd->bhqk", q_one, k_one),
                               rtol=1e-5, atol=1e-7)
    # The unscaled q and k against a NumPy forward with YaRN's frequencies (Sec. 3.2, NTK-by-parts):
    # pair i keeps theta_i below the index where L holds beta_fast = 32 turns (floored), is divided
    # by s above the one where it holds beta_slow = 1 turn (ceiled), linear ramp in between.
    d = config.head_dim
    theta = base ** (-np.arange(0, d, 2) / d)
    turns_index = lambda turns: d * np.log(big_l / (2 * np.pi * turns)) / (2 * np.log(base))
    low, high = max(np.floor(turns_index(32.0)), 0), min(np.ceil(turns_index(1.0)), d - 1)
    ramp = np.clip((np.arange(d // 2) - low) / (high - low), 0, 1)
    inv_freq = theta * (1 - ramp) + theta / s * ramp
    assert 0 < ramp.sum() < d // 2  # both kinds of pair occur at this size
    q_np, k_np = _np_layer0_qk(params, x, inv_freq)
    np.testing.assert_allclose(q_one, q_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(k_one, k_np, rtol=1e-5, atol=1e-6)


def test_logn_scales_query_m_by_log_of_keys_seen(monkeypatch):
    """logn (GPTConfig.logn_train_len = L): query m is multiplied by max(1, log(m + 1) / log(L)),
    keys are unchanged; positions are absolute, also when decoding with a KV cache."""
    train_len = 4
    config, params = _model(position="rope")
    x = _tokens(2, 12, seed=7)
    f = lambda m: np.maximum(1.0, np.log(np.asarray(m) + 1.0) / np.log(train_len))
    assert f(2) == 1.0 and f(11) > 1.7  # positions on both sides of the training length
    seen = _record_attention_inputs(monkeypatch)
    results = {}
    for name, cfg in (("plain", config), ("logn", config.replace(logn_train_len=train_len))):
        seen["q"].clear(), seen["k"].clear()
        GPT(cfg).apply(params, x)
        full = seen["q"][0], seen["k"][0]
        seen["q"].clear(), seen["k"].clear()
        cache = gpt.init_cache(cfg, 2, 12)
        _, cache = GPT(cfg).apply(params, x[:, :5], cache=cache)  # prefill positions 0..4
        GPT(cfg).apply(params, x[:, 5:9], cache=cache)  # then positions 5..8
        n = cfg.num_layers
        results[name] = full, (seen["q"][n], seen["k"][n])  # layer 0 of the second call
    (q_plain, k_plain), (qc_plain, kc_plain) = results["plain"]
    (q_logn, k_logn), (qc_logn, kc_logn) = results["logn"]
    np.testing.assert_allclose(q_logn, f(np.arange(12))[None, :, None, None] * q_plain,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(k_logn, k_plain, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(qc_logn, f(np.arange(5, 9))[None, :, None, None] * qc_plain,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(kc_logn, kc_plain, rtol=1e-6, atol=1e-8)
    # and the recorded plain q, k are layer 0's, rotated with the default table
    d = config.head_dim
    q_np, k_np = _np_layer0_qk(params, x, 10000.0 ** (-np.arange(0, d, 2) / d))
    np.testing.assert_allclose(q_plain, q_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(k_plain, k_np, rtol=1e-5, atol=1e-6)
