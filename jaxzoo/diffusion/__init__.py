"""Diffusion models: the Gaussian process and its schedules (`gaussian`, pure), scanned samplers
(`samplers`, pure), the U-Net (`unet`), sample scoring (`evaluation`), and text-to-image: GLIDE's
text-conditioned U-Net (`glide`), DALL-E 2's diffusion prior (`prior`), the ShapeWorld attribute
probe (`probe`) and the runtime the GLIDE, Imagen and DALL-E 2 launchers share (`text_to_image`)."""
