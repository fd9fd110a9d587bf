"""The SRGAN launcher end to end on tiny settings: MSE pretraining, then the GAN stage from it."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import read_jsonl

CONFIG = "experiments/configs/srgan.py"
TINY = ["--config.model.num_blocks=1", "--config.model.features=8", "--config.data.patch_size=32",
        "--config.batch_size=2", "--config.total_steps=2", "--config.log_every=1",
        "--config.checkpoint_every=2", "--config.eval.num_pictures=1"]
TINY_GAN = ["--config.disc.features=(4, 4, 8, 8)", "--config.disc.dense_features=8",
            "--config.loss.percep_base_features=2", "--config.loss.percep_layer=conv2_2"]


def tiny_data(root):
    """Flags for one small training image and one small test image in directories."""
    rng = np.random.default_rng(1)
    for split, (h, w) in (("train", (64, 72)), ("test", (42, 50))):
        (root / split).mkdir(parents=True)
        smooth = np.cumsum(np.cumsum(rng.random((h, w, 3)), 0), 1)
        Image.fromarray((255 * smooth / smooth.max()).astype(np.uint8)).save(root / split / f"{split}_img.png")
    return ["--config.data.source=dir", f"--config.data.train_dir={root / 'train'}",
            "--config.data.test_source=dir", f"--config.data.test_dir={root / 'test'}"]


@pytest.mark.slow
def test_psnr_then_gan_stage(run_launcher, tmp_path):
    psnr_dir, gan_dir = tmp_path / "psnr", tmp_path / "gan"
    tiny = [*TINY, *tiny_data(tmp_path / "data")]
    run_launcher("experiments.srgan", f"{CONFIG}:cpu_psnr", psnr_dir, *tiny)
    assert {"loss", "mse"} <= read_jsonl(psnr_dir / "metrics.jsonl")[0].keys()
    proc = run_launcher("experiments.srgan", f"{CONFIG}:cpu_gan", gan_dir, *tiny, *TINY_GAN,
                        f"--config.init_from={psnr_dir}")
    assert "psnr step 2" in proc.stdout
    rows = read_jsonl(gan_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert {"loss_g", "loss_d", "content", "adv_g", "mse"} <= rows[0].keys()
    for d in (psnr_dir, gan_dir):
        ev = json.loads((d / "eval.json").read_text())
        assert ev["test_psnr"] == pytest.approx(np.mean(ev["test_psnr_per_image"]))
        assert 15 < ev["bicubic_psnr"] < 60 and np.isfinite(ev["test_ssim"])
        assert (d / "test_0_test_img.png").is_file()
    # A gan stage must continue the same network, from a psnr-stage run.
    proc = run_launcher("experiments.srgan", f"{CONFIG}:cpu_gan", tmp_path / "bad", *tiny, *TINY_GAN,
                        "--config.model.features=16", f"--config.init_from={psnr_dir}", check=False)
    assert proc.returncode != 0 and "differs from the psnr run's model" in proc.stderr
    proc = run_launcher("experiments.srgan", f"{CONFIG}:cpu_gan", tmp_path / "bad2", *tiny, *TINY_GAN,
                        f"--config.init_from={gan_dir}", check=False)
    assert proc.returncode != 0 and "'gan'-stage run" in proc.stderr and "Traceback" not in proc.stderr
