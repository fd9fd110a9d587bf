"""Variational autoencoders as density estimators: the ELBO and IWAE bound (`elbo`, pure) and the
model (`model`)."""
