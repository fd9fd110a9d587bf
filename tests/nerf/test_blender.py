"""The Blender loader refuses malformed scenes with one message naming the file, frame and key,
and the NeRF launcher checks what evaluation needs before it trains."""

import json
import pathlib
import shutil

import numpy as np
import pytest

from conftest import REPO
from jaxzoo.errors import ConfigError, DataError, MissingFileError
from jaxzoo.nerf import blender
from jaxzoo.nerf import scene as nerf_scene


@pytest.fixture(scope="module")
def good_scene(tmp_path_factory):
    return nerf_scene.generate_scene(tmp_path_factory.mktemp("scene"), image_size=12, num_train=2,
                                     num_val=0, num_test=1)


@pytest.fixture
def scene(good_scene, tmp_path):
    root = tmp_path / "scene"
    shutil.copytree(good_scene, root)
    return root


def _edit(root, split="train", **changes):
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    frame_changes = changes.pop("frame", None)
    meta.update(changes)
    if frame_changes is not None:
        k, edit = frame_changes
        edit(meta["frames"][k])
    path.write_text(json.dumps(meta))
    return path


def test_the_good_scene_loads(scene):
    data = blender.load_blender(scene, "train")
    assert data.images.shape == (2, 12, 12, 3) and np.all(np.isfinite(data.poses))


@pytest.mark.parametrize("value, shown", [("wide", "'wide'"), (0, "0"), (4.0, "4.0"), (None, "None")])
def test_bad_camera_angle(scene, value, shown):
    path = _edit(scene, camera_angle_x=value)
    with pytest.raises(DataError, match=rf"{path}: camera_angle_x={shown}; expected the "
                                        r"horizontal field of view in radians, a number in \(0, pi\)"):
        blender.load_blender(scene, "train")


def test_json_syntax_error_names_line_and_column(scene):
    path = scene / "transforms_train.json"
    path.write_text('{"camera_angle_x": 0.69,\n "frames": [}')
    with pytest.raises(DataError, match=rf"{path}: not valid JSON \(line 2, column 13"):
        blender.load_blender(scene, "train")


def test_missing_file_path_names_the_frame(scene):
    path = _edit(scene, frame=(1, lambda f: f.pop("file_path")))
    with pytest.raises(DataError, match=rf"{path}: frame 1: no 'file_path' key"):
        blender.load_blender(scene, "train")


def test_missing_image_names_frame_and_file(scene):
    (scene / "train" / "r_1.png").unlink()
    with pytest.raises(MissingFileError, match=r"frame 1: image .*r_1.png \(file_path='./train/r_1'\) not found"):
        blender.load_blender(scene, "train")


def test_truncated_png_names_the_file(scene):
    png = scene / "train" / "r_0.png"
    png.write_bytes(png.read_bytes()[:60])
    with pytest.raises(DataError, match=rf"{png}: cannot read the image"):
        blender.load_blender(scene, "train")


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "transform_matrix has non-finite entries"),
    ("x", "transform_matrix must be a 4x4 matrix of numbers"),
])
def test_bad_pose_names_frame_and_key(scene, bad, message):
    def corrupt(frame):
        frame["transform_matrix"][0][3] = bad
    path = _edit(scene, frame=(0, corrupt))
    with pytest.raises(DataError, match=rf"{path}: frame 0: {message}"):
        blender.load_blender(scene, "train")


def test_pose_of_the_wrong_shape(scene):
    path = _edit(scene, frame=(1, lambda f: f.update(transform_matrix=[[1, 0, 0, 0]])))
    with pytest.raises(DataError, match=rf"{path}: frame 1: transform_matrix must be a 4x4"):
        blender.load_blender(scene, "train")


@pytest.mark.parametrize("near, far, message", [
    (6.0, 2.0, "near=6.0 must be < far=2.0"),
    (-1.0, 6.0, "near=-1.0; expected a finite number > 0"),
])
def test_near_far(scene, near, far, message):
    path = _edit(scene, near=near, far=far)
    with pytest.raises(DataError, match=rf"{path}: {message}"):
        blender.load_blender(scene, "train")


def test_missing_split_lists_what_exists(scene):
    with pytest.raises(MissingFileError, match=r"transforms_val2.json not found .*transforms_test.json"):
        blender.load_blender(scene, "val2")


# ----------------------------------------------------------------------------- the launcher


def _nerf_config(**overrides):
    from jaxzoo.train import config as config_lib
    return config_lib.load_config(str(REPO / "experiments/configs/nerf.py") + ":cpu",
                                  {k: str(v) for k, v in overrides.items()})


def test_images_smaller_than_the_ssim_window_are_refused_before_training(good_scene, tmp_path):
    from experiments import nerf
    config = _nerf_config(**{"data.format": "blender", "data.root": good_scene, "data.downscale": 2})
    with pytest.raises(DataError, match=r"images are 6x6, smaller than SSIM's 11x11 window"):
        nerf.train_and_evaluate(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("overrides, message", [
    ({"data.near": 5.0, "data.far": 3.0}, "data.near=5.0, data.far=3.0: need 0 <= near < far"),
    ({"eval.chunk": 0}, "eval.chunk=0; allowed: an int >= 1"),
    ({"eval.max_views": -1}, "eval.max_views=-1; allowed: an int >= 0"),
    ({"data.format": "blender"}, "data.format='blender' needs --config.data.root"),
])
def test_launcher_settings_checked_before_any_work(tmp_path, overrides, message):
    from experiments import nerf
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        nerf.train_and_evaluate(_nerf_config(**overrides), tmp_path / "w")
    assert not (tmp_path / "w").exists()
