"""Smoke tests of experiments/glide.py, imagen.py and dalle2.py on a small ShapeWorld: each trains,
writes the shared text-to-image metrics for every sampler setting to eval.json and its pictures;
the scoring CLIP and probe are trained once in the data directory and reused by the next
launcher; bad settings exit 2 with one line."""

import json

import pytest

from jaxzoo.data import shapeworld, tfds_utils
from conftest import T2I_TINY as TINY
from jaxzoo.diffusion.probe import CATEGORIES

SMALL = {"train": 96, "validation": 8, "test": 80, "test_compositional": 48}
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    tfds_utils.prepare(shapeworld.ShapeWorld, root, config="size_32", split_sizes=SMALL)
    return root


def _check_common(ev, settings):
    for name in settings:
        for category in ("single", "colour", "shape", "all"):
            assert 0.0 <= ev[f"caption_accuracy_{category}_{name}"] <= 1.0
        assert -1.0 <= ev[f"clip_score_{name}"] <= 1.0
        assert ev[f"fd_probe_{name}"] >= 0.0
    assert ev["best_setting"] in settings
    assert 0.0 <= ev["real_caption_accuracy_single"] <= 1.0
    assert ev["fd_probe_floor_test"] >= 0.0 and ev["fd_probe_ceiling_noise"] >= 0.0
    assert ev["num_test_captions"] == sum(ev[f"num_captions_{c}"] for c in CATEGORIES) > 0


@pytest.mark.slow
def test_glide_trains_samples_and_scores(run_launcher, data_dir, tmp_path):
    run_launcher("experiments.glide", "experiments/configs/glide.py:cpu", tmp_path, *TINY["glide"],
                 f"--config.data.data_dir={data_dir}")
    ev = json.loads((tmp_path / "eval.json").read_text())
    _check_common(ev, ["steps2_w3_static", "steps2_w0_static"])
    assert ev["step"] == 2
    assert (tmp_path / "samples.png").stat().st_size > 0 and (tmp_path / "settings.png").is_file()
    assert (data_dir / "jaxzoo_models" / "probe_16.msgpack").is_file()


@pytest.mark.slow
def test_imagen_trains_the_cascade_and_compares_thresholds(run_launcher, data_dir, tmp_path):
    run_launcher("experiments.imagen", "experiments/configs/imagen.py:cpu", tmp_path, *TINY["imagen"],
                 f"--config.data.data_dir={data_dir}")
    ev = json.loads((tmp_path / "eval.json").read_text())
    _check_common(ev, ["steps2_w5_dynamic"] + [f"steps2_w{w}_{th}" for w in ("1", "20")
                                               for th in ("static", "dynamic")])
    for suffix in ("", "_without_aug"):
        assert 0.0 <= ev[f"cascade{suffix}_caption_accuracy_single"] <= 1.0
        assert ev[f"sr_psnr{suffix}"] > 0.0 and ev[f"sr_fd_probe{suffix}"] >= 0.0
    for stage in ("base", "sr", "sr_without_aug"):
        assert (tmp_path / stage / "checkpoints").is_dir()
    assert (tmp_path / "cascade.png").is_file()


@pytest.mark.slow
def test_dalle2_trains_prior_and_decoder(run_launcher, data_dir, tmp_path):
    run_launcher("experiments.dalle2", "experiments/configs/dalle2.py:cpu", tmp_path, *TINY["dalle2"],
                 f"--config.data.data_dir={data_dir}")
    ev = json.loads((tmp_path / "eval.json").read_text())
    _check_common(ev, ["steps2_w3_static"])
    for key in ("prior_cosine", "prior_cosine_single_sample", "text_image_cosine"):
        assert -1.0 <= ev[key] <= 1.0
    assert 0.0 <= ev["oracle_caption_accuracy_single_steps2_w3_static"] <= 1.0
    for name in ("variations.png", "interpolation.png", "samples.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "prior" / "checkpoints").is_dir()


@pytest.mark.parametrize("launcher,arg,message", [
    ("glide", "--config.data.image_size=24", "data.image_size"),
    ("imagen", "--config.text_encoder=t5", "text_encoder"),
    ("dalle2", "--config.prior.num_samples=0", "prior.num_samples"),
])
def test_bad_settings_are_one_line_errors(run_launcher, tmp_path, launcher, arg, message):
    proc = run_launcher(f"experiments.{launcher}", f"experiments/configs/{launcher}.py:cpu", tmp_path,
                        arg, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
