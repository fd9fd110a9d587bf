"""VAE as a density estimator (Kingma & Welling 2014; k-sample importance bound, Burda et al. 2016).

Variants:
  cpu    scikit-learn's 8x8 digits, statically binarised (pixel >= 8 of 16), 64-200-200-8 tanh MLPs,
         Bernoulli decoder, Adam 1e-3 with cosine decay, 20000 steps of batch 100.
           python -m experiments.vae --config=experiments/configs/vae.py:cpu --workdir=/tmp/vae
         Measured on 2 CPU cores: test -ELBO 18.74 and test NLL (IWAE, k=5000) 16.30 nats/image
         in 1 min 15 s.
  paper  Burda et al.'s MNIST setting (Sec. 5): dynamically binarised MNIST, 784-200-200-50 tanh,
         batch 20, Adam(0.9, 0.999, eps 1e-4), lr 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7
         (3280 epochs), evaluated with k = 5000. Needs MNIST prepared in TFDS (array_record).
"""

import ml_collections

from jaxzoo.train.config import AtLeast, base_config
from jaxzoo.vae.model import ACTIVATIONS, LIKELIHOODS

VARIANTS = ("cpu", "paper")
CHOICES = {
    "data.name": ("digits", "mnist"),
    "data.binarize": ("static", "dynamic"),
    "model.likelihood": LIKELIHOODS,
    "model.activation": tuple(ACTIVATIONS),
    "optim.schedule": ("constant", "cosine", "iwae"),
    "eval.batch_size": AtLeast(1),
    "eval.chunk_size": AtLeast(1),
    "eval.num_importance_samples": AtLeast(1),
    "eval.max_examples": AtLeast(0),
}


def get_config(variant=None):
    c = base_config(variant, VARIANTS)
    variant = c.variant

    c.data = ml_collections.ConfigDict()
    c.data.data_dir = ""  # empty: $JAXZOO_DATA_DIR or ~/.cache/jaxzoo/tensorflow_datasets

    c.model = ml_collections.ConfigDict()
    c.model.hidden = (200, 200)
    c.model.likelihood = "bernoulli"
    c.model.activation = "tanh"

    c.optim = ml_collections.ConfigDict()
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-4

    c.eval = ml_collections.ConfigDict()
    c.eval.num_importance_samples = 5000
    c.eval.chunk_size = 500
    c.eval.batch_size = 100
    c.eval.max_examples = 0  # 0: the whole test split

    if variant == "cpu":
        c.data.name = "digits"
        c.data.binarize = "static"
        c.model.latent_dim = 8
        c.batch_size = 100
        c.total_steps = 20000
        c.optim.lr = 1e-3
        c.optim.schedule = "cosine"
        c.log_every = 100
        c.checkpoint_every = 2000
    else:
        c.data.name = "mnist"
        c.data.binarize = "dynamic"
        c.model.latent_dim = 50
        c.batch_size = 20
        steps_per_epoch = 60000 // 20
        c.total_steps = sum(3**i for i in range(8)) * steps_per_epoch  # 3280 epochs
        c.optim.lr = 1e-3
        c.optim.schedule = "iwae"  # 1e-3 * 10^(-i/7) for 3^i epochs
        c.optim.steps_per_epoch = steps_per_epoch
        c.log_every = 1000
        c.checkpoint_every = 100_000
    c.lock()
    return c
