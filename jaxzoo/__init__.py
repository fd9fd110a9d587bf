"""jaxzoo: pure, fast, tested JAX/Flax reimplementations of a family of papers.

Layout (imports flow one way: experiments -> jaxzoo.models -> jaxzoo.core):
  jaxzoo.core    pure jax.numpy functions (no flax, optax, orbax or I/O)
  jaxzoo.models  Flax Linen modules, one file per paper family
  jaxzoo.data    TFDS builders (array_record, no TensorFlow) and step-indexed loaders
  jaxzoo.train   the small runtime every launcher shares
"""

__version__ = "0.1.0"
