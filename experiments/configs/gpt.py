"""GPT (Radford et al. 2018, 2019): a decoder-only byte- or BPE-level language model.

Variants:
  cpu    the Python standard library's own source (jaxzoo.data.pycorpus: byte-level, 257 ids,
         train/test split by file, built on first use, no download), 4 layers x 128 wide, 4
         heads, RoPE, context 128, batch 16, 3000 steps of AdamW 2e-3 (0.9, 0.95, weight decay
         0.1, 100 warmup steps, cosine to 10%), gradient clipping 1.0.
           python -m experiments.gpt --config=experiments/configs/gpt.py:cpu --workdir=workdirs/gpt
         Writes eval.json with test_loss (nats/token) and test_bits_per_byte on the held-out files,
         and samples.txt. Measured on 2 idle CPU cores: test 1.814 bits/byte (loss 1.257
         nats/token, next-byte accuracy 0.665; zlib -9 needs 1.96 bits/byte on the same files)
         in 6 min 1 s including the corpus build check and evaluation.
  paper  GPT-2 small shapes (Radford et al. 2019, Table 2: 12 layers, d_model 768, 12 heads,
         context 1024, vocabulary 50257, learned positions, tied output layer: 124,439,808
         parameters)
         with GPT-3's optimiser for its 125M model (Brown et al. 2020, Table 2.1 and App. B:
         batch 0.5M tokens = 512 x 1024, lr 6e-4, Adam (0.9, 0.95) eps 1e-8, cosine decay to 10%,
         375M warmup tokens, weight decay 0.1, gradient clipping 1.0). Data: GPT-2 BPE token
         files on disk (uint16, nanoGPT's train.bin / val.bin layout):
           --config.data.train_path=/data/owt/train.bin --config.data.test_path=/data/owt/val.bin
"""

import ml_collections

from jaxzoo.lm import configs as lm_configs
from jaxzoo.train.config import AtLeast, base_config

VARIANTS = ("cpu", "paper")
CHOICES = {**lm_configs.CHOICES, "eval.batch_size": AtLeast(1), "eval.sample_tokens": AtLeast(0)}


def get_config(variant=None):
    c = base_config(variant, VARIANTS)
    variant = c.variant

    lm_configs.add_gpt_keys(c, variant)

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 32
    c.eval.max_tokens = 0  # 0: the whole test stream
    c.eval.sample_prompt = "def "
    c.eval.sample_tokens = 256
    c.eval.temperature = 0.8
    c.eval.top_p = 0.95

    if variant == "cpu":
        c.model.max_len = 128
        c.seq_len = 128
        c.batch_size = 16
        c.total_steps = 3000
        c.checkpoint_every = 1000
    else:
        c.model.position = "learned"
        c.model.max_len = 1024
        c.seq_len = 1024
        c.batch_size = 512
        c.total_steps = 600_000
        c.optim.warmup_steps = 715  # 375M tokens / 0.5M tokens per step
        c.eval.max_tokens = 10_000_000
        c.eval.sample_prompt = ""
        c.checkpoint_every = 5000
    c.lock()
    return c
