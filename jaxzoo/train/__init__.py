"""The runtime every launcher shares: mesh, state, step, checkpoints, metrics, progress, config."""
