"""jaxzoo: pure, fast, tested JAX/Flax reimplementations of a family of papers.

Layout (imports flow one way: core <- nn <- families <- experiments; checked by
tests/test_layering.py):
  jaxzoo.core     pure jax.numpy used by two or more families (attention, positional encodings,
                  RoPE, decoding, image metrics, Frechet distance, GAN losses)
  jaxzoo.nn       Flax building blocks used by two or more families
  jaxzoo.io       file formats (the torch-free .pth reader)
  jaxzoo.data     generic loading (step-indexed loader, TFDS helpers) and shared embedded data
  jaxzoo.train    the runtime every launcher shares, the two-network (GAN) step, the CLI
  jaxzoo.errors   the mistakes a user can fix, reported in one line
  jaxzoo.<family> one package per paper family: nerf, diffusion, sr, lm, vae
"""

__version__ = "0.2.0"
