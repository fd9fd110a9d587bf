"""GLIDE launcher: a text transformer and a U-Net trained together on ShapeWorld captions, sampled
with classifier-free guidance and scored by the shared text-to-image evaluation.

    python -m experiments.glide --config=experiments/configs/glide.py:cpu --workdir=workdirs/glide

Writes to the workdir: config.json, metrics.jsonl, checkpoints/, eval.json (the metrics of
`jaxzoo.diffusion.text_to_image.evaluate` for every setting `steps<N>_w<weight>_<threshold>`:
the sampler steps of `eval.num_steps` at `eval.guidance_scale`, and every weight of
`eval.guidance_scales` at `eval.sweep_steps` steps), samples.png (test captions of every
category at the best setting, with their captions) and settings.png (one row per setting, the
same captions). The scoring CLIP and probe are trained on first use and cached beside the
dataset.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxzoo.clip import training as clip_training
from jaxzoo.diffusion import text_to_image as t2i
from jaxzoo.diffusion.glide import TextUNet, encode_captions
from jaxzoo.diffusion.unet import UNet
from jaxzoo.nn.towers import TextTransformer
from jaxzoo.train import cli, loop, mesh as mesh_lib, metrics as metrics_lib


def make_model(config, tok) -> TextUNet:
    m, d = config.model, config.data
    spec = clip_training.text_spec(tok)
    text = TextTransformer(vocab_size=spec["vocab_size"], max_len=d.max_len, width=m.text_width,
                           depth=m.text_depth, num_heads=m.text_heads, causal=True, pool="eos",
                           eos_id=spec["eos_id"], pad_id=spec["pad_id"], ln_eps=1e-5)
    unet = UNet(out_channels=3, channels=m.channels, channel_mult=tuple(m.channel_mult),
                num_res_blocks=m.num_res_blocks, attention_resolutions=tuple(m.attention_resolutions),
                num_heads=m.num_heads, dropout=m.dropout, num_groups=m.num_groups,
                scale_shift_norm=True, context_dim=m.text_width)
    return TextUNet(text, unet)


def make_task(config, model: TextUNet, loader) -> loop.Task:
    """L_simple on (image, caption) batches; each caption replaced by the empty sequence with
    probability `caption_dropout` (GLIDE Sec. 2.3, classifier-free guidance)."""
    size = config.data.image_size

    def conditioning(batch, key):
        return {"tokens": batch["tokens"],
                "drop": t2i.drop_mask(key, config.caption_dropout, len(batch["tokens"]))}

    zeros = lambda *shape: jnp.zeros(shape, jnp.int32)  # noqa: E731
    init = lambda key: model.init(key, jnp.zeros((1, size, size, 3)), zeros(1),  # noqa: E731
                                  tokens=zeros(1, config.data.max_len))
    return loop.Task(init_params=init, loss_fn=t2i.denoising_loss_fn(config, model, conditioning),
                     tx=t2i.optimizer(config), loader=loader)


def load_training_data(config, tok):
    if config.data.name == "tfds":
        return clip_training.TFDSPairs(config, "train", tok)
    return t2i.pairs(config, t2i.load_split(config, "train"), tok)


def save_validation_samples(config, generate, tok, workdir, key, num: int = 16):
    """samples.png: the first `num` validation captions of a TFDS dataset, sampled at
    `eval.sweep_steps` steps and `eval.guidance_scale`."""
    pairs = clip_training.TFDSPairs(config, "validation", tok)
    tokens = np.stack([pairs[i]["tokens"][0] for i in range(min(num, len(pairs)))])
    e = config.eval
    images = generate(tokens, key, num_steps=e.sweep_steps, guidance_scale=e.guidance_scale,
                      threshold=e.threshold)
    if jax.process_index() == 0:
        texts = [tok.decode([int(i) for i in row], skip_special_tokens=True) for row in tokens]
        t2i.save_captioned(workdir / "samples.png", t2i.to_uint8(images), texts)


def train_and_evaluate(config, workdir, hooks=()):
    """Trains, then evaluates and writes eval.json. Returns the eval dict (None if preempted)."""
    workdir = pathlib.Path(workdir)
    t2i.check_image_size(config.data.image_size)
    tok = t2i.tokenizer(config)
    model = make_model(config, tok)
    loader = clip_training.training_loader(config, load_training_data(config, tok))
    result = loop.train(config, workdir, make_task(config, model, loader), hooks=hooks)
    if result.preempted:
        return None
    state = result.state
    params = mesh_lib.to_host(state.ema_params if state.ema_params is not None else state.params)
    key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)
    size = config.data.image_size
    generate = lambda tokens, key, **setting: t2i.sample(  # noqa: E731
        config, model, params, encode_captions(model, params, tokens), key, (size, size, 3), **setting)
    if config.data.name == "tfds":  # no ShapeWorld probe for arbitrary pairs: pictures only
        save_validation_samples(config, generate, tok, workdir, key)
        return None
    bench = t2i.benchmark(config, tok)
    metrics, images = t2i.evaluate(config, generate, t2i.settings(config), bench, t2i.scorer(config),
                                   key)
    metrics_lib.write_eval(workdir, metrics, result.step)
    t2i.save_pictures(workdir, images, bench, metrics["best_setting"])
    return metrics


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
