"""scikit-learn's bundled handwritten digits (1797 8x8 images, 17 grey levels) as a TFDS dataset.

The images ship inside scikit-learn, so this needs no download. The split is fixed: examples are
ordered as scikit-learn returns them, permuted once with seed 0, and the first 1500 form `train`,
the remaining 297 `test`. Features: `image` uint8 [8, 8, 1] with values 0..16, `label` 0..9.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

NUM_TRAIN = 1500
MAX_VALUE = 16


def _split_indices():
    perm = np.random.default_rng(0).permutation(1797)
    return {"train": np.sort(perm[:NUM_TRAIN]), "test": np.sort(perm[NUM_TRAIN:])}


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """The UCI/scikit-learn 8x8 digits with a fixed 1500/297 train/test split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                "label": tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {name: self._generate_examples(idx) for name, idx in _split_indices().items()}

    def _generate_examples(self, indices):
        from sklearn.datasets import load_digits

        data = load_digits()
        images = data.images.astype(np.uint8)[..., None]
        for i in indices:
            yield int(i), {"image": images[i], "label": int(data.target[i])}


def load(split: str, data_dir=None) -> dict[str, np.ndarray]:
    """The split as arrays: `image` uint8 [N, 8, 8, 1] (0..16), `label` int64 [N]."""
    from jaxzoo.data import pipeline, tfds_utils

    builder = tfds_utils.prepare(SklearnDigits, data_dir)
    return pipeline.to_arrays(builder.as_data_source(split=split), keys=("image", "label"))
