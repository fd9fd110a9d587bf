"""Hugging Face checkpoints in: `load(directory) -> (module, variables)`.

Reads a local model directory in the `save_pretrained` layout (`config.json` and
`model.safetensors`) with the `safetensors` library, never the network, and dispatches on the
config's `model_type` to the family that owns the architecture. Conversion is strict: missing,
unexpected and mis-shaped tensors are listed in one DataError. Families: "clip"
(`jaxzoo.clip.hf`); GPT-2, BERT and Whisper follow in their families.
"""

from __future__ import annotations

import json
import pathlib

from jaxzoo.clip import hf as clip_hf
from jaxzoo.errors import DataError, MissingFileError

CONVERTERS = {"clip": clip_hf.from_hf}


def load(directory):
    """`(module, {"params": ...})` of the Hugging Face model saved in `directory`."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    directory = pathlib.Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise MissingFileError(f"{path} not found: a Hugging Face model directory holds "
                                   "config.json and model.safetensors (save_pretrained layout)")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{config_path}: not valid JSON ({e})") from None
    model_type = config.get("model_type")
    if model_type not in CONVERTERS:
        raise DataError(f"{config_path}: model_type={model_type!r}; jaxzoo reads "
                        f"{sorted(CONVERTERS)}")
    try:
        tensors = load_file(weights_path)
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{weights_path}: cannot read it as safetensors ({e})") from None
    return CONVERTERS[model_type](config, tensors)
