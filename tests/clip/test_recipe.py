"""`clip.training.shapeworld_recipe` (what other families train when they need a CLIP) stays the
cpu variant of experiments/configs/clip.py: every key it sets has the variant's value."""

from experiments.configs import clip as clip_config
from jaxzoo.clip import training


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_recipe_equals_the_cpu_variant_of_the_clip_config():
    recipe = _flat(training.shapeworld_recipe().to_dict())
    variant = _flat(clip_config.get_config("cpu").to_dict())
    assert recipe.pop("loss") in variant["losses"]
    differ = {k: (v, variant.get(k, "<missing>")) for k, v in recipe.items()
              if variant.get(k, "<missing>") != v}
    assert not differ, differ


def test_recipe_builds_a_clip_whose_image_tower_is_the_convnet():
    model = training.make_model(training.shapeworld_recipe(), "softmax", vocab_size=50)
    assert type(model.vision).__name__ == "ConvNet"
    assert model.embed_dim == 64
