"""Diffusion models: the Gaussian process and its schedules (`gaussian`, pure), scanned samplers
(`samplers`, pure), the U-Net (`unet`) and sample scoring (`evaluation`)."""
