"""Flax Linen modules, one file per paper family."""
