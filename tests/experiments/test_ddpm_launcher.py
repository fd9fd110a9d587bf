"""The DDPM launcher end to end on a tiny U-Net and a tiny evaluation (subprocesses, as users run it)."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, read_jsonl

CONFIG = "experiments/configs/ddpm.py:cpu"
TINY = ["--config.model.channels=8", "--config.model.num_groups=4", "--config.batch_size=8",
        "--config.log_every=2", "--config.checkpoint_every=2", "--config.optim.warmup_steps=2",
        "--config.eval.num_samples=11", "--config.eval.num_steps=(2,)", "--config.eval.grid_size=8",
        "--config.fd.steps=4", "--config.fd.widths=(4,)", "--config.fd.feature_dim=4"]


def test_smoke_train_sample_and_score(run_launcher, tmp_path):
    # Two devices: data-parallel training, and sampling split over the devices (11 samples: padded).
    proc = run_launcher("experiments.ddpm", CONFIG, tmp_path, *TINY, "--config.total_steps=4",
                        num_devices=2)
    assert "on 2 device(s)" in proc.stdout
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["loss"]) for r in rows)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["step"] == 4 and ev["num_fd_samples"] == 11 and "not Inception" in ev["fd_features"]
    for name in ("ddim_2", "dpmpp_2m_2", "floor_test", "ceiling_noise"):
        assert np.isfinite(ev[f"fd_small_cnn_{name}"]) and ev[f"fd_small_cnn_{name}"] >= -1e-9, name
    assert 0.0 <= ev["fd_classifier_test_accuracy"] <= 1.0 and ev["nn_train_distance_ratio"] > 0
    with Image.open(tmp_path / "samples.png") as im:  # 8 samples, 8 per row, 16x16, pad 1, x4
        assert im.size == (4 * (8 * 17 + 1), 4 * (17 + 1))
    with Image.open(tmp_path / "samplers.png") as im:  # one row per sampler setting
        assert im.size[1] == 4 * (2 * 17 + 1)
    assert (tmp_path / "fd_classifier.msgpack").stat().st_size > 100


def test_fd_classifier_is_cached_per_workdir_and_retrained_when_its_settings_change(tmp_path):
    from experiments import ddpm
    from jaxzoo.train import config as config_lib

    config = config_lib.load_config(str(REPO / "experiments/configs/ddpm.py") + ":cpu",
                                    {"fd.steps": "2", "fd.widths": "(4,)", "fd.feature_dim": "4"})
    rng = np.random.default_rng(0)
    split = lambda n: {"image": rng.uniform(-1, 1, (n, 8, 8, 1)).astype(np.float32),
                       "label": rng.integers(0, 3, n)}
    data = ddpm.Data(split(20), split(10), 3)
    _, params, acc, _ = ddpm.fd_classifier(config, data, tmp_path)
    path = tmp_path / "fd_classifier.msgpack"
    stamp = path.stat().st_mtime_ns
    _, again, acc_again, _ = ddpm.fd_classifier(config, data, tmp_path)
    assert path.stat().st_mtime_ns == stamp and acc_again == acc  # read back, not retrained
    for a, b in zip(jax_leaves(params), jax_leaves(again)):
        np.testing.assert_array_equal(a, b)
    config_lib.apply_overrides(config, {"fd.seed": "1"})
    _, other, _, _ = ddpm.fd_classifier(config, data, tmp_path)
    assert path.stat().st_mtime_ns != stamp
    assert any(not np.array_equal(a, b) for a, b in zip(jax_leaves(params), jax_leaves(other)))


def jax_leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_paper_variant_without_cifar10_says_how_to_prepare_it(tmp_path):
    from experiments import ddpm
    from jaxzoo.train import config as config_lib

    config = config_lib.load_config(str(REPO / "experiments/configs/ddpm.py") + ":paper",
                                    {"data.data_dir": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="tfds build cifar10 --file_format=array_record"):
        ddpm.load_data(config)


def test_loss_targets_match_each_prediction_space():
    """The loss is DDPM's L_simple in eps space, and the x0 / v variants regress onto the
    converted targets: a perfect model of each space gets zero loss."""
    import jax

    from experiments import ddpm
    from jaxzoo.diffusion import gaussian as diffusion
    from jaxzoo.train import config as config_lib

    x0 = jax.random.uniform(jax.random.key(0), (4, 16, 16, 1), minval=-1, maxval=1)
    key = jax.random.key(3)
    for prediction in ("eps", "x0", "v"):
        config = config_lib.load_config(str(REPO / "experiments/configs/ddpm.py") + ":cpu",
                                        {"diffusion.prediction": prediction})
        schedule = ddpm.make_schedule(config)
        # Recompute the loss's own draws (same key split) to build the perfect prediction.
        key_t, key_eps, _, _ = jax.random.split(key, 4)
        t = jax.random.randint(key_t, (4,), 0, 1000)
        eps = jax.random.normal(key_eps, x0.shape)
        x_t = diffusion.q_sample(schedule, x0, t, eps)
        perfect = diffusion.convert_prediction(eps, x_t, t, schedule, "eps", prediction)

        class Oracle:
            def apply(self, params, x, t, **kwargs):
                return perfect + params

        loss_fn = ddpm.make_loss_fn(config, Oracle(), schedule)
        assert float(loss_fn(0.0, {"image": x0}, key)[0]) < 1e-8, prediction
        assert float(loss_fn(0.1, {"image": x0}, key)[0]) == pytest.approx(0.01, rel=1e-4)
