"""The config keys experiments/configs/gpt.py and rope_extrapolation.py share: data, model and
optimiser keys read by `jaxzoo.lm.training`, with the cpu / paper values both launchers train
with, and their allowed values."""

import ml_collections

from jaxzoo.core import attention
from jaxzoo.lm.gpt import POSITIONS
from jaxzoo.train.config import AtLeast

# The enumerated keys and their allowed values (`jaxzoo.train.config.validate`).
CHOICES = {
    "data.name": ("pystdlib", "tokens"),
    "model.position": POSITIONS,
    "model.attention_impl": attention.IMPLS,
    "seq_len": AtLeast(1),
    "data.max_train_bytes": AtLeast(0),
    "model.num_layers": AtLeast(1),
    "model.num_heads": AtLeast(1),
    "model.d_model": AtLeast(1),
    "optim.warmup_steps": AtLeast(0),
    "eval.max_tokens": AtLeast(0),
}


def add_gpt_keys(c: ml_collections.ConfigDict, variant: str) -> None:
    """Adds `data`, `model` and `optim` (and the cpu / paper sizes, lr and logging) to `c`."""
    c.data = ml_collections.ConfigDict()
    c.data.name = "pystdlib"  # pystdlib | tokens (uint16 token files)
    c.data.data_dir = ""  # pystdlib TFDS dir; empty: $JAXZOO_DATA_DIR or ~/.cache/jaxzoo/...
    c.data.train_path = ""  # tokens: uint16 .bin files
    c.data.test_path = ""
    c.data.max_train_bytes = 0  # pystdlib: 0 = every train file
    c.data.vocab_size = 257  # tokens: the tokenizer's vocabulary (50257 for GPT-2 BPE)

    c.model = ml_collections.ConfigDict()
    c.model.position = "rope"  # learned | sinusoidal | rope | t5 | none
    c.model.rope_base = 10000.0
    c.model.num_kv_heads = 0
    c.model.dropout = 0.0
    c.model.attention_impl = "xla"  # xla | chunked
    c.model.num_layers = 4 if variant == "cpu" else 12
    c.model.num_heads = 4 if variant == "cpu" else 12
    c.model.d_model = 128 if variant == "cpu" else 768

    c.optim = ml_collections.ConfigDict()
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.1
    c.optim.clip_norm = 1.0
    c.optim.lr = 2e-3 if variant == "cpu" else 6e-4
    c.optim.warmup_steps = 100

    c.log_every = 100
    if variant == "paper":
        c.data.name = "tokens"
        c.data.vocab_size = 50257
