import json
import os
import signal

import jax
import numpy as np
import pytest

import tiny_task
from jaxzoo.data.pipeline import StepIndexedLoader, global_batch_indices
from jaxzoo.errors import WorkdirError
from jaxzoo.train import checkpoint as ckpt_lib
from jaxzoo.train import loop


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_writes_config_metrics_and_checkpoints(tmp_path):
    result = loop.train(tiny_task.config(), tmp_path, tiny_task.task())
    assert result.step == 12 and not result.preempted
    assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 12
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert all({"loss", "mse", "grad_norm", "update_norm", "steps_per_s"} <= r.keys() for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert list((tmp_path / "tensorboard").iterdir())


def test_sigterm_then_resume_is_bit_identical_to_straight_run(tmp_path):
    straight = loop.train(tiny_task.config(), tmp_path / "a", tiny_task.task())

    def sigterm_at_5(step, state):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    first = loop.train(tiny_task.config(), tmp_path / "b", tiny_task.task(), hooks=[sigterm_at_5])
    assert first.preempted and first.step == 5
    assert 5 in ckpt_lib.Checkpointer(tmp_path / "b" / "checkpoints").all_steps()
    resumed = loop.train(tiny_task.config(), tmp_path / "b", tiny_task.task())
    assert resumed.step == 12 and not resumed.preempted
    for a, b in zip(_leaves(straight.state), _leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)
    rows = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))  # no duplicated steps after resume


def test_non_finite_loss_stops_naming_step_and_term_without_bad_checkpoint(tmp_path):
    # A NaN label in an example that the 5th step is the first to see (steps 1-5 are epoch 0).
    bad = int(global_batch_indices(4, 8, 40, seed=0)[0])
    with pytest.raises(loop.NonFiniteLossError, match=r"step 5 in loss, mse") as e:
        loop.train(tiny_task.config(checkpoint_every=2), tmp_path, tiny_task.task(nan_example=bad))
    assert "grad_norm" in str(e.value)
    assert ckpt_lib.Checkpointer(tmp_path / "checkpoints").all_steps() == [2, 4]


def test_loader_batches_depend_only_on_step_and_cover_each_epoch():
    a = [global_batch_indices(s, 8, 40, seed=3) for s in range(5)]
    assert sorted(np.concatenate(a)) == list(range(40))  # one epoch = a permutation
    np.testing.assert_array_equal(global_batch_indices(7, 8, 40, 3), global_batch_indices(7, 8, 40, 3))
    # Batch straddling an epoch boundary (40 is not a multiple of 12).
    b = global_batch_indices(3, 12, 40, seed=3)
    assert len(b) == 12 and len(set(b[:4])) == 4


def test_process_shards_tile_the_global_batch():
    t = tiny_task.task()
    full = t.loader.batch(3)["x"]
    from jaxzoo.data.pipeline import StepIndexedLoader
    parts = [StepIndexedLoader(t.loader.arrays, 8, 0, process_index=p, process_count=2).batch(3)["x"]
             for p in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), full)


def test_resume_with_other_batch_size_is_refused(tmp_path):
    loop.train(tiny_task.config(total_steps=4), tmp_path, tiny_task.task())
    saved = (tmp_path / "config.json").read_text()
    with pytest.raises(WorkdirError, match=r"another config: batch_size=8 \(now 4\)"):
        loop.train(tiny_task.config(total_steps=8, batch_size=4), tmp_path, tiny_task.task(batch_size=4))
    assert (tmp_path / "config.json").read_text() == saved  # the rejected config is not written


def test_resume_with_other_data_is_refused(tmp_path):
    loop.train(tiny_task.config(total_steps=4), tmp_path, tiny_task.task())
    task = tiny_task.task()
    task.loader = StepIndexedLoader({k: v[:20] for k, v in task.loader.arrays.items()}, 8, seed=0)
    with pytest.raises(WorkdirError, match="data position does not match"):
        loop.train(tiny_task.config(total_steps=8), tmp_path, task)


class _CountingSource:
    """A random-access source of example dicts that records which rows were read."""

    def __init__(self, arrays):
        self.arrays, self.read = arrays, []

    def __len__(self):
        return len(next(iter(self.arrays.values())))

    def __getitems__(self, idx):
        self.read.extend(idx)
        return [{k: v[i] for k, v in self.arrays.items()} for i in idx]


def test_source_loader_matches_arrays_and_reads_only_its_own_rows():
    arrays = tiny_task.task().loader.arrays
    from jaxzoo.data.pipeline import StepIndexedLoader
    whole = StepIndexedLoader(arrays, 8, seed=0).batch(2)
    source = _CountingSource(arrays)
    half = StepIndexedLoader(source, 8, seed=0, process_index=1, process_count=2).batch(2)
    np.testing.assert_array_equal(half["x"], whole["x"][4:])
    assert sorted(source.read) == sorted(global_batch_indices(2, 8, 40, 0)[4:])


def test_ema_params_follow_the_exponential_moving_average(tmp_path):
    decay = 0.9
    history = []
    result = loop.train(tiny_task.config(total_steps=3, ema_decay=decay), tmp_path, tiny_task.task(),
                        hooks=[lambda step, state: history.append(jax.device_get(state.params))])
    init = tiny_task.task().init_params(jax.random.split(jax.random.key(0))[0])
    expected = jax.device_get(init)
    for params in history:
        expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, expected, params)
    for e, got in zip(jax.tree.leaves(expected), jax.tree.leaves(result.state.ema_params)):
        np.testing.assert_allclose(got, e, rtol=1e-6)


def test_sigint_also_saves_and_stops(tmp_path):
    def sigint_at_3(step, state):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    result = loop.train(tiny_task.config(), tmp_path, tiny_task.task(), hooks=[sigint_at_3])
    assert result.preempted and result.step == 3
    assert 3 in ckpt_lib.Checkpointer(tmp_path / "checkpoints").all_steps()
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is restored
