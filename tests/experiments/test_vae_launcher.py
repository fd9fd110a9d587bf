"""The VAE launcher end to end, run the way users run it (subprocesses) where it matters."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, free_port, launcher_env, read_jsonl

CONFIG = "experiments/configs/vae.py:cpu"
TINY_EVAL = ["--config.eval.num_importance_samples=10", "--config.eval.chunk_size=10",
             "--config.eval.max_examples=20"]


def _saved_arrays(workdir, step):
    tree = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _restore_params_as_numpy(workdir, step):
    """The saved TrainState's params as float64 NumPy (restored without a target tree)."""
    import jax

    path = workdir / "checkpoints" / str(step) / "state"
    ckptr = ocp.PyTreeCheckpointer()
    tree = ckptr.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = ckptr.restore(path, restore_args=args)
    return jax.tree.map(lambda a: np.asarray(a, np.float64), state["params"]["params"])


def _check_eval_against_numpy_estimators(ev, workdir, step, n, k, replicates=300):
    """eval.json against the estimators re-derived in float64 NumPy from the saved parameters,
    on the same n test images (Kingma & Welling 2014; Burda et al. 2016, Eq. 8 and Thm. 1).

    The launcher reports -ELBO = KL(q || p) + mean over 100 draws z ~ q of -log p(x | z), and the
    k-sample importance estimate -log (1/k sum_i p(x, z_i) / q(z_i | x)), averaged over images.
    Here `replicates` independent sets of k draws per image give both estimators' means and
    their Monte Carlo variances on these images, hence the standard errors of the launcher's
    single draws. Burda et al. Thm. 1: E[NLL_k] <= -ELBO for every image, so the reported NLL may
    exceed the reported -ELBO only by Monte Carlo noise (5 standard errors of their difference).
    """
    from experiments import vae
    from jaxzoo.train import config as config_lib

    config = config_lib.load_config(str(REPO / "experiments/configs/vae.py") + ":cpu", {})
    m = config.model
    assert (m.activation, m.likelihood, tuple(m.hidden)) == ("tanh", "bernoulli", (200, 200))
    x = vae.load_data(config)[1]["x"][:n].astype(np.float64)
    p = _restore_params_as_numpy(workdir, step)
    dense = lambda h, layer: h @ layer["kernel"] + layer["bias"]  # noqa: E731
    mlp = lambda h, net: np.tanh(dense(np.tanh(dense(h, net["Dense_0"])), net["Dense_1"]))  # noqa: E731
    h = mlp(x, p["encoder"])
    mean, logvar = dense(h, p["to_mean"]), dense(h, p["to_logvar"])
    eps = np.random.default_rng(0).standard_normal((replicates, k) + mean.shape)
    z = mean + np.exp(0.5 * logvar) * eps  # [R, k, n, Dz], z ~ q(z | x)
    logits = dense(mlp(z, p["decoder"]), p["to_output"])
    log_px = np.sum(x * logits - np.logaddexp(0.0, logits), -1)  # Bernoulli, [R, k, n]
    log_pz = -0.5 * np.sum(z**2 + np.log(2 * np.pi), -1)
    log_qz = -0.5 * np.sum(eps**2 + logvar + np.log(2 * np.pi), -1)
    log_w = log_px + log_pz - log_qz
    top = log_w.max(axis=1)
    nll = -(top + np.log(np.mean(np.exp(log_w - top[:, None]), axis=1)))  # [R, n] NLL_k draws
    kl = 0.5 * np.sum(np.exp(logvar) + mean**2 - 1.0 - logvar, -1)  # [n], analytic
    recon = -log_px.reshape(replicates * k, n)  # single-draw -log p(x | z)
    nll_ref, elbo_ref = nll.mean(), kl.mean() + recon.mean()
    # standard errors of the launcher's estimates (one NLL_k draw, 100 recon draws per image)
    se_nll = np.sqrt(nll.var(0, ddof=1).sum()) / n
    se_elbo = np.sqrt((recon.var(0, ddof=1) / 100).sum()) / n
    se_nll_ref = np.sqrt(nll.var(0, ddof=1).sum() / replicates) / n
    se_elbo_ref = np.sqrt(recon.var(0, ddof=1).sum() / recon.shape[0]) / n
    nll_k, neg_elbo = ev[f"test_nll_iwae_{k}"], ev["test_elbo"]
    assert ev["num_test_examples"] == n
    np.testing.assert_allclose(ev["test_kl"], kl.mean(), rtol=1e-5)  # exact up to float32
    assert nll_ref < elbo_ref  # Thm. 1 on the precise estimates (a sanity check of the above)
    # The bound, up to the launcher's Monte Carlo noise:
    assert nll_k <= neg_elbo + 5 * np.hypot(se_nll, se_elbo), (nll_k, neg_elbo, se_nll, se_elbo)
    # ... and each number is the estimator it names.
    assert abs(nll_k - nll_ref) <= 5 * np.hypot(se_nll, se_nll_ref), (nll_k, nll_ref, se_nll)
    assert abs(neg_elbo - elbo_ref) <= 5 * np.hypot(se_elbo, se_elbo_ref), (neg_elbo, elbo_ref)


def test_smoke_writes_every_artifact_and_resumes(run_launcher, tmp_path):
    args = ["--config.total_steps=20", "--config.log_every=5", "--config.checkpoint_every=10", *TINY_EVAL]
    run_launcher("experiments.vae", CONFIG, tmp_path, *args)
    assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 20
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [5, 10, 15, 20] and all("loss" in r for r in rows)
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["test_elbo"] > 0 and ev["test_nll_iwae_10"] > 0
    _check_eval_against_numpy_estimators(ev, tmp_path, step=20, n=20, k=10)
    for name in ("samples.png", "reconstructions.png"):
        assert (tmp_path / name).stat().st_size > 100
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [10, 20]
    proc = run_launcher("experiments.vae", CONFIG, tmp_path, *args[1:], "--config.total_steps=30")
    assert "resuming at step 20" in proc.stdout
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [5, 10, 15, 20, 25, 30]


def test_unknown_key_and_indivisible_batch_are_clear_errors(run_launcher, tmp_path):
    proc = run_launcher("experiments.vae", CONFIG, tmp_path, "--config.optim.learning_rate=1", check=False)
    assert proc.returncode != 0
    assert "unknown config key 'optim.learning_rate'" in proc.stderr and "optim.lr" in proc.stderr
    proc = run_launcher("experiments.vae", CONFIG, tmp_path / "b", "--config.batch_size=100",
                        num_devices=8, check=False)
    assert proc.returncode != 0
    assert "batch_size=100 must be a positive multiple of the device count 8" in proc.stderr
    assert not (tmp_path / "b" / "checkpoints").exists() or not any((tmp_path / "b" / "checkpoints").iterdir())


def test_sigterm_then_resume_gives_bit_identical_parameters(tmp_path):
    """40 steps straight vs 20 steps, SIGTERM, resume to 40 (in process, signal sent at step 20)."""
    from experiments import vae
    from jaxzoo.train import config as config_lib

    config = config_lib.load_config(str(REPO / "experiments/configs/vae.py") + ":cpu",
                                    {"total_steps": "40", "checkpoint_every": "15",
                                     "eval.num_importance_samples": "10", "eval.chunk_size": "10",
                                     "eval.max_examples": "20"})

    def sigterm_at_20(step, state):
        if step == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    straight = vae.train_and_evaluate(config, tmp_path / "straight")
    assert vae.train_and_evaluate(config, tmp_path / "resumed", hooks=[sigterm_at_20]) is None
    assert (tmp_path / "resumed" / "checkpoints" / "20").is_dir()
    resumed = vae.train_and_evaluate(config, tmp_path / "resumed")
    for a, b in zip(_saved_arrays(tmp_path / "straight", 40), _saved_arrays(tmp_path / "resumed", 40)):
        np.testing.assert_array_equal(a, b)
    assert straight == resumed


@pytest.mark.slow
def test_sigterm_to_the_process_saves_and_exits_zero(tmp_path):
    cmd = [sys.executable, "-m", "experiments.vae", f"--config={CONFIG}", f"--workdir={tmp_path}",
           "--config.total_steps=1000000", "--config.log_every=10", *TINY_EVAL]
    proc = subprocess.Popen(cmd, cwd=REPO, env=launcher_env(1), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 240
    while not (metrics.exists() and metrics.read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and f"saved step {saved[0]}" in out
    assert not (tmp_path / "eval.json").exists()


def _losses(workdir):
    return np.array([r["loss"] for r in read_jsonl(workdir / "metrics.jsonl")])


TEN_STEPS = ["--config.total_steps=10", "--config.log_every=1", "--config.batch_size=96",
             "--config.checkpoint_every=5", *TINY_EVAL]


@pytest.mark.slow
def test_eight_devices_with_fsdp_match_one_device_and_restore_onto_one(run_launcher, tmp_path):
    # 256-wide layers are large enough for the FSDP rule to shard them (and their Adam moments).
    # (constant lr: the cosine schedule depends on total_steps, which differs between the runs)
    wide = ["--config.model.hidden=(256, 256)", "--config.fsdp=true", "--config.optim.schedule=constant"]
    run_launcher("experiments.vae", CONFIG, tmp_path / "one", *TEN_STEPS, *wide,
                 "--config.total_steps=15", num_devices=1)
    proc = run_launcher("experiments.vae", CONFIG, tmp_path / "eight", *TEN_STEPS, *wide, num_devices=8)
    assert "on 8 device(s), 6 state arrays sharded" in proc.stdout
    one, eight = _losses(tmp_path / "one"), _losses(tmp_path / "eight")
    assert len(one) == 15 and len(eight) == 10
    np.testing.assert_allclose(eight, one[:10], rtol=1e-5)
    # The checkpoint saved on 8 devices (FSDP-sharded) restores onto 1 device and continues.
    proc = run_launcher("experiments.vae", CONFIG, tmp_path / "eight", *TEN_STEPS, *wide,
                        "--config.total_steps=15", num_devices=1)
    assert "resuming at step 10" in proc.stdout
    np.testing.assert_allclose(_losses(tmp_path / "eight"), one, rtol=1e-5)


@pytest.mark.slow
def test_two_processes_give_the_same_losses_as_one(run_launcher, tmp_path):
    run_launcher("experiments.vae", CONFIG, tmp_path / "single", *TEN_STEPS)
    port = free_port()
    cmd = [sys.executable, "-m", "experiments.vae", f"--config={CONFIG}",
           f"--workdir={tmp_path / 'multi'}", *TEN_STEPS]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=launcher_env(1, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                               JAX_NUM_PROCESSES=2, JAX_PROCESS_ID=i))
             for i in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    assert "on 2 device(s)" in outs[0][0]
    np.testing.assert_allclose(_losses(tmp_path / "multi"), _losses(tmp_path / "single"), rtol=1e-5)


def test_paper_variant_without_mnist_says_how_to_prepare_it(tmp_path):
    from experiments import vae
    from jaxzoo.train import config as config_lib

    config = config_lib.load_config(str(REPO / "experiments/configs/vae.py") + ":paper",
                                    {"data.data_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="tfds build mnist --file_format=array_record"):
        vae.load_data(config)
