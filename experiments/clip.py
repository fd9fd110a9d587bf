"""CLIP / SigLIP launcher: contrastive image-text pretraining on ShapeWorld (or TFDS pairs), then
zero-shot classification and retrieval.

    python -m experiments.clip --config=experiments/configs/clip.py:cpu --workdir=workdirs/clip

Trains one model per loss in `losses` (softmax: CLIP Fig. 3; sigmoid: SigLIP Eq. 1) at the same
budget, each in `workdir/<loss>/` through the shared runtime (resumable). Writes eval.json with,
per loss, `<loss>_zero_shot_seen` and `<loss>_zero_shot_compositional` (top-1 accuracy over all
36 shape-colour classes, prompt-ensembled, on the single-object images of the test split and of
the compositional split, whose pairs were never trained on), `<loss>_image_to_text_r@{1,5,10}`
and `<loss>_text_to_image_r@{1,5,10}` (the first `eval.num_retrieval` test images and their first
captions), and the learned temperature; plus similarity_<loss>.png (cosine similarities of
`eval.num_pictures` test pairs: images across, captions down) and zero_shot_<loss>.png
(compositional test images with the predicted class, green if right). On ShapeWorld, the model of
`adapt.loss` is then adapted, frozen, to `adapt.task` three ways (`jaxzoo.clip.adapt`, Bahng et
al. 2022): `adapt_{fine_tune,linear_probe,visual_prompt}_{accuracy,params}` (test accuracy and
trained parameters) beside the label-mapped `adapt_zero_shot_accuracy`.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
from PIL import Image, ImageDraw

from jaxzoo.clip import adapt, evaluation, training
from jaxzoo.data import shapeworld
from jaxzoo.errors import ConfigError
from jaxzoo.train import cli, loop, mesh as mesh_lib, metrics as metrics_lib


def single_object(data: dict):
    """(images uint8, class labels) of the single-object images of a ShapeWorld split."""
    keep = data["num_objects"] == 1
    return data["image"][keep], shapeworld.pair_index(data["shape"][keep, 0], data["colour"][keep, 0])


def retrieval_pairs(config, tok):
    """(images uint8 [n, S, S, 3], first captions' token ids [n, max_len], caption texts or
    None) of the first `eval.num_retrieval` test (ShapeWorld) or validation (TFDS) pairs."""
    d, n = config.data, config.eval.num_retrieval
    if d.name == "tfds":
        pairs = training.TFDSPairs(config, "validation", tok)
        rows = [pairs[i] for i in range(min(n, len(pairs)))]
        return np.stack([r["image"] for r in rows]), np.stack([r["tokens"][0] for r in rows]), None
    test = shapeworld.load("test", d.image_size, d.data_dir or None)
    captions = [c[0] for c in test["captions"][:n]]
    return test["image"][:n], shapeworld.encode(tok, captions, d.max_len)[0], captions


def evaluate(config, model, params, tok, workdir: pathlib.Path, loss: str) -> dict:
    """Zero-shot accuracy (ShapeWorld only) and retrieval R@K of one trained model."""
    d, e = config.data, config.eval
    out = {f"{loss}_temperature": float(np.exp(params["params"]["logit_scale"]))}
    if d.name == "shapeworld":
        tokenize = lambda texts: shapeworld.encode(tok, texts, d.max_len)[0]  # noqa: E731
        classes = evaluation.zero_shot_classifier(model, params, tokenize, shapeworld.class_names())
        out.update(zero_shot(config, model, params, classes, workdir, loss))
        if loss == config.adapt.loss:
            out.update(adaptation(config, model, params, classes))
    images, tokens, captions = retrieval_pairs(config, tok)
    image_embeds = evaluation.image_embeddings(model, params, training.to_model_range(images), e.batch_size)
    text_embeds = evaluation.text_embeddings(model, params, tokens, e.batch_size)
    out.update({f"{loss}_{k}": v for k, v in evaluation.retrieval(image_embeds, text_embeds).items()})
    out["num_retrieval"] = len(images)
    k = min(e.num_pictures, len(images))
    save_similarity_picture(workdir / f"similarity_{loss}.png", images[:k],
                            captions[:k] if captions else [str(i) for i in range(k)],
                            image_embeds[:k] @ text_embeds[:k].T)
    return out


def zero_shot(config, model, params, classes, workdir: pathlib.Path, loss: str) -> dict:
    """Top-1 accuracy over the 36 shape-colour classes (`classes`: their prompt-ensembled text
    embeddings [36, E]) on single-object test images, seen pairs and the compositional split;
    zero_shot_<loss>.png shows compositional predictions."""
    d, e = config.data, config.eval
    out = {}
    splits = {split: shapeworld.load(split, d.image_size, d.data_dir or None)
              for split in ("test", "test_compositional")}
    for name, split in (("seen", "test"), ("compositional", "test_compositional")):
        images, labels = single_object(splits[split])
        embeds = evaluation.image_embeddings(model, params, training.to_model_range(images), e.batch_size)
        out[f"{loss}_zero_shot_{name}"] = evaluation.zero_shot_accuracy(embeds, labels, classes)
        out[f"num_zero_shot_{name}"] = int(len(labels))
        if name == "compositional":
            predicted = np.argmax(embeds @ classes.T, axis=1)
            save_zero_shot_picture(workdir / f"zero_shot_{loss}.png", images[:e.num_pictures],
                                   predicted[:e.num_pictures], labels[:e.num_pictures])
    return out


def adaptation(config, model, params, classes) -> dict:
    """The frozen-CLIP adaptation study (`jaxzoo.clip.adapt.study`, Bahng et al. 2022) on
    `adapt.task`, downstream class k read through `classes[k]`, the zero-shot text embedding of
    ShapeWorld's k-th class name (label mapping: the text tower knows no other words)."""
    d = config.data
    return adapt.study(model, params, classes, config.adapt, image_size=d.image_size,
                       data_dir=d.data_dir or None, seed=config.seed)


def save_similarity_picture(path, images, captions, similarity) -> None:
    """Images across the top, captions down the left, cells shaded by cosine similarity (white:
    the row's highest), the matching pairs on the diagonal outlined."""
    if jax.process_index() != 0 or not len(images):
        return
    n, cell, text_w = len(images), 40, 230
    canvas = Image.new("RGB", (text_w + n * cell, cell + n * cell), "white")
    draw = ImageDraw.Draw(canvas)
    lo, hi = similarity.min(), similarity.max()
    for j, img in enumerate(images):
        canvas.paste(Image.fromarray(img).resize((cell - 4, cell - 4), Image.NEAREST),
                     (text_w + j * cell + 2, 2))
    for i in range(n):
        draw.text((2, cell + i * cell + cell // 3), captions[i][:38], fill=(0, 0, 0))
        for j in range(n):
            v = int(255 * (similarity[i, j] - lo) / max(hi - lo, 1e-9))
            x, y = text_w + j * cell, cell + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(v // 3, v // 2 + 40, v))
        draw.rectangle([text_w + i * cell, cell + i * cell, text_w + (i + 1) * cell - 1,
                        cell + (i + 1) * cell - 1], outline=(255, 60, 60), width=2)
    canvas.save(path)


def save_zero_shot_picture(path, images, predicted, labels) -> None:
    if jax.process_index() != 0 or not len(images):
        return
    names = shapeworld.class_names()
    cols, cell = 4, 128
    rows = -(-len(images) // cols)
    canvas = Image.new("RGB", (cols * cell, rows * (cell + 16)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (img, p, t) in enumerate(zip(images, predicted, labels)):
        x, y = (k % cols) * cell, (k // cols) * (cell + 16)
        canvas.paste(Image.fromarray(img).resize((cell - 8, cell - 8), Image.NEAREST), (x + 4, y + 4))
        draw.text((x + 4, y + cell - 2), names[p], fill=(0, 140, 0) if p == t else (200, 0, 0))
    canvas.save(path)


def train_and_evaluate(config, workdir, hooks=()):
    """Trains each loss of `config.losses`, then evaluates it; writes eval.json (None if
    preempted)."""
    workdir = pathlib.Path(workdir)
    training.check_image_size(config)
    if config.adapt.loss and config.data.name != "shapeworld":
        raise ConfigError(f"adapt.loss={config.adapt.loss!r} needs data.name='shapeworld' (the "
                          "study reads digits through ShapeWorld class names); set adapt.loss=''")
    tok = training.tokenizer(config)
    if config.data.name == "shapeworld":
        pairs = training.shapeworld_pairs(config, "train", tok)
    else:
        if not config.data.tfds_name:
            raise ConfigError("data.name='tfds' needs --config.data.tfds_name=<prepared dataset>")
        pairs = training.TFDSPairs(config, "train", tok)
    metrics, step = {}, 0
    for loss in config.losses:
        run = training.run_config(config, loss)
        model = training.make_model(run, loss, **training.text_spec(tok))
        task = training.task(run, model, training.training_loader(run, pairs))
        result = loop.train(run, workdir / loss, task, hooks=hooks)
        if result.preempted:
            return None
        params = mesh_lib.to_host(result.state.params)
        metrics.update(evaluate(run, model, params, tok, workdir, loss))
        step = result.step
    return metrics_lib.write_eval(workdir, metrics, step)


if __name__ == "__main__":
    cli.run(lambda args: train_and_evaluate(args.config, args.workdir))
