"""One error path for users: every mistake a user can fix ends in one line naming the bad value
and what is allowed, with exit status 2 (jaxzoo.train.cli); a bug keeps its traceback."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

import tiny_task
from conftest import REPO, launcher_env
from jaxzoo.errors import ConfigError, UserError, WorkdirError
from jaxzoo.train import checkpoint as ckpt_lib
from jaxzoo.train import cli, loop, metrics as metrics_lib

VAE = "experiments/configs/vae.py"


def run_cli(capsys, *args, main=None):
    """(exit status, stderr) of `cli.run` on `args` in this process."""
    main = main or (lambda a: pytest.fail("the launcher ran despite a bad command line"))
    with pytest.raises(SystemExit) as e:
        cli.run(main, ["prog", *args])
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([f"--config={VAE}:cpu", "--config.total_steps=0"], "total_steps=0; allowed: an int >= 1"),
    ([f"--config={VAE}:cpu", "--config.total_steps=-5"], "total_steps=-5; allowed: an int >= 1"),
    ([f"--config={VAE}:cpu", "--config.log_every=0"], "log_every=0; allowed: an int >= 1"),
    ([f"--config={VAE}:cpu", "--config.batch_size=0"], "batch_size=0; allowed: an int >= 1"),
    ([f"--config={VAE}:cpu", "--config.keep_checkpoints=0"], "keep_checkpoints=0; allowed: an int >= 1"),
    ([f"--config={VAE}:cpu", "--config.checkpoint_every=0"], "checkpoint_every=0; allowed"),
    ([f"--config={VAE}:cpu", "--config.ema_decay=1.5"], "ema_decay=1.5; allowed: None or a float in (0, 1)"),
    ([f"--config={VAE}:gpu"], "unknown variant 'gpu'; choose one of ('cpu', 'paper')"),
    ([f"--config={VAE}:cpu", "--config.model.activation=bogus"],
     "model.activation='bogus'; allowed: 'tanh', 'relu', 'softplus', 'gelu'"),
    ([f"--config={VAE}:cpu", "--config.data.name=cifar"], "data.name='cifar'; allowed: 'digits', 'mnist'"),
    ([f"--config={VAE}:cpu", "--config.model.hidden=(256, 'a')"],
     "every element must be an int, like (200, 200); got 'a'"),
    ([f"--config={VAE}:cpu", "--config.total_steps=abc"], "expected an int like 20000"),
    (["--config=experiments/configs/esrgan.py:cpu_psnr", "--config.model.arch=unet"],
     "model.arch='unet'; allowed: 'rrdbnet', 'srresnet'"),
    (["--config=experiments/configs/ddpm.py:cpu", "--config.eval.methods=('ddim', 'plms')"],
     "eval.methods=('ddim', 'plms'); allowed:"),
    (["--config=experiments/configs/nerf.py:cpu", "--config.data.format=colmap"],
     "data.format='colmap'; allowed: 'embedded', 'blender', 'llff'"),
    ([f"--config={VAE}:cpu", "--config.optim.lrr=1"], "unknown config key 'optim.lrr'"),
    ([f"--config={VAE}:cpu"], "--config and --workdir are required"),
    (["--config=nope.py:cpu"], "config file 'nope.py' does not exist"),
])
def test_config_mistakes_are_one_line_and_exit_2(capsys, monkeypatch, args, message):
    monkeypatch.chdir(REPO)
    if not any(a.startswith("--workdir") for a in args) and "required" not in message:
        args = [*args, "--workdir=/nonexistent/never/created"]
    code, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not pathlib.Path("/nonexistent/never/created").exists()


def test_a_bug_keeps_its_traceback_and_user_errors_raised_later_exit_2(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(cli, "use_cpu_cores_as_devices", lambda batch_size: None)  # JAX may be up

    def buggy(args):
        raise KeyError("a bug")

    with pytest.raises(KeyError):  # not turned into a one-line message
        cli.run(buggy, ["prog", f"--config={VAE}:cpu", "--workdir=/tmp/x"])

    def bad_data(args):
        raise UserError("frame 3 of transforms.json: file_path\nmissing")

    code, err = run_cli(capsys, f"--config={VAE}:cpu", "--workdir=/tmp/x", main=bad_data)
    assert code == 2 and err == "error: frame 3 of transforms.json: file_path missing\n"


def test_a_launcher_process_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "experiments.vae", f"--config={VAE}:cpu",
                           f"--workdir={tmp_path / 'w'}", "--config.model.activation=bogus"],
                          cwd=REPO, env=launcher_env(1), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "error: model.activation='bogus'; allowed: 'tanh', 'relu', 'softplus', 'gelu'"]
    assert not (tmp_path / "w").exists()


# ----------------------------------------------------------------------------- workdirs


def test_resuming_with_another_model_is_refused_before_config_json_is_written(tmp_path):
    loop.train(tiny_task.config(total_steps=4), tmp_path, tiny_task.task())
    saved = (tmp_path / "config.json").read_text()
    other = tiny_task.config(total_steps=8, seed=3)
    with pytest.raises(WorkdirError, match=r"another config: seed=0 \(now 3\)"):
        loop.train(other, tmp_path, tiny_task.task())
    assert (tmp_path / "config.json").read_text() == saved
    # Training longer, logging or saving at another cadence is allowed.
    result = loop.train(tiny_task.config(total_steps=8, log_every=2, checkpoint_every=8,
                                         keep_checkpoints=2), tmp_path, tiny_task.task())
    assert result.step == 8
    assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 8


@pytest.mark.parametrize("damage", [b'{"seed": 0, "total', b"\xff\xfe\x00garbage"])
def test_a_damaged_config_json_is_a_workdir_error_when_resuming_and_restoring(tmp_path, damage):
    loop.train(tiny_task.config(total_steps=2), tmp_path, tiny_task.task())
    (tmp_path / "config.json").write_bytes(damage)
    for call in (lambda: loop.train(tiny_task.config(total_steps=4), tmp_path, tiny_task.task()),
                 lambda: loop.read_run_config(tmp_path)):
        with pytest.raises(WorkdirError, match=r"config.json is not valid JSON \(.*\); move the"):
            call()


def test_a_second_run_on_a_workdir_in_use_names_the_holder(tmp_path):
    with loop.workdir_lock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(WorkdirError, match=rf"in use by another run \(pid {os.getpid()}\)"):
            loop.train(tiny_task.config(total_steps=2), tmp_path, tiny_task.task())
    assert not (tmp_path / "checkpoints").exists()
    loop.train(tiny_task.config(total_steps=2), tmp_path, tiny_task.task())  # free again


def test_a_torn_metrics_line_does_not_break_resuming(tmp_path):
    loop.train(tiny_task.config(total_steps=4), tmp_path, tiny_task.task())
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "loss": 1.2')  # power lost mid-write
    with pytest.warns(metrics_lib.MetricsFileWarning, match="line 5"):
        loop.train(tiny_task.config(total_steps=8), tmp_path, tiny_task.task())
    rows = metrics_lib.read_metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 9))


# ----------------------------------------------------------------------------- checkpoints


def _flip_one_bit(tree, path, bit=30):
    """`tree` with bit `bit` of the first float32 of the array at key path `path` flipped."""
    def flip(p, x):
        if ckpt_lib._path_str(p) != path:
            return x
        words = np.asarray(x).view(np.uint32).copy()
        words.reshape(-1)[0] ^= np.uint32(1 << bit)
        flipped = words.view(np.float32)
        return jax.device_put(flipped, x.sharding) if isinstance(x, jax.Array) else flipped
    return jax.tree_util.tree_map_with_path(flip, tree)


def test_checksums_change_with_any_single_bit_and_ignore_sharding():
    rng = np.random.default_rng(0)
    tree = {"f32": rng.normal(size=(5, 3)).astype(np.float32), "i8": np.arange(7, dtype=np.int8),
            "b": np.array([True, False]), "bf16": jax.numpy.ones(4, jax.numpy.bfloat16)}
    base = ckpt_lib.tree_checksums(tree)
    for bit in range(32):
        flipped = _flip_one_bit(tree, "f32", bit)
        assert ckpt_lib.tree_checksums(flipped)["f32"] != base["f32"], bit
    swapped = dict(tree, i8=tree["i8"][::-1].copy())
    assert ckpt_lib.tree_checksums(swapped)["i8"] != base["i8"]
    assert ckpt_lib.tree_checksums(dict(tree, b=~tree["b"]))["b"] != base["b"]
    assert ckpt_lib.tree_checksums(tree) == base


def test_a_flipped_bit_in_a_checkpoint_falls_back_to_the_previous_step(tmp_path):
    """A step whose arrays no longer match the checksums saved with them (Adam moments turned
    into 1e38 by one flipped exponent bit) is refused, and the previous step restored."""
    loop.train(tiny_task.config(total_steps=8), tmp_path, tiny_task.task())  # steps 4, 8
    ck = ckpt_lib.Checkpointer(tmp_path / "checkpoints")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            ck.restore_latest(_abstract_state(tmp_path))[1])
    step, state, data = ck.restore_latest(abstract)
    sums = ckpt_lib.tree_checksums(state)
    bad = _flip_one_bit(state, "opt_state/0/mu/w")
    assert float(np.abs(np.asarray(bad.opt_state[0].mu["w"])).max()) > 1e30
    import orbax.checkpoint as ocp
    ck._manager.save(12, args=ocp.args.Composite(state=ocp.args.StandardSave(bad),
                                                 data=ocp.args.JsonSave(data),
                                                 checksums=ocp.args.JsonSave(sums)))
    ck.wait()
    with pytest.warns(ckpt_lib.CheckpointDamagedWarning, match="step 12.*checksum mismatch.*opt_state/0/mu/w"):
        restored_step, restored, _ = ck.restore_latest(abstract)
    ck.close()
    assert restored_step == 8
    np.testing.assert_array_equal(np.asarray(restored.opt_state[0].mu["w"]),
                                  np.asarray(state.opt_state[0].mu["w"]))


def _abstract_state(workdir):
    from jaxzoo.train.state import abstract_state_and_shardings, make_init_fn
    from jaxzoo.train import mesh as mesh_lib
    t = tiny_task.task()
    return abstract_state_and_shardings(make_init_fn(t.init_params, t.tx, ema=False),
                                        jax.random.key(0), mesh_lib.make_mesh())[0]


def test_a_damaged_newest_checkpoint_is_set_aside_and_rewritten(tmp_path):
    loop.train(tiny_task.config(total_steps=12), tmp_path, tiny_task.task())  # 4, 8, 12
    for p in (tmp_path / "checkpoints" / "12").rglob("*"):
        if p.is_file() and "/d/" in str(p):
            p.unlink()
    with pytest.warns(ckpt_lib.CheckpointDamagedWarning, match="step 12"):
        result = loop.train(tiny_task.config(total_steps=12), tmp_path, tiny_task.task())
    assert result.step == 12
    aside = list((tmp_path / "checkpoints.damaged").iterdir())
    assert [p.name.split("-")[0] for p in aside] == ["12"]
    ck = ckpt_lib.Checkpointer(tmp_path / "checkpoints")
    assert ck.all_steps() == [4, 8, 12]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", ckpt_lib.CheckpointDamagedWarning)
        assert ck.restore_latest(_abstract_state(tmp_path))[0] == 12  # rewritten: reads cleanly
    ck.close()


def test_orbax_event_loop_noise_is_dropped_and_other_unraisables_pass(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(str(u.exc_value)))
    ckpt_lib._ignore_closed_event_loop_noise()
    ckpt_lib._ignore_closed_event_loop_noise()  # idempotent: one filter
    hook = sys.unraisablehook

    class U:
        def __init__(self, e):
            self.exc_value = e

    hook(U(RuntimeError("Event loop is closed")))
    hook(U(RuntimeError("something else")))
    assert seen == ["something else"]


@pytest.mark.slow
def test_a_run_whose_checkpoints_are_all_damaged_prints_a_few_lines(tmp_path):
    """The user sees one warning per damaged step and one error line, not orbax's tracebacks."""
    args = [sys.executable, "-m", "experiments.vae", f"--config={VAE}:cpu", f"--workdir={tmp_path}",
            "--config.total_steps=6", "--config.checkpoint_every=2", "--config.log_every=2",
            "--config.eval.num_importance_samples=2", "--config.eval.max_examples=4"]
    run = lambda: subprocess.run(args, cwd=REPO, env=launcher_env(1), capture_output=True,  # noqa
                                 text=True, timeout=300)
    assert run().returncode == 0
    for p in (tmp_path / "checkpoints").rglob("*"):
        if p.is_file() and "/d/" in str(p):
            p.unlink()
    proc = run()
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert [l.split(":")[0] for l in lines] == ["warning"] * 3 + ["error"], proc.stderr
    assert "none of the checkpoints [6, 4, 2]" in lines[-1]


def test_non_finite_loss_is_a_user_error_naming_step_and_term(tmp_path):
    with pytest.raises(loop.NonFiniteLossError, match=r"non-finite value at step \d+ in .*loss") as e:
        loop.train(tiny_task.config(total_steps=12), tmp_path, tiny_task.task(nan_example=3))
    assert isinstance(e.value, UserError)
    assert isinstance(ConfigError("x"), ValueError) and isinstance(WorkdirError("x"), RuntimeError)
