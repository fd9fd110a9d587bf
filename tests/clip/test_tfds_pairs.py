"""The paper variant's data path: image-text pairs from a prepared TFDS directory
(`training.TFDSPairs`) with a tokenizer.json, resized and tokenised row by row, then batched by
`training.training_loader`; on a tiny array_record dataset built here."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxzoo.clip import training
from jaxzoo.data import shapeworld, tfds_utils
from jaxzoo.train.config import load_config

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "star")
NUM = {"train": 8, "validation": 4}
H, W = 40, 48  # stored size: neither square nor the model's, so every row is resized
S, MAX_LEN = 32, 8


def _caption(i):
    return f"a {COLOURS[i % 4]} {SHAPES[i % 3]}" + (" on the left" if i % 2 else "")


def _image(i):
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


# skip_registration: the launcher opens the dataset from its files alone, as one prepared
# elsewhere with `tfds build`, not through a builder class it imports.
class TinyPairs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Random images with short captions: 8 train and 4 validation pairs."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(H, W, 3)), "text": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(0, NUM["train"]),
                "validation": self._generate_examples(100, NUM["validation"])}

    def _generate_examples(self, start, n):
        from PIL import Image

        for i in range(start, start + n):  # a PIL image is PNG-encoded without TensorFlow
            yield i, {"image": Image.fromarray(_image(i)), "text": _caption(i)}


def _train_tokenizer(path, texts):
    """A byte-level BPE tokenizer.json with ShapeWorld's special tokens and [BOS] text [EOS]."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=list(shapeworld.SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bos, eos = tok.token_to_id("[BOS]"), tok.token_to_id("[EOS]")
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", bos), ("[EOS]", eos)])
    tok.save(str(path))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    tfds_utils.prepare(TinyPairs, root)
    tokenizer_json = root / "tokenizer.json"
    _train_tokenizer(tokenizer_json, [_caption(i) for i in range(NUM["train"])])
    return load_config("experiments/configs/clip.py:paper", {
        "data.tfds_name": "tiny_pairs", "data.data_dir": str(root),
        "data.tokenizer": str(tokenizer_json), "data.image_size": str(S),
        "data.max_len": str(MAX_LEN), "batch_size": "4", "total_steps": "2",
        "optim.warmup_steps": "1", "model.patch_size": "8", "model.vision_width": "16",
        "model.vision_depth": "1", "model.vision_heads": "2", "model.text_width": "16",
        "model.text_depth": "1", "model.text_heads": "2", "model.embed_dim": "8"})


def test_tfds_pairs_resize_every_image_and_tokenise_its_caption(config):
    tok = training.tokenizer(config)
    source = tfds_utils.data_source("tiny_pairs", "validation", config.data.data_dir)
    pairs = training.TFDSPairs(config, "validation", tok)
    assert len(pairs) == NUM["validation"]
    bos, eos, pad = (tok.token_to_id(t) for t in ("[BOS]", "[EOS]", "[PAD]"))
    lengths, captions = [], []
    for i in range(len(pairs)):
        item = pairs[i]
        assert item["image"].shape == (S, S, 3) and item["image"].dtype == np.uint8
        stored = source[i]["text"]
        caption = stored if isinstance(stored, str) else bytes(stored).decode()
        captions.append(caption)
        ids = tok.encode(caption).ids
        assert ids[0] == bos and ids[-1] == eos
        lengths.append(len(ids))
        if len(ids) > MAX_LEN:  # a long caption keeps its first MAX_LEN - 1 tokens and [EOS]
            ids = ids[:MAX_LEN - 1] + ids[-1:]
        expected = np.full((1, MAX_LEN), pad, np.int32)
        expected[0, :len(ids)] = ids
        assert item["tokens"].dtype == np.int32
        np.testing.assert_array_equal(item["tokens"], expected)
        # The image is the stored one resized (bicubic), not some other row's.
        from PIL import Image

        resized = Image.fromarray(np.asarray(source[i]["image"])).resize((S, S), Image.BICUBIC)
        np.testing.assert_array_equal(item["image"], np.asarray(resized))
    assert sorted(captions) == sorted(_caption(100 + i) for i in range(NUM["validation"]))
    assert min(lengths) < MAX_LEN < max(lengths)  # both padding and truncation were exercised


def test_the_training_loader_batches_tfds_pairs(config):
    pairs = training.TFDSPairs(config, "train", training.tokenizer(config))
    loader = training.training_loader(config, pairs)
    for step in (0, 1, 2):  # step 2 wraps into the second epoch
        batch = loader.batch(step)
        assert batch["image"].shape == (4, S, S, 3) and batch["image"].dtype == np.float32
        assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        assert batch["tokens"].shape == (4, MAX_LEN) and batch["tokens"].dtype == np.int32
    np.testing.assert_array_equal(loader.batch(1)["tokens"], loader.batch(1)["tokens"])


def test_the_paper_text_tower_pools_at_the_tokenizers_own_end_token(config, tmp_path):
    import jax
    import jax.numpy as jnp
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    # A tokenizer laid out like CLIP's: no [PAD], start and end tokens of its own.
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([_caption(i) for i in range(8)], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    sot, eot = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", sot), ("<|endoftext|>", eot)])
    model = training.make_model(config, "softmax", **training.text_spec(tok))
    tokens = jnp.asarray(shapeworld.encode(tok, ["a red circle", "a blue star on the left"],
                                           MAX_LEN)[0])
    variables = jax.jit(model.init)(jax.random.key(0), tokens, jnp.zeros((1, S, S, 3)))
    embeds = np.asarray(model.apply(variables, tokens, method=model.encode_text))
    # Different captions must not share one embedding (pooling at [BOS], before any word).
    assert np.abs(embeds[0] - embeds[1]).max() > 1e-4


def test_glide_paper_variant_trains_on_tfds_pairs_and_draws_validation_captions(config, tmp_path):
    """GLIDE reads the same prepared pairs (its paper variant's data path) and, with no ShapeWorld
    probe to score them, draws the first validation captions."""
    from experiments import glide

    d = config.data
    g = load_config("experiments/configs/glide.py:paper", {
        "data.tfds_name": "tiny_pairs", "data.data_dir": d.data_dir, "data.tokenizer": d.tokenizer,
        "data.image_size": "16", "data.max_len": str(MAX_LEN), "batch_size": "4", "total_steps": "2",
        "optim.warmup_steps": "1", "model.text_width": "8", "model.text_depth": "1",
        "model.text_heads": "2", "model.channels": "8", "model.channel_mult": "(1, 2)",
        "model.num_res_blocks": "1", "model.attention_resolutions": "(8,)", "model.num_heads": "2",
        "model.num_groups": "4", "eval.sweep_steps": "2", "log_every": "1", "checkpoint_every": "2"})
    assert glide.train_and_evaluate(g, tmp_path) is None
    assert (tmp_path / "samples.png").stat().st_size > 0 and (tmp_path / "checkpoints").is_dir()
    assert not (tmp_path / "eval.json").exists()
