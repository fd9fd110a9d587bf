import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_task
from jaxzoo.train import checkpoint as ckpt_lib
from jaxzoo.train import loop
from jaxzoo.train.state import abstract_state_and_shardings, make_init_fn
from jaxzoo.train import mesh as mesh_lib


def _abstract(width=3):
    t = tiny_task.task(width=width)
    init_fn = make_init_fn(t.init_params, t.tx, ema=False)
    return abstract_state_and_shardings(init_fn, jax.random.key(0), mesh_lib.make_mesh())[0]


@pytest.fixture
def trained(tmp_path):
    loop.train(tiny_task.config(), tmp_path, tiny_task.task())  # checkpoints at 4, 8, 12
    return tmp_path


def test_restore_round_trip_gives_saved_state_and_data_position(trained):
    ck = ckpt_lib.Checkpointer(trained / "checkpoints")
    assert ck.all_steps() == [4, 8, 12]
    step, state, data = ck.restore_latest(_abstract())
    assert step == 12 and int(state.step) == 12
    assert data["next_step"] == 12 and data["batch_size"] == 8


def test_strict_restore_lists_missing_unexpected_and_misshaped_keys(trained):
    abstract = _abstract(width=5)  # w has another shape
    params = dict(abstract.params, extra=jax.ShapeDtypeStruct((2,), jnp.float32))
    del params["b"]
    with pytest.raises(ckpt_lib.CheckpointMismatchError) as e:
        ckpt_lib.Checkpointer(trained / "checkpoints").restore_latest(abstract.replace(params=params))
    msg = str(e.value)
    assert "missing keys (1): params/extra" in msg
    assert "unexpected keys (1): params/b" in msg
    assert "params/w: checkpoint (3,) vs expected (5,)" in msg


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_damaged_latest_checkpoint_falls_back_to_previous_step(trained, damage):
    step_dir = trained / "checkpoints" / "12"
    files = [p for p in step_dir.rglob("*") if p.is_file()]
    if damage == "truncate":  # every file cut to half: data and metadata alike
        for p in files:
            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    else:  # the array data files are gone
        for p in files:
            if "/d/" in str(p):
                p.unlink()
    with pytest.warns(ckpt_lib.CheckpointDamagedWarning, match="step 12"):
        step, state, _ = ckpt_lib.Checkpointer(trained / "checkpoints").restore_latest(_abstract())
    assert step == 8 and int(state.step) == 8


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(trained):
    for p in (trained / "checkpoints").rglob("*"):
        if p.is_file() and "/d/" in str(p):
            p.unlink()
    with pytest.warns(ckpt_lib.CheckpointDamagedWarning):
        with pytest.raises(RuntimeError, match="none of the checkpoints"):
            ckpt_lib.Checkpointer(trained / "checkpoints").restore_latest(_abstract())


def test_tree_mismatch_is_none_for_equal_trees():
    a = {"x": np.zeros((2, 3)), "y": {"z": np.zeros(4)}}
    assert ckpt_lib.tree_mismatch(a, a) is None


def test_mid_run_checkpoint_holds_that_steps_state_despite_donation(tmp_path):
    """Saving is asynchronous and the next step donates the state's buffers: the checkpoint at
    step 8 of a 12-step run must equal the final state of a run that stopped at 8."""
    loop.train(tiny_task.config(), tmp_path / "long", tiny_task.task())
    stopped = loop.train(tiny_task.config(total_steps=8), tmp_path / "short", tiny_task.task())
    import shutil
    shutil.rmtree(tmp_path / "long" / "checkpoints" / "12")
    step, state, _ = ckpt_lib.Checkpointer(tmp_path / "long" / "checkpoints").restore_latest(_abstract())
    assert step == 8
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(stopped.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
