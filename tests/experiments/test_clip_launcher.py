"""Smoke test of experiments/clip.py on a small ShapeWorld: both losses train, eval.json holds
zero-shot and retrieval figures in range, pictures are written, bad settings exit 2."""

import json

import pytest

from jaxzoo.data import shapeworld, tfds_utils

CONFIG = "experiments/configs/clip.py"
SMALL = {"train": 64, "validation": 8, "test": 48, "test_compositional": 32}
TINY = ["--config.total_steps=4", "--config.batch_size=16", "--config.log_every=2",
        "--config.checkpoint_every=2", "--config.optim.warmup_steps=1", "--config.model.cnn_widths=(4,8)",
        "--config.model.text_width=16", "--config.model.text_depth=1", "--config.model.text_heads=2",
        "--config.model.embed_dim=8",
        "--config.eval.num_retrieval=20", "--config.eval.num_pictures=4", "--config.eval.batch_size=16",
        "--config.adapt.fine_tune_steps=2", "--config.adapt.prompt_steps=2", "--config.adapt.batch_size=8",
        "--config.adapt.probe_cs=(1.0,)"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    tfds_utils.prepare(shapeworld.ShapeWorld, root, config="size_32", split_sizes=SMALL)
    return root


@pytest.mark.slow
def test_both_losses_train_and_evaluate(run_launcher, data_dir, tmp_path):
    args = [*TINY, f"--config.data.data_dir={data_dir}"]
    run_launcher("experiments.clip", f"{CONFIG}:cpu", tmp_path, *args)
    ev = json.loads((tmp_path / "eval.json").read_text())
    for loss in ("softmax", "sigmoid"):
        for key in ("zero_shot_seen", "zero_shot_compositional", "image_to_text_r@1",
                    "text_to_image_r@10"):
            assert 0.0 <= ev[f"{loss}_{key}"] <= 1.0, key
        assert ev[f"{loss}_image_to_text_r@1"] <= ev[f"{loss}_image_to_text_r@10"]
        assert (tmp_path / f"similarity_{loss}.png").stat().st_size > 0
        assert (tmp_path / f"zero_shot_{loss}.png").stat().st_size > 0
        assert (tmp_path / loss / "checkpoints").is_dir()
    # The adaptation study ran on the softmax model only: accuracies and trained-parameter counts.
    for method in ("zero_shot", "fine_tune", "linear_probe", "visual_prompt"):
        assert 0.0 <= ev[f"adapt_{method}_accuracy"] <= 1.0, method
    assert ev["adapt_visual_prompt_params"] == 2 * 4 * 32 * 3 + 2 * 4 * 24 * 3  # pad 4 of 32
    assert ev["adapt_linear_probe_params"] == 10 * 8 + 10  # 10 digits x embed_dim 8, + biases
    assert ev["adapt_fine_tune_params"] > ev["adapt_linear_probe_params"]
    assert ev["num_retrieval"] == 20 and ev["step"] == 4
    assert ev["num_zero_shot_compositional"] > 0
    assert ev["softmax_temperature"] == pytest.approx(1 / 0.07, rel=0.05)  # barely trained
    # Running again resumes both finished runs (no training) and rewrites the same evaluation.
    proc = run_launcher("experiments.clip", f"{CONFIG}:cpu", tmp_path, *args)
    assert proc.stdout.count("resuming at step 4") == 2
    again = json.loads((tmp_path / "eval.json").read_text())
    assert again == ev


def test_bad_settings_are_one_line_errors(run_launcher, tmp_path):
    proc = run_launcher("experiments.clip", f"{CONFIG}:cpu", tmp_path, "--config.losses=('softmax', 'hinge')",
                        check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: losses=('softmax', 'hinge'); allowed: 'softmax', 'sigmoid'"]
    proc = run_launcher("experiments.clip", f"{CONFIG}:cpu", tmp_path,
                        "--config.model.cnn_widths=(4,8,16,32,64,128)", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: data.image_size=32 is not a multiple of 2^6 (the max-pooled stages of "
        "model.cnn_widths=(4, 8, 16, 32, 64, 128))"]
    proc = run_launcher("experiments.clip", f"{CONFIG}:cpu", tmp_path, "--config.model.vision_tower=vit",
                        "--config.model.patch_size=5", check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: data.image_size=32 is not a multiple of model.patch_size=5"]
    proc = run_launcher("experiments.clip", f"{CONFIG}:paper", tmp_path, check=False)
    assert proc.returncode == 2 and "data.tokenizer=''" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_launcher("experiments.clip", f"{CONFIG}:paper", tmp_path, "--config.adapt.loss=softmax",
                        check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: adapt.loss='softmax' needs data.name='shapeworld' (the study reads digits through "
        "ShapeWorld class names); set adapt.loss=''"]
