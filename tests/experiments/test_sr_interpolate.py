"""Network interpolation end to end: tiny ESRGAN psnr and gan runs, then experiments.sr_interpolate.
alpha = 0 and alpha = 1 must reproduce the two runs' own evaluations exactly (Eq. 4 endpoints)."""

import json

import numpy as np
import pytest
from PIL import Image

from experiments import sr_interpolate
from jaxzoo.train import config as config_lib
from test_esrgan_launcher import CONFIG, TINY, TINY_GAN, tiny_data

ALPHAS = (0.0, 0.5, 1.0)


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.slow
def test_endpoints_reproduce_each_stage(run_launcher, tmp_path):
    psnr_dir, gan_dir, out = tmp_path / "psnr", tmp_path / "gan", tmp_path / "interp"
    data = tiny_data(tmp_path / "data")
    run_launcher("experiments.esrgan", f"{CONFIG}:cpu_psnr", psnr_dir, *TINY, *data)
    run_launcher("experiments.esrgan", f"{CONFIG}:cpu_gan", gan_dir, *TINY, *TINY_GAN, *data,
                 f"--config.init_from={psnr_dir}")
    proc = run_launcher("experiments.sr_interpolate", f"{CONFIG}:cpu_gan", out, *TINY, *TINY_GAN, *data,
                        f"--psnr_workdir={psnr_dir}", f"--gan_workdir={gan_dir}", "--alphas=0,0.5,1")
    assert proc.stdout.count("alpha ") == 3

    res = json.loads((out / "interpolation.json").read_text())
    assert res["alphas"] == list(ALPHAS) and [r["alpha"] for r in res["results"]] == list(ALPHAS)
    assert res["psnr_step"] == res["gan_step"] == 2
    for r, run in ((res["results"][0], psnr_dir), (res["results"][-1], gan_dir)):
        ev = json.loads((run / "eval.json").read_text())
        for key in ("test_psnr", "test_ssim", "test_psnr_per_image", "test_ssim_per_image"):
            assert r[key] == pytest.approx(ev[key], rel=1e-9, abs=1e-12), (run.name, key)
        assert res["bicubic_psnr"] == pytest.approx(ev["bicubic_psnr"])
    # The two tiny stages differ, so the endpoints must too (else the test would prove nothing).
    assert res["results"][0]["test_psnr"] != res["results"][-1]["test_psnr"]

    # Strip of 40 x 40 centre crops of the 40 x 48 test image: bicubic | alphas | truth. Its
    # alpha-0 / alpha-1 panels are the psnr / gan triptychs' outputs (bicubic | output | truth).
    strip = _png(out / "interp_0_test_img.png")
    assert strip.shape == (40, 40 * (len(ALPHAS) + 2), 3)
    panels = [strip[:, 40 * i:40 * (i + 1)] for i in range(len(ALPHAS) + 2)]
    for run, panel in ((psnr_dir, panels[1]), (gan_dir, panels[-2])):
        trip = _png(run / "test_0_test_img.png")
        np.testing.assert_array_equal(panel, trip[:, 48 + 4:48 + 44], err_msg=run.name)
        np.testing.assert_array_equal(panels[0], trip[:, 4:44])
        np.testing.assert_array_equal(panels[-1], trip[:, 96 + 4:96 + 44])
    assert (out / "psnr_vs_alpha.png").stat().st_size > 0

    # Errors name the problem: a gan run given as the psnr run, a workdir without checkpoints.
    config = config_lib.load_config(f"{CONFIG}:cpu_gan",
                                    dict(a[len("--config."):].split("=", 1) for a in TINY + TINY_GAN + data))
    with pytest.raises(config_lib.ConfigError, match="psnr_workdir=.*'gan'-stage run"):
        sr_interpolate.interpolate(config, gan_dir, gan_dir, ALPHAS, out)
    empty = tmp_path / "no_checkpoint"
    empty.mkdir()
    (empty / "config.json").write_text((psnr_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        sr_interpolate.interpolate(config, empty, gan_dir, ALPHAS, out)
    with pytest.raises(FileNotFoundError, match="gan_workdir=.*config.json does not exist"):
        sr_interpolate.interpolate(config, psnr_dir, tmp_path / "nothing", ALPHAS, out)


def test_alphas_outside_unit_interval_are_refused(run_launcher, tmp_path):
    assert sr_interpolate.parse_alphas("0, 0.25,1") == (0.0, 0.25, 1.0)
    with pytest.raises(config_lib.ConfigError, match=r"\[1.5\] outside \[0, 1\]"):
        sr_interpolate.parse_alphas("0,1.5")
    with pytest.raises(config_lib.ConfigError, match="expected numbers"):
        sr_interpolate.parse_alphas("0,half")
    with pytest.raises(config_lib.ConfigError, match="outside"):
        sr_interpolate.check_alphas([-0.1])
    proc = run_launcher("experiments.sr_interpolate", f"{CONFIG}:cpu_gan", tmp_path / "out",
                        f"--psnr_workdir={tmp_path}", f"--gan_workdir={tmp_path}", "--alphas=0,2", check=False)
    assert proc.returncode == 2 and "[2.0] outside [0, 1]" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_launcher("experiments.sr_interpolate", "experiments/configs/vae.py:cpu", tmp_path / "out",
                        f"--psnr_workdir={tmp_path}", f"--gan_workdir={tmp_path}", check=False)
    assert proc.returncode == 2 and "must be a super-resolution config" in proc.stderr
