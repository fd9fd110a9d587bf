"""NeRF (Mildenhall et al. 2020): pure rendering (`render`), the model (`model`), Blender and
LLFF loaders (`blender`, `llff`) and the embedded procedural scene (`scene`)."""
