"""Shared fixtures: a tiny synthetic federation and the default config shrunk to fit it."""
import os
import pathlib

import ml_collections
import numpy as np
import pytest

from configs import mnist_fedprox
from fedprox_jax.datasets import FederatedData

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / 'shared' / 'mnist'


def tiny_data(num_clients: int = 12, dim: int = 16, num_classes: int = 4,
              seed: int = 0) -> FederatedData:
  """Clients of uneven sizes (3 to 37 training examples), so batches are partial."""
  rng = np.random.default_rng(seed)
  train_sizes = rng.integers(3, 38, num_clients).astype(np.int32)
  test_sizes = np.maximum(train_sizes // 9, 1).astype(np.int32)
  w = rng.normal(size=(dim, num_classes))

  def examples(n):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x, np.argmax(x @ w + rng.normal(size=(n, num_classes)), 1).astype(np.int32)

  train_x, train_y = examples(int(train_sizes.sum()))
  test_x, test_y = examples(int(test_sizes.sum()))
  central_x, central_y = examples(50)
  return FederatedData(train_x, train_y, train_sizes, test_x, test_y, test_sizes, central_x,
                       central_y, num_classes=num_classes)


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  c = mnist_fedprox.get_config()
  c.num_rounds = 3
  c.clients_per_round = 4
  c.client.local_epochs = 3
  c.client.learning_rate = 0.1
  c.eval.chunk_size = 64
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split('.')
    for part in path:
      node = node[part]
    node[leaf] = value
  return c


@pytest.fixture(scope='session')
def mnist_env(tmp_path_factory):
  """Environment for subprocesses that read MNIST offline from ../shared/mnist."""
  if not SHARED_MNIST.is_dir():
    pytest.skip(f'{SHARED_MNIST} is not there')
  root = tmp_path_factory.mktemp('mnist')
  env = dict(os.environ, FEDPROX_JAX_MNIST_DIR=str(SHARED_MNIST), PYTHONPATH=str(REPO),
             JAX_PLATFORMS='cpu')
  return env, root
