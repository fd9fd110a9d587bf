"""Hugging Face `CLIPModel` checkpoints (`config.json` + `model.safetensors`) as jaxzoo CLIP.

`from_hf(config, tensors) -> (CLIP module, {"params": ...})`, called by `jaxzoo.hf.load`. The
module reproduces `transformers.CLIPModel` (logits_per_image, text_embeds, image_embeds) on
token ids and NHWC pixels; tests/clip/test_clip_hf.py checks it against a fixture generated with
transformers. Text pooling: the first `eos_token_id`, or for configs written before
transformers PR #24773 (eos_token_id 2) the highest id, which is `vocab_size - 1` in CLIP's
vocabulary, as transformers does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxzoo.clip.model import CLIP
from jaxzoo.errors import DataError
from jaxzoo.io.state_dict import convert, param_shapes, torch_leaf
from jaxzoo.nn.towers import TextTransformer, ViT

# Hugging Face hidden_act -> jaxzoo.nn.transformer.ACTIVATIONS
_ACTIVATIONS = {"quick_gelu": "quick_gelu", "gelu": "gelu_exact", "gelu_new": "gelu",
                "gelu_pytorch_tanh": "gelu", "relu": "relu"}
# jaxzoo block sub-layer -> Hugging Face encoder-layer name
_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "fc": "mlp.fc1", "proj": "mlp.fc2",
          "query": "self_attn.q_proj", "key": "self_attn.k_proj", "value": "self_attn.v_proj",
          "out": "self_attn.out_proj"}
_TOWER = {"text": "text_model", "vision": "vision_model"}
_TOP = {("text", "token_embed"): "embeddings.token_embedding",
        ("text", "pos_embed"): "embeddings.position_embedding.weight",
        ("text", "ln_final"): "final_layer_norm",
        ("vision", "patch_embed"): "embeddings.patch_embedding",
        ("vision", "cls"): "embeddings.class_embedding",
        ("vision", "pos_embed"): "embeddings.position_embedding.weight",
        ("vision", "ln_pre"): "pre_layrnorm", ("vision", "ln_post"): "post_layernorm"}


def hf_name(path: tuple) -> str:
    """The Hugging Face tensor name of a jaxzoo CLIP parameter path."""
    if len(path) == 1:  # logit_scale
        return path[0]
    if path[0] in ("visual_projection", "text_projection"):
        return f"{path[0]}.weight"
    tower, rest = path[0], path[1:]
    if rest[0] == "encoder":  # ("encoder", "block_i", sub-layer..., leaf)
        i = rest[1].split("_")[1]
        layer = _LAYER[rest[3] if rest[2] == "attn" else rest[2]]
        return f"{_TOWER[tower]}.encoder.layers.{i}.{layer}.{torch_leaf(rest[-1])}"
    name = _TOP[(tower, rest[0])]
    if name.endswith((".weight", "class_embedding")):
        return f"{_TOWER[tower]}.{name}"
    return f"{_TOWER[tower]}.{name}.{torch_leaf(rest[-1])}"


def module_from_config(config: dict) -> CLIP:
    """The jaxzoo CLIP of a Hugging Face CLIPConfig dict (`config.json`)."""
    try:
        t, v = config["text_config"], config["vision_config"]
        act = {c["hidden_act"] for c in (t, v)}
        if len(act) != 1 or next(iter(act)) not in _ACTIVATIONS:
            raise DataError(f"hidden_act {sorted(act)}: expected one of {sorted(_ACTIVATIONS)} for "
                            "both towers")
        activation = _ACTIVATIONS[next(iter(act))]
        eos = t["eos_token_id"] if t["eos_token_id"] != 2 else t["vocab_size"] - 1
        text = TextTransformer(
            vocab_size=t["vocab_size"], max_len=t["max_position_embeddings"], width=t["hidden_size"],
            depth=t["num_hidden_layers"], num_heads=t["num_attention_heads"],
            mlp_dim=t["intermediate_size"], causal=True, pool="eos", eos_id=eos,
            activation=activation, ln_eps=t["layer_norm_eps"])
        vision = ViT(
            patch_size=v["patch_size"], width=v["hidden_size"], depth=v["num_hidden_layers"],
            num_heads=v["num_attention_heads"], mlp_dim=v["intermediate_size"], pool="cls",
            position="learned", pre_norm=True, patch_bias=False, activation=activation,
            ln_eps=v["layer_norm_eps"])
        return CLIP(vision=vision, text=text, embed_dim=config["projection_dim"])
    except KeyError as e:
        raise DataError(f"CLIP config.json lacks the key {e.args[0]!r}") from None


def from_hf(config: dict, tensors: dict[str, np.ndarray]):
    """(CLIP module, {"params": ...}) from a config dict and a name -> array dict; a DataError
    lists every missing, unexpected and mis-shaped tensor."""
    model = module_from_config(config)
    v = config["vision_config"]
    size, channels = v["image_size"], v.get("num_channels", 3)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                              jnp.zeros((1, size, size, channels)))
    # position_ids are buffers in some transformers versions, not parameters.
    ignore = lambda k: k.endswith("position_ids")  # noqa: E731
    variables = convert(tensors, param_shapes(abstract), hf_name, ignore=ignore,
                        what="CLIP model.safetensors")
    return model, jax.tree.map(jnp.asarray, variables)
