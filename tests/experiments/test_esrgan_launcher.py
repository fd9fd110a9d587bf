"""The ESRGAN launcher end to end on tiny settings: psnr stage, then gan stage from it."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import read_jsonl

CONFIG = "experiments/configs/esrgan.py"
TINY = ["--config.model.num_blocks=1", "--config.model.features=8", "--config.model.growth=4",
        "--config.data.patch_size=32", "--config.batch_size=2", "--config.total_steps=2",
        "--config.log_every=1", "--config.checkpoint_every=2", "--config.eval.num_pictures=1"]


def tiny_data(root):
    """Flags for a one-image train directory and a one-image test directory (the embedded
    scikit-image set is tested in tests/data/test_sr_images.py)."""
    rng = np.random.default_rng(0)
    for split, (h, w) in (("train", (64, 72)), ("test", (42, 50))):
        (root / split).mkdir(parents=True)
        smooth = np.cumsum(np.cumsum(rng.random((h, w, 3)), 0), 1)
        img = (255 * smooth / smooth.max()).astype(np.uint8)
        Image.fromarray(img).save(root / split / f"{split}_img.png")
    return ["--config.data.source=dir", f"--config.data.train_dir={root / 'train'}",
            "--config.data.test_source=dir", f"--config.data.test_dir={root / 'test'}"]
TINY_GAN = ["--config.disc.features=(4, 4, 8, 8)", "--config.disc.dense_features=8",
            "--config.loss.percep_base_features=2", "--config.loss.percep_layer=conv2_2"]


def _check_eval(workdir):
    ev = json.loads((workdir / "eval.json").read_text())
    assert ev["test_images"] == ["test_img"] and ev["num_test_images"] == 1
    for name in ("test_psnr", "test_ssim", "bicubic_psnr", "bicubic_ssim"):
        assert len(ev[f"{name}_per_image"]) == 1
        assert ev[name] == pytest.approx(np.mean(ev[f"{name}_per_image"]))
    assert 15 < ev["bicubic_psnr"] < 60 and 0 < ev["bicubic_ssim"] <= 1
    assert np.isfinite(ev["test_psnr"]) and -1 <= ev["test_ssim"] <= 1
    with Image.open(workdir / "test_0_test_img.png") as im:
        assert im.size == (3 * 48, 40)  # bicubic | output | truth of the 40 x 48 crop
    return ev


@pytest.mark.slow
def test_psnr_then_gan_stage(run_launcher, tmp_path):
    psnr_dir, gan_dir = tmp_path / "psnr", tmp_path / "gan"
    data = tiny_data(tmp_path / "data")
    run_launcher("experiments.esrgan", f"{CONFIG}:cpu_psnr", psnr_dir, *TINY, *data)
    rows = read_jsonl(psnr_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and {"loss", "l1"} <= rows[0].keys()
    psnr_eval = _check_eval(psnr_dir)

    proc = run_launcher("experiments.esrgan", f"{CONFIG}:cpu_gan", gan_dir, *TINY, *TINY_GAN, *data,
                        f"--config.init_from={psnr_dir}")
    assert "generator initialised from" in proc.stdout and "psnr step 2" in proc.stdout
    rows = read_jsonl(gan_dir / "metrics.jsonl")
    assert {"loss", "loss_g", "loss_d", "l1", "percep", "adv_g", "d_real_logit"} <= rows[0].keys()
    for r in rows:
        assert r["loss"] == pytest.approx(r["loss_g"] + r["loss_d"], rel=1e-5)
    # The bicubic baseline does not depend on the model.
    assert _check_eval(gan_dir)["bicubic_psnr"] == pytest.approx(psnr_eval["bicubic_psnr"])


def test_gan_stage_errors_name_the_fix(run_launcher, tmp_path):
    proc = run_launcher("experiments.esrgan", f"{CONFIG}:cpu_gan", tmp_path / "a", *TINY, check=False)
    assert proc.returncode != 0 and "--config.init_from" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_launcher("experiments.esrgan", f"{CONFIG}:cpu_gan", tmp_path / "b", *TINY,
                        f"--config.init_from={tmp_path / 'nothing'}", check=False)
    assert proc.returncode != 0 and "config.json" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_launcher("experiments.esrgan", f"{CONFIG}:paper_gan", tmp_path / "c",
                        "--config.init_from=x", check=False)
    assert proc.returncode != 0 and "--config.vgg_weights" in proc.stderr


def test_directory_test_set_needs_a_path(run_launcher, tmp_path):
    proc = run_launcher("experiments.esrgan", f"{CONFIG}:cpu_psnr", tmp_path, *TINY,
                        "--config.data.test_source=dir", check=False)
    assert proc.returncode != 0 and "--config.data.test_dir" in proc.stderr
