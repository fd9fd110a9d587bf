"""CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023): the model (`model`), the
contrastive and sigmoid losses, zero-shot classification and retrieval (`losses`, pure), and
Hugging Face weights (`hf`)."""
