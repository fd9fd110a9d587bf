"""DALL-E 2 (unCLIP) launcher: a diffusion prior from CLIP text to CLIP image embeddings and a
decoder from CLIP image embeddings to images, on ShapeWorld, scored by the shared text-to-image
evaluation.

    python -m experiments.dalle2 --config=experiments/configs/dalle2.py:cpu --workdir=workdirs/dalle2

Trains the prior in workdir/prior/ and the decoder in workdir/decoder/ (each resumable). eval.json
holds `jaxzoo.diffusion.text_to_image.evaluate`'s metrics for the full text -> prior -> decoder
pipeline at every decoder setting `steps<N>_w<weight>`, plus
* `prior_cosine`: the mean cosine between the prior's image embedding for a test caption and the
  CLIP image embedding of the real image that caption was written for, beside
  `text_image_cosine` (the caption's own CLIP text embedding against that image embedding: what
  using the text embedding directly would score) and `prior_cosine_single_sample`;
* `oracle_*`: the decoder fed the real images' CLIP embeddings (an upper bound for the prior).
Pictures: samples.png, settings.png, variations.png (a test image, then `eval.num_variations`
decodings of its CLIP embedding with the caption dropped) and interpolation.png (decodings of the
slerp between two images' embeddings, the same noise in every column).
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxzoo import viz
from jaxzoo.clip import evaluation as clip_eval, training as clip_training
from jaxzoo.data import pipeline, shapeworld
from jaxzoo.diffusion import prior as prior_lib, text_to_image as t2i
from jaxzoo.diffusion.glide import TextUNet, encode_captions
from jaxzoo.diffusion.unet import UNet
from jaxzoo.nn.towers import TextTransformer
from jaxzoo.train import cli, loop, mesh as mesh_lib, metrics as metrics_lib


def prior_config(config) -> ml_collections.ConfigDict:
    """The prior's run config: the top-level settings of `config.prior`, x0 prediction."""
    c = ml_collections.ConfigDict(config.to_dict())
    p = c.prior
    c.batch_size, c.total_steps, c.ema_decay = p.batch_size, p.total_steps, p.ema_decay
    c.optim.lr, c.optim.warmup_steps, c.optim.weight_decay = p.lr, p.warmup_steps, p.weight_decay
    c.diffusion.prediction, c.diffusion.schedule = "x0", p.schedule  # Sec. 2.1: predict z_i
    c.eval.method, c.eval.threshold = "ddim", ""
    c.lock()
    return c


def make_prior(config, embed_dim: int) -> prior_lib.DiffusionPrior:
    p = config.prior
    return prior_lib.DiffusionPrior(embed_dim=embed_dim, width=p.width, depth=p.depth,
                                    num_heads=p.num_heads, max_text_len=config.data.max_len)


def make_decoder(config, tok_spec: dict, embed_dim: int) -> TextUNet:
    m, d = config.model, config.data
    text = TextTransformer(vocab_size=tok_spec["vocab_size"], max_len=d.max_len, width=m.text_width,
                           depth=m.text_depth, num_heads=m.text_heads, causal=True, pool="eos",
                           eos_id=tok_spec["eos_id"], pad_id=tok_spec["pad_id"], ln_eps=1e-5)
    unet = UNet(out_channels=3, channels=m.channels, channel_mult=tuple(m.channel_mult),
                num_res_blocks=m.num_res_blocks, attention_resolutions=tuple(m.attention_resolutions),
                num_heads=m.num_heads, dropout=m.dropout, num_groups=m.num_groups,
                scale_shift_norm=True, context_dim=m.text_width, cond_dim=embed_dim,
                num_cond_tokens=m.num_cond_tokens)
    return TextUNet(text, unet)


def _loader(config, data: dict, image_key: str = "image"):
    """One random caption per item and step; uint8 images mapped to [-1, 1]."""

    def transform(batch, rng):
        tokens = batch["tokens"]
        pick = rng.integers(tokens.shape[1], size=len(tokens))
        out = dict(batch, tokens=tokens[np.arange(len(pick)), pick])
        if out["image"].dtype == np.uint8:
            out["image"] = t2i.to_model_range(out["image"])
        return out

    return pipeline.StepIndexedLoader(data, config.batch_size, seed=config.seed, transform=transform)


def prior_task(run, model, encoder: t2i.TextEncoder, loader) -> loop.Task:
    """x0 regression of the scaled CLIP image embedding (`batch["image"]`) from the caption."""
    L = run.data.max_len

    def conditioning(batch, key):
        enc = encoder.encode(batch["tokens"])
        return {"text_tokens": enc["context"], "text_mask": enc["context_mask"],
                "text_embed": encoder.embed(batch["tokens"]),
                "drop": t2i.drop_mask(key, run.prior.text_dropout, len(batch["tokens"]))}

    def init(key):
        e = model.embed_dim
        return model.init(key, jnp.zeros((1, e)), jnp.zeros((1,), jnp.int32),
                          text_tokens=jnp.zeros((1, L, encoder.width)), text_mask=jnp.ones((1, L), bool),
                          text_embed=jnp.zeros((1, e)))

    return loop.Task(init_params=init, loss_fn=t2i.denoising_loss_fn(run, model, conditioning),
                     tx=t2i.optimizer(run), loader=loader)


def decoder_task(config, model: TextUNet, loader) -> loop.Task:
    """L_simple on images given the CLIP image embedding and the caption, each dropped
    independently (`embed_dropout`, `caption_dropout`)."""
    size, e = config.data.image_size, model.unet.cond_dim

    def conditioning(batch, key):
        k1, k2 = jax.random.split(key)
        b = len(batch["tokens"])
        return {"tokens": batch["tokens"], "cond": batch["embed"],
                "drop_cond": t2i.drop_mask(k1, config.embed_dropout, b),
                "drop_context": t2i.drop_mask(k2, config.caption_dropout, b)}

    zeros = lambda *shape: jnp.zeros(shape, jnp.int32)  # noqa: E731
    init = lambda key: model.init(key, jnp.zeros((1, size, size, 3)), zeros(1),  # noqa: E731
                                  tokens=zeros(1, config.data.max_len),
                                  cond=jnp.zeros((1, e)))
    return loop.Task(init_params=init, loss_fn=t2i.denoising_loss_fn(config, model, conditioning),
                     tx=t2i.optimizer(config), loader=loader)


def _params(result):
    state = result.state
    return mesh_lib.to_host(state.ema_params if state.ema_params is not None else state.params)


def prior_embeddings(run, model, params, encoder, tokens, key) -> tuple[np.ndarray, np.ndarray]:
    """(best of `prior.num_samples` samples, the first sample), unit image embeddings [N, E]."""
    p, e = run.prior, model.embed_dim
    text = encoder.encode_numpy(tokens, embed=True)
    cond = {"text_tokens": text["context"], "text_mask": text["context_mask"], "text_embed": text["embed"]}
    draws = np.stack([t2i.sample(run, model, params, cond, jax.random.fold_in(key, k), (e,),
                                 num_steps=p.num_steps, guidance_scale=p.guidance_scale)
                      for k in range(p.num_samples)])
    return _unit(prior_lib.best_of(draws, text["embed"])), _unit(draws[0])


def _unit(z) -> np.ndarray:
    z = np.asarray(z)
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-12)


def save_variations_and_interpolation(config, decoder, params, embeds, images, workdir, key):
    """variations.png and interpolation.png (caption dropped: the image embedding alone)."""
    if jax.process_index() != 0:
        return
    size, n = config.data.image_size, config.eval.num_variations
    rows, num = [], min(4, len(embeds))
    tokens = np.zeros((num * n, config.data.max_len), np.int32)
    cond = np.repeat(embeds[:num], n, 0)
    drop = np.ones((num * n,), bool)
    setting = dict(num_steps=config.eval.sweep_steps, guidance_scale=config.eval.guidance_scale,
                   threshold=config.eval.threshold)
    x = t2i.to_uint8(t2i.sample(config, decoder, params, {"tokens": tokens, "cond": cond,
                                                          "drop_context": drop}, key,
                                (size, size, 3), **setting))
    for i in range(num):
        rows += [images[i:i + 1], x[i * n:(i + 1) * n]]
    grid = np.concatenate(rows).astype(np.float32) / 255.0
    viz.save_png(pathlib.Path(workdir) / "variations.png", viz.image_grid(grid, n + 1), scale=6)
    steps = 7
    ts = np.linspace(0.0, 1.0, steps)
    pairs = [(0, 1 % num), (2 % num, 3 % num)]
    cond = np.concatenate([np.asarray(prior_lib.slerp(embeds[a], embeds[b], ts)) for a, b in pairs])
    m = len(cond)
    noise_key = jax.random.fold_in(key, 3)
    x = t2i.sample(config, decoder, params, {"tokens": np.zeros((m, config.data.max_len), np.int32),
                                             "cond": cond, "drop_context": np.ones((m,), bool)},
                   noise_key, (size, size, 3), same_noise=True, **setting)
    viz.save_png(pathlib.Path(workdir) / "interpolation.png",
                 viz.image_grid(t2i.to_uint8(x).astype(np.float32) / 255.0, steps), scale=6)


def train_and_evaluate(config, workdir, hooks=()):
    """Trains the prior and the decoder, evaluates, writes eval.json. Returns the eval dict
    (None if preempted)."""
    workdir = pathlib.Path(workdir)
    t2i.check_image_size(config.data.image_size)
    encoder, tok = t2i.text_encoder(config, "clip")
    clip_model, clip_params, _ = t2i.scoring_clip(config)
    dd = config.data.data_dir or None
    train32 = shapeworld.load("train", 32, dd)
    keep = np.flatnonzero(train32["num_objects"] <= config.data.max_objects)
    embeds = clip_eval.image_embeddings(clip_model, clip_params, t2i.to_model_range(train32["image"][keep]))
    captions = t2i.pairs(config, train32, tok).tokens
    e = embeds.shape[1]
    scale = math.sqrt(e)  # unit-norm embeddings -> about unit variance per coordinate

    run = prior_config(config)
    prior = make_prior(run, e)
    prior_loader = _loader(run, {"image": embeds * scale, "tokens": captions})
    prior_result = loop.train(run, workdir / "prior", prior_task(run, prior, encoder, prior_loader),
                              hooks=hooks)
    decoder = make_decoder(config, clip_training.text_spec(tok), e)
    images = shapeworld.downsample(train32["image"][keep], config.data.image_size)
    decoder_loader = _loader(config, {"image": images, "embed": embeds, "tokens": captions})
    result = loop.train(config, workdir / "decoder", decoder_task(config, decoder, decoder_loader),
                        hooks=hooks)
    if prior_result.preempted or result.preempted:
        return None
    prior_params, params = _params(prior_result), _params(result)

    key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)
    bench = t2i.benchmark(config, tok)
    best, first = prior_embeddings(run, prior, prior_params, encoder, bench.tokens, key)
    # The real 32x32 images the captions were written for, embedded by CLIP.
    splits = {s: shapeworld.load(s, 32, dd)["image"] for s in ("test", "test_compositional")}
    real32 = np.stack([splits[s.source[0]][s.source[1]] for s in bench.specs])
    true = clip_eval.image_embeddings(clip_model, clip_params, t2i.to_model_range(real32))
    text = encoder.encode_numpy(bench.tokens, embed=True)["embed"]
    size = config.data.image_size

    def decode(embeddings):
        return lambda tokens, key, **setting: t2i.sample(  # noqa: E731
            config, decoder, params, dict(encode_captions(decoder, params, tokens), cond=embeddings),
            key, (size, size, 3), **setting)

    score = t2i.scorer(config)
    metrics, images_by = t2i.evaluate(config, decode(best), t2i.settings(config), bench, score, key)
    metrics["prior_cosine"] = float(np.mean(np.sum(best * true, -1)))
    metrics["prior_cosine_single_sample"] = float(np.mean(np.sum(first * true, -1)))
    metrics["text_image_cosine"] = float(np.mean(np.sum(text * true, -1)))
    default = [s for s in t2i.settings(config) if s[0] == metrics["best_setting"]]
    oracle, _ = t2i.evaluate(config, decode(true), default, bench, score, key)
    metrics.update({f"oracle_{k}": v for k, v in oracle.items()
                    if k.startswith(("caption_accuracy", "clip_score", "fd_probe_steps"))})
    metrics_lib.write_eval(workdir, metrics, result.step)
    t2i.save_pictures(workdir, images_by, bench, metrics["best_setting"])
    single = [i for i, s in enumerate(bench.specs) if s.category == "single"]
    save_variations_and_interpolation(config, decoder, params, true[single],
                                      shapeworld.downsample(real32[single], size), workdir, key)
    return metrics


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
