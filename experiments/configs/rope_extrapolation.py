"""Length extrapolation of positional encodings and RoPE context extension (Su's ReRoPE study).

One GPT per trained encoding (`encodings`: rope, sinusoidal, t5, learned), each trained at length
L = `seq_len` with experiments/gpt.py's model, optimiser and loss; then every method row is scored
(next-token loss and accuracy on the held-out stream, non-overlapping windows) at
`eval.length_multiples` x L. The RoPE rows (rope, pi, ntk, dynamic_ntk, yarn, ntk_logn, rerope,
pi_matched, ntk_matched, yarn_matched) all evaluate the one RoPE-trained model under a different
inference-time config; see experiments/rope_extrapolation.py for each row's exact settings.

Variants:
  cpu    the Python standard library corpus (byte-level, built on first use, no download); 4
         layers x 96 wide, 4 heads (head_dim 24, 0.47M parameters), chunked attention kernel,
         L = 128, batch 16, AdamW 2e-3 (0.9, 0.95, weight decay 0.1, 100 warmup steps, cosine to
         10%), 1000 steps per model; every cell scores the same 65,536 target tokens (32 windows
         at 16 x L = 2048). Static scalings use
         s = 16 at every length; ReRoPE window w = L / 2 = 64.
           nice -n 5 python -m experiments.rope_extrapolation \
             --config=experiments/configs/rope_extrapolation.py:cpu --workdir=workdirs/rope_extrapolation
         Measured: 8 min 31 s on 2 idle CPU cores. Next-byte accuracy (%) on held-out files:

           | method | 1x (128) | 4x (512) | 8x (1024) | 16x (2048) |
           |---|---:|---:|---:|---:|
           | RoPE, no scaling | 52.23 | 41.91 | 35.02 | 30.56 |
           | PI (s = 16) | 24.08 | 22.77 | 22.15 | 21.84 |
           | NTK (s = 16) | 49.41 | 49.09 | 44.66 | 38.04 |
           | dynamic NTK | 52.23 | 47.91 | 42.72 | 38.04 |
           | YaRN (s = 16) | 45.49 | 40.70 | 39.27 | 38.36 |
           | NTK + logn (s = 16) | 49.41 | 49.38 | 45.30 | 38.67 |
           | ReRoPE | 52.21 | 52.49 | 52.10 | 51.30 |
           | sinusoidal | 43.29 | 23.64 | 18.90 | 16.10 |
           | T5 bias | 42.37 | 37.85 | 34.62 | 32.48 |
           | learned absolute | 45.35 | 27.25 | 24.85 | 22.85 |

         At 8x and 16x our order of Su's five rows is his (PI < no scaling < NTK < NTK-logn <
         ReRoPE); NTK-logn's margin over NTK is 0.6 points at 16x.
  paper  Su's setting (Su 2023, "Rectified Rotary Position Embeddings" / ReRoPE, and "NTK-aware
         scaled RoPE"): a ~100M-parameter model (12 layers, d_model 768, 12 heads, head_dim 64,
         85M non-embedding parameters + the token table) trained at L = 512 and evaluated at
         1x, 4x, 8x, 16x L (up to 8192; Su's table reports 4096 = 8 x L), ReRoPE w = 256 as in
         Su's post, static factor s = 16. GPT-2 BPE token files on disk (uint16, nanoGPT layout):
           --config.data.train_path=/data/owt/train.bin --config.data.test_path=/data/owt/val.bin
         Batch 256 x 512 tokens, 100k steps, AdamW 6e-4; evaluation uses the chunked (memory
         linear in length) attention kernel and 2M tokens per cell. ReRoPE's two-pass reference
         attention materialises [batch, heads, n, n] scores: at n = 8192 that is 3.2 GB per
         sequence per tensor, so `eval.batch_tokens` stays at one 8192-token sequence per batch.
         Meant for an accelerator.
"""

import ml_collections

from jaxzoo.lm import configs as lm_configs
from jaxzoo.train.config import AtLeast, base_config

VARIANTS = ("cpu", "paper")
CHOICES = {**lm_configs.CHOICES, "eval.attention_impl": lm_configs.CHOICES["model.attention_impl"],
           "eval.batch_tokens": AtLeast(1), "eval.rerope_window": AtLeast(0)}


def get_config(variant=None):
    c = base_config(variant, VARIANTS)
    variant = c.variant
    c.encodings = ("rope", "sinusoidal", "t5", "learned")  # one trained model each

    # experiments/gpt.py's keys; `position` and `max_len` are set per encoding (max_len = L, or
    # max(length_multiples) x L for "learned" so its table has rows for the long windows).
    lm_configs.add_gpt_keys(c, variant)

    c.eval = ml_collections.ConfigDict()
    c.eval.length_multiples = (1, 4, 8, 16)  # evaluation lengths n = multiple x L
    # Target tokens scored per cell, the same at every length: a multiple of max(multiples) x L,
    # so every length scores the same tokens of the test stream.
    c.eval.max_tokens = 65536
    c.eval.batch_tokens = 4096  # windows per batch = max(1, batch_tokens // n)
    c.eval.scale_factor = 16.0  # s of the static pi / ntk / yarn / ntk_logn rows
    c.eval.rerope_window = 0  # 0: L // 2 (Su: w = 256 at L = 512)
    # Evaluation kernel for all rows but rerope (its own two-pass reference). "chunked" keeps
    # memory linear in n and is also the faster one on CPU at 2048 tokens (about 4x).
    c.eval.attention_impl = "chunked"  # xla | chunked

    if variant == "cpu":
        c.model.d_model = 96
        c.model.attention_impl = "chunked"  # the kernel the measured table was trained with
        c.seq_len = 128
        c.batch_size = 16
        c.total_steps = 1000
        c.checkpoint_every = 400
    else:
        c.seq_len = 512
        c.batch_size = 256
        c.total_steps = 100_000
        c.optim.warmup_steps = 2000
        c.checkpoint_every = 5000
        c.eval.max_tokens = 2 ** 21  # 256 windows of 8192
        c.eval.batch_tokens = 8192
    c.lock()
    return c
