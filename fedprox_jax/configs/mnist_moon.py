"""MOON on federated MNIST with the CNN, the setting of its comparison with FedAvg and FedProx
(configs/sweeps/mnist_moon.py).

    python -m fedprox_jax.run --config=mnist_moon --workdir=/tmp/moon

MOON contrasts representations, so it runs on a model that has one: the CNN (its last hidden
layer). Every client keeps its previous local model (6.6 MB for the CNN), so the 1000 clients of
the default partition (6.2 GiB a run) are refused on machines under 25 GiB; this preset splits
MNIST over 200 clients (2 labels each, power-law sizes, 1.3 GB of previous models a run). One
local epoch, no stragglers, 40 rounds, evaluated every 10 (on 20 sampled clients' data and the
whole central test set). On a 2-core CPU a round of FedAvg's and FedProx's 6 runs of the
comparison sweep trains in about 20 s, and evaluates in about 30 s. moon_mu = 1 and T = 0.5 are
the MOON paper's values; the comparison's tuning chose moon_mu = 0.01 here
(--config.algorithm.moon_mu=0.01).
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox


def get_config() -> ml_collections.ConfigDict:
  c = mnist_fedprox.get_config()
  c.model.name = 'cnn'
  c.data.num_clients = 200
  c.algorithm.name = 'moon'
  c.algorithm.mu = 0.0
  c.algorithm.moon_mu = 1.0
  c.algorithm.moon_temperature = 0.5
  c.client.local_epochs = 1
  c.stragglers.fraction = 0.0
  c.num_rounds = 40
  c.eval_every = 10
  c.eval.clients = 20
  c.checkpoint_every = 10
  return c
