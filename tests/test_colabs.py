"""Every colab runs top to bottom (with its `parameters` cell shrunk to smoke-test sizes)."""

import json
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO, T2I_TINY, launcher_env

# The launcher smoke tests' tiny settings, as the colab's {model: {key: value}} overrides.
_T2I_OVERRIDES = {m: dict(a[len("--config."):].split("=", 1) for a in args)
                  for m, args in T2I_TINY.items()}

# Per notebook: replacement source for the cell tagged "parameters".
SMOKE_PARAMETERS = {
    "clip.ipynb": (
        "from jaxzoo.data import shapeworld as _sw, tfds_utils as _tfds\n"
        "import tempfile as _tempfile\n"
        "DATA_DIR = _tempfile.mkdtemp()\n"
        "_tfds.prepare(_sw.ShapeWorld, DATA_DIR, config='size_32', split_sizes={'train': 64, "
        "'validation': 8, 'test': 48, 'test_compositional': 32})\n"
        "TOTAL_STEPS = 3\n"
        "OVERRIDES = {'batch_size': '16', 'log_every': '1', 'checkpoint_every': '3', "
        "'optim.warmup_steps': '1', 'model.cnn_widths': '(4,8)', 'model.text_width': '16', "
        "'model.text_depth': '1', 'model.text_heads': '2', 'model.embed_dim': '8', "
        "'eval.num_retrieval': '20', 'eval.num_pictures': '4', 'eval.batch_size': '16', "
        "'adapt.fine_tune_steps': '2', 'adapt.prompt_steps': '2', 'adapt.batch_size': '8', "
        "'adapt.probe_cs': '(1.0,)'}\n"),
    "vae.ipynb": "TOTAL_STEPS = 30\nEVAL_SAMPLES = 10\n",
    "nerf.ipynb": (
        "TOTAL_STEPS = 4\n"
        "OVERRIDES = {'data.image_size': '16', 'model.depth': '2', 'model.width': '16', "
        "'model.skips': '(1,)', 'model.num_coarse': '8', 'model.num_fine': '8', 'batch_size': '64', "
        "'log_every': '2', 'checkpoint_every': '2', 'eval.max_views': '2', 'video.num_frames': '2'}\n"),
    "ddpm.ipynb": (
        "TOTAL_STEPS = 4\n"
        "OVERRIDES = {'model.channels': '8', 'model.num_groups': '4', 'batch_size': '8', "
        "'log_every': '2', 'checkpoint_every': '2', 'eval.num_samples': '8', 'eval.num_steps': '(2,)', "
        "'eval.grid_size': '8', 'fd.steps': '4', 'fd.widths': '(4,)', 'fd.feature_dim': '4'}\n"
        "CONVERGENCE_STEPS = (2, 3)\nREFERENCE_STEPS = 4\n"),
    "esrgan.ipynb": (
        "PSNR_STEPS = 2\nGAN_STEPS = 2\nALPHAS = (0.0, 1.0)\n"
        "OVERRIDES = {'model.num_blocks': '1', 'model.features': '8', 'model.growth': '4', "
        "'data.patch_size': '32', 'batch_size': '2', 'log_every': '1', 'checkpoint_every': '2'}\n"
        "GAN_OVERRIDES = {'disc.features': '(4, 4, 8, 8)', 'disc.dense_features': '8', "
        "'loss.percep_base_features': '2', 'loss.percep_layer': 'conv2_2'}\n"),
    "gpt.ipynb": (
        "TOTAL_STEPS = 3\nEVAL_TOKENS = 1000\nSAMPLE_TOKENS = 8\nPROMPT = 'def '\n"
        "OVERRIDES = {'model.num_layers': '1', 'model.d_model': '16', 'model.max_len': '16', "
        "'seq_len': '16', 'batch_size': '4', 'data.max_train_bytes': '20000', "
        "'optim.warmup_steps': '1', 'log_every': '1', 'eval.batch_size': '4', "
        "'eval.sample_tokens': '8'}\n"),
    "text_to_image.ipynb": (
        "from jaxzoo.data import shapeworld as _sw, tfds_utils as _tfds\n"
        "import tempfile as _tempfile\n"
        "DATA_DIR = _tempfile.mkdtemp()\n"
        "_tfds.prepare(_sw.ShapeWorld, DATA_DIR, config='size_32', split_sizes={'train': 96, "
        "'validation': 8, 'test': 80, 'test_compositional': 48})\n"
        "MODELS = ('glide', 'imagen', 'dalle2')\n"
        f"OVERRIDES = {_T2I_OVERRIDES!r}\n"),
}


def _script(path: pathlib.Path) -> str:
    nb = json.loads(path.read_text())
    parts = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            source = SMOKE_PARAMETERS[path.name]
        parts.append(source)
    return "\n".join(parts)


def test_every_colab_has_smoke_parameters():
    assert sorted(p.name for p in (REPO / "colabs").glob("*.ipynb")) == sorted(SMOKE_PARAMETERS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMOKE_PARAMETERS))
def test_colab_runs_top_to_bottom(name, tmp_path):
    script = tmp_path / "nb.py"
    script.write_text(_script(REPO / "colabs" / name))
    env = launcher_env(1, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
