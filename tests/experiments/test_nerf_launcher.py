"""The NeRF launcher end to end on tiny settings (subprocesses, as users run it)."""

import json

import numpy as np
import pytest
from PIL import Image

from conftest import read_jsonl

CONFIG = "experiments/configs/nerf.py:cpu"
TINY = ["--config.data.image_size=16", "--config.model.depth=2", "--config.model.width=16",
        "--config.model.skips=(1,)", "--config.model.num_coarse=8", "--config.model.num_fine=8",
        "--config.batch_size=64", "--config.total_steps=6", "--config.log_every=3",
        "--config.checkpoint_every=3", "--config.eval.max_views=2", "--config.eval.chunk=100",
        "--config.video.num_frames=3"]


def test_smoke_train_eval_and_video(run_launcher, tmp_path):
    run_launcher("experiments.nerf", CONFIG, tmp_path, *TINY)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [3, 6]
    assert {"loss", "mse_coarse", "mse_fine", "psnr"} <= read_jsonl(tmp_path / "metrics.jsonl")[0].keys()
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert len(ev["test_psnr_per_view"]) == len(ev["test_ssim_per_view"]) == 2
    assert ev["test_psnr"] == pytest.approx(np.mean(ev["test_psnr_per_view"]))
    assert 0 < ev["test_psnr"] < 60 and -1 <= ev["test_ssim"] <= 1
    with Image.open(tmp_path / "test_view_0.png") as im:
        assert im.size == (2 * 3 * 16, 2 * 16)  # truth | render | depth, upscaled x2
    proc = run_launcher("experiments.nerf", CONFIG, tmp_path, *TINY, "--render_video")
    assert "wrote" in proc.stdout and "step 6" in proc.stdout
    with Image.open(tmp_path / "video.gif") as gif:
        assert gif.n_frames == 3 and gif.size == (2 * 2 * 16, 2 * 16)


def test_video_without_checkpoint_is_a_clear_error(run_launcher, tmp_path):
    proc = run_launcher("experiments.nerf", CONFIG, tmp_path, *TINY, "--render_video", check=False)
    assert proc.returncode != 0
    assert "no checkpoint in" in proc.stderr and "train first" in proc.stderr
    assert "Traceback" not in proc.stderr


def _write_llff(root, n=9, w=24, h=16):
    """A tiny forward-facing scene: cameras on a small grid looking down -z at a coloured wall."""
    rng = np.random.default_rng(0)
    root.mkdir()
    (root / "images").mkdir()
    rows = []
    for k in range(n):
        # LLFF stores rotation columns as [down, right, back]; identity [right, up, back] -> that.
        down, right, back = np.array([0, -1, 0]), np.array([1, 0, 0]), np.array([0, 0, 1])
        t = np.array([0.1 * (k % 3), 0.1 * (k // 3), 0.0])
        mat = np.stack([down, right, back, t, [h * 4, w * 4, 40.0]], 1)
        rows.append(np.concatenate([mat.reshape(-1), [2.0, 8.0]]))
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(root / "images" / f"{k:03d}.png")
    np.save(root / "poses_bounds.npy", np.array(rows))


def test_llff_scene_trains_with_ndc_rays(run_launcher, tmp_path):
    _write_llff(tmp_path / "scene")
    run_launcher("experiments.nerf", CONFIG, tmp_path / "run", *TINY, "--config.data.format=llff",
                 f"--config.data.root={tmp_path / 'scene'}", "--config.data.llff_factor=0")
    ev = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert ev["num_test_views"] == 2  # images 0 and 8 are held out (every 8th)
    assert np.isfinite(ev["test_psnr"])


def test_bad_data_settings_name_the_fix(run_launcher, tmp_path):
    proc = run_launcher("experiments.nerf", CONFIG, tmp_path, *TINY, "--config.data.format=blender",
                        check=False)
    assert proc.returncode != 0 and "--config.data.root" in proc.stderr
