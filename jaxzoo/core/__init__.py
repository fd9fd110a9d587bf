"""Pure jax.numpy kernels: no flax, optax, orbax or I/O."""
