"""Flax building blocks shared by two or more paper families. A block moves here from its family
when a second family needs it (the transformer blocks arrive with CLIP)."""
