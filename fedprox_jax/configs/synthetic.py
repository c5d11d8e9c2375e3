"""FedProx on the paper's synthetic data: Synthetic-IID, (0,0), (0.5,0.5), (1,1).

    python -m fedprox_jax.run --config=configs/synthetic.py:1_1 --workdir=/tmp/synthetic_1_1
    python -m fedprox_jax.run --config=configs/synthetic.py:iid --config.algorithm.mu=0

The paper's settings: 30 devices, multinomial logistic regression on 60 features, lr 0.01,
batch 10, E = 20, 10 devices a round, 200 rounds, mu = 1, no stragglers (its Figure 2), with the
dissimilarity of local gradients logged every round. The data are generated from data.seed: no
download.
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox

# variant -> (alpha, beta, iid)
VARIANTS = {
    'iid': (0.0, 0.0, True),
    '0_0': (0.0, 0.0, False),
    '0.5_0.5': (0.5, 0.5, False),
    '1_1': (1.0, 1.0, False)
}


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  variant = variant or '1_1'
  if variant not in VARIANTS:
    raise ValueError(f'unknown synthetic variant {variant!r}; one of {", ".join(VARIANTS)}')
  alpha, beta, iid = VARIANTS[variant]
  c = mnist_fedprox.get_config()
  c.num_rounds = 200
  c.data = ml_collections.ConfigDict()
  c.data.name = 'synthetic'
  c.data.variant = variant  # A label; alpha, beta and iid below define the data.
  c.data.alpha = alpha  # Std of u_k: how much the devices' models differ.
  c.data.beta = beta  # Std of B_k: how much the devices' inputs differ.
  c.data.iid = iid  # One shared model and v = 0 (Synthetic-IID).
  c.data.num_clients = 30
  c.data.dim = 60
  c.data.num_classes = 10
  c.data.train_fraction = 0.9
  c.data.seed = 0
  c.client.learning_rate = 0.01
  c.client.local_epochs = 20
  c.client.weight_decay = 0.0
  c.algorithm.mu = 1.0
  c.stragglers.fraction = 0.0
  c.eval.dissimilarity = True
  return c
