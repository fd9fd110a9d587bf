"""CLIP (Radford et al. 2021, arXiv 2103.00020) and SigLIP (Zhai et al. 2023, arXiv 2303.15343):
contrastive image-text pretraining, each loss trained at the same budget in its own subdirectory.

Variants:
  cpu    ShapeWorld 32x32 (jaxzoo.data.shapeworld: 20,000 train images with 5 captions each,
         generated on first use), trained on its 11,990 images with at most two objects; a
         ConvNet image tower (jaxzoo.nn.towers.ConvNet: three stages of one 3x3 convolution,
         ReLU and a 2x2 max-pool, widths 32/64/128, global mean) and a causal text transformer
         (width 64, 2 blocks, 4 heads, 24 tokens, ShapeWorld's byte-level BPE) into 64-d
         embeddings; batch 128 pairs, one random caption per image and step, AdamW 2e-3 (0.9,
         0.98, eps 1e-6, weight decay 0.2 on matrices), 100 warmup steps then cosine; 1,200
         steps per loss. SigLIP's bias starts at -5 (about -log of the batch: the paper's -10
         suits its 32k batch and barely moves here).
           python -m experiments.clip --config=experiments/configs/clip.py:cpu --workdir=workdirs/clip
         Measured on 2 CPU cores from an empty data directory (ShapeWorld and digits generated
         in the run, 35 s): 8 min 13 s for both losses and the adaptation study. Zero-shot
         accuracy over the 36 classes on single-object test images: CLIP 0.990 (seen pairs)
         and 0.690 (compositional: 6 pairs never trained on), SigLIP 0.923 and 0.533; with
         seeds 1 and 2 (--config.seed) CLIP 0.989 and 0.989 (compositional 0.646, 0.748),
         SigLIP 0.928 and 0.965 (0.613, 0.834). Retrieval R@1 over 1,000 test pairs (1-4
         objects), image-to-text / text-to-image: CLIP 0.468 / 0.460, SigLIP 0.393 / 0.303.
         Adaptation study (adapt.*: the frozen CLIP-loss model on scikit-learn's digits
         upsampled to 32x32, digit k read as ShapeWorld class k): test accuracy zero-shot
         0.104, visual prompt 0.744 (1,344 trained parameters: a 4-pixel frame, Adam 0.03, 300
         steps), linear probe 0.828 (650), full fine-tuning 0.990 (102,090; 150 steps).
         Why a ConvNet and at most two objects: the small ViT first tried
         (--config.model.vision_tower=vit: 8x8 patches from an early-convolution stem, width
         64, 3 blocks, 4 heads, mean pooling; 2,500 steps on images of 1-4 objects, 10 min 27 s
         with the study) read colours perfectly and shapes at chance: zero-shot 0.217 (CLIP)
         and 0.203 (SigLIP), retrieval R@1 0.326 / 0.308 and 0.316 / 0.290. A linear probe of
         shape on its image embeddings scored 0.34, though the same ViT trained supervised on
         shape alone reached 0.89: contrastive training at this budget takes the colour
         shortcut. Single-object images only (data.max_objects=1) taught the ViT shapes late and
         seed-dependently (CLIP 0.925, 0.535, 0.339; SigLIP collapsed to 0.063: many captions,
         "a red shape", fit several images of such a batch). The ConvNet learns shapes: CLIP
         zero-shot in side runs of 1,500 steps on 1-4 objects 0.944 (0.887 in the launcher at
         1,200 steps; two convolutions per stage: 0.997 at 1,500 but twice the cost; widths
         16/32/64: 0.73), and on at most two objects 0.987 after 800 of 1,200 steps (SigLIP
         0.966 at 1,200), where most captions name single objects and pairs.
  paper  CLIP's ViT-B/32 recipe (Sec. 2.4-2.5, Table 20): 224x224 images, patch 32, width 768,
         12 blocks, 12 heads; text width 512, 12 blocks, 8 heads, 77 tokens; 512-d embeddings;
         batch 32,768, AdamW lr 5e-4 (0.9, 0.98, eps 1e-6, weight decay 0.2), 2,000 warmup steps
         then cosine, 32 epochs of 400M pairs (390,625 steps). Image-text pairs from a prepared
         TFDS directory (array_record) and a tokenizer.json:
           --config.data.tfds_name=my_pairs --config.data.tokenizer=/path/tokenizer.json
         The text tower pools at that tokenizer's own end token. No adaptation study (adapt.loss
         is "": it reads digits through ShapeWorld class names).
"""

import ml_collections

from jaxzoo.clip import adapt
from jaxzoo.clip.model import LOSSES
from jaxzoo.nn.towers import VIT_POOLS
from jaxzoo.nn.transformer import ACTIVATIONS
from jaxzoo.train.config import AtLeast, base_config

VARIANTS = ("cpu", "paper")
CHOICES = {
    "losses": LOSSES,
    "data.name": ("shapeworld", "tfds"),
    "data.image_size": AtLeast(8),
    "data.max_len": AtLeast(3),
    "data.max_objects": AtLeast(1),
    "model.vision_tower": ("vit", "cnn"),
    "model.cnn_convs": AtLeast(1),
    "model.vision_pool": VIT_POOLS,
    "model.vision_position": ("learned", "sincos2d"),
    "model.vision_stem": ("patch", "conv"),
    "model.activation": tuple(ACTIVATIONS),
    "model.patch_size": AtLeast(1),
    "model.embed_dim": AtLeast(1),
    "optim.warmup_steps": AtLeast(0),
    "eval.batch_size": AtLeast(1),
    "eval.num_retrieval": AtLeast(2),
    "eval.num_pictures": AtLeast(0),
    "adapt.loss": ("", *LOSSES),
    "adapt.task": adapt.TASKS,
    "adapt.pad": AtLeast(1),
    "adapt.batch_size": AtLeast(1),
    "adapt.fine_tune_steps": AtLeast(0),
    "adapt.prompt_steps": AtLeast(0),
}


def get_config(variant=None):
    c = base_config(variant, VARIANTS)
    variant = c.variant
    c.losses = ("softmax", "sigmoid")  # each trained in workdir/<loss>/ at the same budget

    c.data = ml_collections.ConfigDict()
    c.data.name = "shapeworld"  # shapeworld | tfds (image-text pairs)
    c.data.data_dir = ""  # TFDS dir; empty: $JAXZOO_DATA_DIR or ~/.cache/jaxzoo/tensorflow_datasets
    c.data.tfds_name = ""  # tfds: the prepared dataset, with `image` and `text` features
    c.data.tokenizer = ""  # tfds: a tokenizer.json (Hugging Face tokenizers)
    c.data.image_key = "image"
    c.data.max_objects = 4  # shapeworld: train on the images with at most this many objects
    c.data.text_key = "text"

    c.model = ml_collections.ConfigDict()
    c.model.vision_tower = "vit"  # vit | cnn (jaxzoo.nn.towers.ConvNet: cnn_widths, cnn_convs)
    c.model.cnn_widths = (32, 64, 128)  # one max-pooled stage per width
    c.model.cnn_convs = 1  # 3x3 convolutions per stage
    c.model.vision_pool = "cls"
    c.model.vision_position = "learned"
    c.model.vision_stem = "patch"  # patch (a linear patch embedding) | conv (early convolutions)
    c.model.activation = "quick_gelu"
    c.model.sigmoid_bias_init = -10.0  # SigLIP's b_0 (Sec. 3.2, for batch 32k)

    c.optim = ml_collections.ConfigDict()
    c.optim.b1 = 0.9
    c.optim.b2 = 0.98
    c.optim.eps = 1e-6
    c.optim.weight_decay = 0.2

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 256
    c.eval.num_retrieval = 1000  # test pairs (image, first caption) scored both ways
    c.eval.num_pictures = 16  # pairs in similarity.png and zero_shot.png

    # Adapting the frozen model of `adapt.loss` ("": none) to `adapt.task` three ways (ShapeWorld
    # runs only: downstream classes are read through ShapeWorld class names).
    c.adapt = adapt.study_config()
    c.adapt.loss = "softmax"

    if variant == "cpu":
        c.data.image_size = 32
        c.data.max_len = 24
        c.data.max_objects = 2
        c.model.vision_tower = "cnn"
        c.model.patch_size = 8  # the ViT's, with --config.model.vision_tower=vit
        c.model.vision_stem = "conv"
        c.model.vision_pool = "mean"
        c.model.sigmoid_bias_init = -5.0
        c.model.vision_width, c.model.vision_depth, c.model.vision_heads = 64, 3, 4
        c.model.text_width, c.model.text_depth, c.model.text_heads = 64, 2, 4
        c.model.embed_dim = 64
        c.batch_size = 128
        c.total_steps = 1200
        c.optim.lr = 2e-3
        c.optim.warmup_steps = 100
        c.log_every = 100
        c.checkpoint_every = 1000
    else:
        c.data.name = "tfds"
        c.data.image_size = 224
        c.data.max_len = 77
        c.model.patch_size = 32
        c.model.vision_width, c.model.vision_depth, c.model.vision_heads = 768, 12, 12
        c.model.text_width, c.model.text_depth, c.model.text_heads = 512, 12, 8
        c.model.embed_dim = 512
        c.batch_size = 32768
        c.total_steps = 390_625
        c.optim.lr = 5e-4
        c.optim.warmup_steps = 2000
        c.log_every = 100
        c.checkpoint_every = 5000
        c.eval.num_retrieval = 5000
        c.adapt.loss = ""
    c.lock()
    return c
