"""FedProx on MNIST as the paper's own code (TensorFlow 1) runs it, as far as config allows.

    python -m fedprox_jax.run --config=configs/mnist_paper.py --workdir=/tmp/paper

Differences from the default (the Flower baseline's protocol): all 70k images pooled and split
90/10 inside each client (so no central test set: the metrics are the training loss over all
clients and the accuracy over all clients' local test splits, the paper's Figures 1 and 7);
per-pixel z-scoring; E = 20; no weight decay; exactly round(10 x fraction) stragglers a round;
aggregation weighted by training examples.
"""
import ml_collections

from fedprox_jax.configs import mnist_fedprox


def get_config() -> ml_collections.ConfigDict:
  c = mnist_fedprox.get_config()
  c.data.pool = 'all'
  c.data.normalization = 'per_pixel'
  c.client.local_epochs = 20
  c.client.weight_decay = 0.0
  c.algorithm.mu = 1.0
  c.algorithm.weighting = 'examples'
  c.stragglers.mode = 'fixed'
  return c
