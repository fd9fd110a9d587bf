"""Pure jax.numpy kernels shared by two or more families: no flax, optax, orbax or I/O."""
