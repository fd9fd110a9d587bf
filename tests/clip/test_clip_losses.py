"""CLIP / SigLIP losses against brute-force loops, the same loss on 1 and 8 devices, retrieval
and zero-shot helpers on hand-made matrices."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, launcher_env
from jaxzoo.clip import losses

RNG = np.random.default_rng(0)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _pairs(b=6, e=5):
    return _unit(RNG.normal(size=(b, e))), _unit(RNG.normal(size=(b, e)))


def _softmax_loop(image, text, t):
    b, total = len(image), 0.0
    for i in range(b):  # image i over every text, and text i over every image
        li = [t * image[i] @ text[j] for j in range(b)]
        lt = [t * text[i] @ image[j] for j in range(b)]
        total += -li[i] + np.log(np.sum(np.exp(li))) - lt[i] + np.log(np.sum(np.exp(lt)))
    return total / (2 * b)


def _sigmoid_loop(image, text, t, bias):
    b, total = len(image), 0.0
    for i in range(b):
        for j in range(b):
            z = 1.0 if i == j else -1.0
            total += -np.log(1.0 / (1.0 + np.exp(-z * (t * image[i] @ text[j] + bias))))
    return total / b


def test_softmax_loss_equals_a_double_loop():
    image, text = _pairs()
    with jax.enable_x64(True):
        got = losses.softmax_loss(jnp.asarray(image), jnp.asarray(text), 14.3)
    np.testing.assert_allclose(got, _softmax_loop(image, text, 14.3), rtol=1e-10)


def test_sigmoid_loss_equals_a_double_loop():
    image, text = _pairs()
    with jax.enable_x64(True):
        got = losses.sigmoid_loss(jnp.asarray(image), jnp.asarray(text), 10.0, -10.0)
    np.testing.assert_allclose(got, _sigmoid_loop(image, text, 10.0, -10.0), rtol=1e-10)


def test_losses_finite_with_gradients_at_extreme_temperatures():
    image, text = (jnp.asarray(a, jnp.float32) for a in _pairs())
    for t in (1e-3, 1e4):
        for fn in (lambda i, x: losses.softmax_loss(i, x, t),
                   lambda i, x: losses.sigmoid_loss(i, x, t, -10.0)):
            value, grads = jax.value_and_grad(fn, argnums=(0, 1))(image, text)
            assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)


def test_perfectly_aligned_pairs_have_low_loss_and_shuffled_ones_high():
    image = _unit(RNG.normal(size=(8, 16)))
    aligned = float(losses.softmax_loss(image, image, 100.0))
    shuffled = float(losses.softmax_loss(image, image[::-1], 100.0))
    assert aligned < 1e-3 < np.log(8) < shuffled


def test_the_loss_on_8_devices_is_the_single_device_loss_on_the_global_batch(tmp_path):
    """jit over a sharded batch, and shard_map with all_gather (axis_name), both equal the
    unsharded loss and gradients; shard_map without the gather (local negatives) does not."""
    script = textwrap.dedent('''
        import json, numpy as np, jax, jax.numpy as jnp
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        from jaxzoo.clip import losses
        assert jax.device_count() == 8
        rng = np.random.default_rng(1)
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
        image, text = (jnp.asarray(unit(rng.normal(size=(16, 4))), jnp.float32) for _ in range(2))
        mesh = Mesh(np.array(jax.devices()), ("data",))
        row = NamedSharding(mesh, P("data"))
        out = {}
        for name, fn in (("softmax", lambda i, t: losses.softmax_loss(i, t, 7.0)),
                         ("sigmoid", lambda i, t: losses.sigmoid_loss(i, t, 7.0, -3.0))):
            ref, ref_g = jax.value_and_grad(fn, argnums=(0, 1))(image, text)
            jit_v, jit_g = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(
                jax.device_put(image, row), jax.device_put(text, row))
            def sharded(axis_name):
                kw = dict(axis_name=axis_name)
                f = (lambda i, t: losses.softmax_loss(i, t, 7.0, **kw)) if name == "softmax" else \\
                    (lambda i, t: losses.sigmoid_loss(i, t, 7.0, -3.0, **kw))
                return jax.jit(jax.shard_map(jax.value_and_grad(f, argnums=(0, 1)), mesh=mesh,
                               in_specs=(P("data"), P("data")), out_specs=(P(), (P("data"), P("data"))),
                               check_vma=axis_name is not None))  # the local loss is per device
            sm_v, sm_g = sharded("data")(image, text)
            local_v, _ = sharded(None)(image, text)
            err = lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            # A local loss is per device (different values): shard_map returns device 0's.
            out[name] = dict(ref=float(ref), jit=err(jit_v, ref), shard_map=err(sm_v, ref),
                             jit_grad=max(err(a, b) for a, b in zip(jit_g, ref_g)),
                             shard_map_grad=max(err(a, b) for a, b in zip(sm_g, ref_g)),
                             local=float(np.asarray(local_v).reshape(-1)[0]))
        print(json.dumps(out))
    ''')
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=launcher_env(8),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, r in out.items():
        assert r["jit"] < 1e-5 and r["shard_map"] < 1e-5, (name, r)
        assert r["jit_grad"] < 1e-6 and r["shard_map_grad"] < 1e-6, (name, r)
        assert abs(r["local"] - r["ref"]) > 1e-2, (name, r)  # 2 negatives instead of 16 differ


def test_recall_at_k_on_hand_made_matrices():
    sim = np.array([[0.9, 0.1, 0.2],    # query 0: positive 0 ranked 1st
                    [0.8, 0.3, 0.7],    # query 1: positive 1 ranked 3rd
                    [0.5, 0.6, 0.55]])  # query 2: positive 2 ranked 2nd
    pos = np.eye(3, dtype=bool)
    assert losses.recall_at_k(sim, pos, ks=(1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}
    # Several positives (an image's captions): the best-ranked one counts.
    pos2 = pos.copy()
    pos2[1, 0] = True
    assert losses.recall_at_k(sim, pos2, ks=(1,)) == {1: 2 / 3}
    # Ties go to the lower index: query 0 ties candidates 0 and 1, positive at 1 -> rank 2.
    assert losses.recall_at_k(np.ones((1, 2)), np.array([[False, True]]), ks=(1, 2)) == {1: 0.0, 2: 1.0}
    with pytest.raises(ValueError, match="at least one positive"):
        losses.recall_at_k(sim, np.zeros((3, 3), bool))


def test_prompt_ensembling_and_zero_shot():
    e = _unit(RNG.normal(size=(3, 4, 8)))  # 3 classes x 4 prompts
    classes = np.asarray(losses.class_embeddings(jnp.asarray(e)))
    want = _unit(e.mean(1))
    np.testing.assert_allclose(classes, want, rtol=1e-6)
    logits = np.asarray(losses.zero_shot_logits(jnp.asarray(want[[2, 0]]), jnp.asarray(classes)))
    assert list(logits.argmax(1)) == [2, 0] and logits.shape == (2, 3)
