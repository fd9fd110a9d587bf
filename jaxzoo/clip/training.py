"""What CLIP's launchers share: the model, data and optimiser of a config, and restoring a trained
CLIP from its workdir (experiments/clip.py trains; DALL-E 2 and the adaptation study reuse it).

Images enter the model as float32 in [-1, 1] (`to_model_range`); texts as token ids
[N, data.max_len] from `jaxzoo.data.shapeworld.encode` ([BOS] text [EOS] [PAD]...).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxzoo.clip.model import CLIP
from jaxzoo.data import pipeline, shapeworld
from jaxzoo.errors import ConfigError, MissingFileError
from jaxzoo.nn.towers import ConvNet, TextTransformer, ViT
from jaxzoo.train import loop


def to_model_range(images) -> np.ndarray:
    """uint8 [..., H, W, C] -> float32 in [-1, 1]."""
    return np.asarray(images, np.float32) / 127.5 - 1.0


def text_spec(tok) -> dict:
    """`make_model`'s text arguments for a `tokenizers.Tokenizer`: its vocabulary size, its end
    token (the last one its post-processor appends: ShapeWorld's [EOS], CLIP's <|endoftext|>)
    and its "[PAD]" id (-1 if it has none: a causal tower pooled at the end token never sees
    what follows it)."""
    ends = tok.encode("").ids
    if not ends:
        raise ConfigError("the tokenizer appends no end-of-text token; the text tower pools at it")
    pad = tok.token_to_id("[PAD]")
    return {"vocab_size": tok.get_vocab_size(), "eos_id": ends[-1],
            "pad_id": -1 if pad is None else pad}


def make_model(config, loss: str, vocab_size: int, eos_id: int = shapeworld.EOS,
               pad_id: int = shapeworld.PAD) -> CLIP:
    """The CLIP of `config.model` with the temperature (and bias) of `loss`; the text tower pools
    at `eos_id` and masks `pad_id` (ShapeWorld's by default; `**text_spec(tok)` for another
    tokenizer)."""
    m, d = config.model, config.data
    vision = vision_tower(m)
    text = TextTransformer(vocab_size=vocab_size, max_len=d.max_len, width=m.text_width,
                           depth=m.text_depth, num_heads=m.text_heads, causal=True, pool="eos",
                           eos_id=eos_id, pad_id=pad_id, activation=m.activation, ln_eps=1e-5)
    return CLIP(vision=vision, text=text, embed_dim=m.embed_dim, loss=loss,
                bias_init=m.sigmoid_bias_init)


def check_image_size(config) -> None:
    """ConfigError unless `data.image_size` is a multiple of the image tower's cell: the ViT's
    patch, or 2^stages for the ConvNet (each stage halves the image)."""
    m, size = config.model, config.data.image_size
    stages = len(m.cnn_widths)
    if m.vision_tower == "cnn":
        cell = 2 ** stages
        what = f"2^{stages} (the max-pooled stages of model.cnn_widths={tuple(m.cnn_widths)})"
    else:
        cell, what = m.patch_size, f"model.patch_size={m.patch_size}"
    if size % cell:
        raise ConfigError(f"data.image_size={size} is not a multiple of {what}")


def vision_tower(m):
    """The image tower of `config.model`: a ViT (CLIP's pre-normalised one) or a ConvNet."""
    if m.vision_tower == "cnn":
        return ConvNet(widths=tuple(m.cnn_widths), convs=m.cnn_convs)
    return ViT(patch_size=m.patch_size, width=m.vision_width, depth=m.vision_depth,
               num_heads=m.vision_heads, pool=m.vision_pool, position=m.vision_position,
               stem=m.vision_stem, pre_norm=True, activation=m.activation, ln_eps=1e-5)


@dataclasses.dataclass
class Pairs:
    """Images uint8 [N, S, S, 3] and tokenised captions int32 [N, K, max_len] (K per image)."""

    images: np.ndarray
    tokens: np.ndarray


def tokenizer(config):
    """The tokenizer of `config.data`: ShapeWorld's byte-level BPE, or a tokenizer.json file."""
    d = config.data
    if d.name == "shapeworld":
        return shapeworld.tokenizer(d.image_size, d.data_dir or None)
    from tokenizers import Tokenizer

    if not d.tokenizer or not pathlib.Path(d.tokenizer).is_file():
        raise MissingFileError(f"data.tokenizer={d.tokenizer!r}: data.name='tfds' needs a "
                               "tokenizer.json (Hugging Face tokenizers)")
    return Tokenizer.from_file(d.tokenizer)


def shapeworld_pairs(config, split: str, tok) -> Pairs:
    """A ShapeWorld split as Pairs (every caption tokenised), only the images with at most
    `data.max_objects` objects."""
    d = config.data
    data = shapeworld.load(split, d.image_size, d.data_dir or None)
    keep = np.flatnonzero(data["num_objects"] <= d.max_objects)
    flat = [c for i in keep for c in data["captions"][i]]
    ids, _ = shapeworld.encode(tok, flat, d.max_len)
    return Pairs(data["image"][keep], ids.reshape(len(keep), -1, d.max_len))


class TFDSPairs:
    """A prepared TFDS image-text dataset as a lazy sequence of {"image": uint8 [S, S, 3]
    (resized, bicubic), "tokens": int32 [1, max_len]} (one caption per image), read row by row
    (each process only its own rows)."""

    def __init__(self, config, split: str, tok):
        from jaxzoo.data import tfds_utils

        d = config.data
        self.source = tfds_utils.data_source(d.tfds_name, split, d.data_dir or None)
        self.config, self.tok = config, tok

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i) -> dict:
        from PIL import Image

        d = self.config.data
        row = self.source[int(i)]
        pixels = np.asarray(row[d.image_key], np.uint8)
        pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels  # grey
        image = Image.fromarray(pixels).convert("RGB")
        image = np.asarray(image.resize((d.image_size, d.image_size), Image.BICUBIC))
        text = row[d.text_key]
        text = text if isinstance(text, str) else bytes(text).decode("utf-8")
        return {"image": image, "tokens": shapeworld.encode(self.tok, [text], d.max_len)[0]}


def training_loader(config, pairs) -> pipeline.StepIndexedLoader:
    """Batches {"image": float32 [B, S, S, 3] in [-1, 1], "tokens": int32 [B, max_len]} with one
    caption per image drawn afresh at every step (deterministically from the step), from Pairs
    or TFDSPairs."""

    def transform(batch, rng):
        tokens = batch["tokens"]
        pick = rng.integers(tokens.shape[1], size=len(tokens))
        return {"image": to_model_range(batch["image"]), "tokens": tokens[np.arange(len(pick)), pick]}

    data = {"image": pairs.images, "tokens": pairs.tokens} if isinstance(pairs, Pairs) else pairs
    return pipeline.StepIndexedLoader(data, config.batch_size, seed=config.seed, transform=transform,
                                      keys=None if isinstance(pairs, Pairs) else ("image", "tokens"))


def optimizer(config) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 0; weight decay on matrices only (CLIP
    decays no gains, biases or the temperature)."""
    o = config.optim
    if o.warmup_steps >= config.total_steps:
        raise ConfigError(f"optim.warmup_steps={o.warmup_steps} must be < total_steps="
                          f"{config.total_steps}")
    lr = optax.warmup_cosine_decay_schedule(0.0, o.lr, o.warmup_steps, config.total_steps)
    mask = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # noqa: E731
    return optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay, mask=mask)


def loss_fn(model: CLIP):
    """`(params, batch, key) -> (loss, terms)`: the model's contrastive loss on the global batch
    (jit shards it; the B x B logits span every device), with the temperature and R@1 in-batch."""
    from jaxzoo.clip import losses

    def fn(params, batch, key):
        del key
        out = model.apply(params, batch["tokens"], batch["image"])
        image, text = out["image_embeds"], out["text_embeds"]
        if model.loss == "softmax":
            loss = losses.softmax_loss(image, text, out["logit_scale"])
        else:
            loss = losses.sigmoid_loss(image, text, out["logit_scale"], out["logit_bias"])
        top1 = jnp.mean(jnp.argmax(out["logits_per_image"], 1) == jnp.arange(len(image)))
        return loss, {"temperature": out["logit_scale"], "batch_image_to_text_r1": top1}

    return fn


def task(config, model: CLIP, loader=None) -> loop.Task:
    s = config.data.image_size
    init = lambda key: model.init(key, jnp.zeros((1, config.data.max_len), jnp.int32),  # noqa: E731
                                  jnp.zeros((1, s, s, 3)))
    return loop.Task(init_params=init, loss_fn=loss_fn(model), tx=optimizer(config), loader=loader)


def run_config(config, loss: str) -> ml_collections.ConfigDict:
    """The config of the run training `loss` (the study-level `losses` dropped, `loss` set)."""
    c = ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k != "losses"})
    c.loss = loss
    c.lock()
    return c


def restore(workdir, loss: str = "softmax"):
    """(model, variables, tokenizer, run config) of the CLIP trained in `workdir/<loss>` (the
    workdir of an experiments/clip.py run)."""
    run_dir = pathlib.Path(workdir) / loss
    config = loop.read_run_config(run_dir)
    tok = tokenizer(config)
    model = make_model(config, loss, **text_spec(tok))
    _, state = loop.restore_state(config, run_dir, task(config, model))
    return model, jax.device_get(state.params), tok, config


def shapeworld_recipe(total_steps: int = 1200, seed: int = 0, data_dir: str = "",
                      image_size: int = 32) -> ml_collections.ConfigDict:
    """The run config of the `cpu` variant of experiments/configs/clip.py with the softmax loss
    (a ConvNet image tower and a 2-block text tower into 64-d embeddings, trained on ShapeWorld
    images with at most two objects), for models that need a CLIP without a CLIP run of their
    own (the text-to-image launchers' CLIP score, Imagen's frozen encoder, DALL-E 2's
    embeddings). tests/clip/test_recipe.py keeps it equal to that variant."""
    from jaxzoo.train.config import base_config

    c = base_config("cpu", ("cpu",))
    c.seed, c.loss = seed, "softmax"
    c.data = ml_collections.ConfigDict(dict(
        name="shapeworld", data_dir=data_dir, image_size=image_size, max_len=24, max_objects=2))
    c.model = ml_collections.ConfigDict(dict(
        vision_tower="cnn", cnn_widths=(32, 64, 128), cnn_convs=1, text_width=64, text_depth=2,
        text_heads=4, embed_dim=64, activation="quick_gelu", sigmoid_bias_init=-5.0))
    warmup = min(100, int(total_steps) // 12)  # 100 at the variant's 1,200 steps
    c.optim = ml_collections.ConfigDict(dict(lr=2e-3, warmup_steps=warmup, b1=0.9, b2=0.98,
                                             eps=1e-6, weight_decay=0.2))
    c.batch_size, c.total_steps = 128, int(total_steps)
    c.log_every, c.checkpoint_every = 100, 1000
    c.lock()
    return c
