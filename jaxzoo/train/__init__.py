"""The runtime every launcher shares: config, CLI, mesh, state, step, checkpoints, metrics,
progress, and the two-network (GAN) step."""
