"""The federated dataset: every client's examples in one flat array, ordered client by client.

The partition is cached as a `.npz` keyed by a hash of the fields that shape it, so a second run
neither prepares TFDS again nor imports TensorFlow.
"""
import dataclasses
import hashlib
import io
import json
import logging
import pathlib

import ml_collections
import numpy as np

from fedprox_jax import mnist
from fedprox_jax import partition
from fedprox_jax.workdir import write_atomically

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# Fields of config.data that change the partition; the others only change how it is read.
_PARTITION_FIELDS = ('name', 'pool', 'num_clients', 'labels_per_client', 'examples_per_label',
                     'lognormal_sigma', 'train_fraction', 'seed')
_CACHE_VERSION = 1
_ARRAYS = ('train_x', 'train_y', 'train_sizes', 'local_test_x', 'local_test_y',
           'local_test_sizes', 'test_x', 'test_y')


@dataclasses.dataclass(frozen=True)
class FederatedData:
  """Raw features [n, d] (uint8 pixels for MNIST) and how to normalise them: (x - mean) / scale.

  Client c's local training data are rows train_offsets[c] : train_offsets[c] + train_sizes[c] of
  train_x. Features stay raw, on the host and on the device; the model normalises the rows it
  reads (models.on_raw_features), so nothing ever holds a float copy of the pixels.
  """
  train_x: np.ndarray
  train_y: np.ndarray
  train_sizes: np.ndarray
  local_test_x: np.ndarray
  local_test_y: np.ndarray
  local_test_sizes: np.ndarray
  test_x: np.ndarray  # The central test set; empty when the pool already holds it.
  test_y: np.ndarray
  num_classes: int
  feature_mean: np.ndarray | float = 0.0  # Scalar or [d].
  feature_scale: np.ndarray | float = 1.0

  @property
  def num_clients(self) -> int:
    return len(self.train_sizes)

  @property
  def input_dim(self) -> int:
    return self.train_x.shape[1]

  @property
  def train_offsets(self) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(self.train_sizes)[:-1]]).astype(np.int32)

  def statistics(self) -> dict[str, float]:
    return partition.statistics(self.train_sizes + self.local_test_sizes)


def cache_key(data_config: ml_collections.ConfigDict) -> str:
  fields = {k: data_config[k] for k in _PARTITION_FIELDS}
  fields['version'] = _CACHE_VERSION
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _build_mnist_partition(c: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  raw = mnist.load_mnist(c.tfds_data_dir, c.manual_dir)
  images, labels = raw['train_images'], raw['train_labels']
  test_images, test_labels = raw['test_images'], raw['test_labels']
  if c.pool == 'all':  # The paper's code pools all 70k images; there is no separate test set.
    images = np.concatenate([images, test_images])
    labels = np.concatenate([labels, test_labels])
    test_images, test_labels = test_images[:0], test_labels[:0]
  clients = partition.power_law_partition(
      labels, num_clients=c.num_clients, labels_per_client=c.labels_per_client,
      examples_per_label=c.examples_per_label, sigma=c.lognormal_sigma, seed=c.seed)
  split = partition.split_clients(clients, train_fraction=c.train_fraction, seed=c.seed)
  train_idx, test_idx = np.concatenate(split.train), np.concatenate(split.test)
  return dict(
      train_x=images[train_idx], train_y=labels[train_idx],
      train_sizes=np.array([len(i) for i in split.train], np.int32),
      local_test_x=images[test_idx], local_test_y=labels[test_idx],
      local_test_sizes=np.array([len(i) for i in split.test], np.int32),
      test_x=test_images, test_y=test_labels)


def check_partition(arrays: dict[str, np.ndarray]) -> None:
  """Raises ValueError unless the arrays form a partition in which every client has local
  training and test data."""
  if set(arrays) != set(_ARRAYS):
    raise ValueError(f'arrays {sorted(arrays)} instead of {sorted(_ARRAYS)}')
  for split in ('train', 'local_test'):
    x, y, sizes = (arrays[f'{split}_{k}'] for k in ('x', 'y', 'sizes'))
    if len(x) != len(y) or sizes.sum() != len(y):
      raise ValueError(f'{split}: {len(x)} features, {len(y)} labels, {sizes.sum()} by sizes')
    if not len(sizes) or sizes.min() < 1:
      raise ValueError(f'client {int(np.argmin(sizes))} has no {split.replace("_", " ")} data')
  if len(arrays['test_x']) != len(arrays['test_y']):
    raise ValueError('the central test set has as many labels as features')


def _load_or_build(c: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  cache_dir = pathlib.Path(c.cache_dir or '~/.cache/fedprox_jax').expanduser()
  path = cache_dir / f'{c.name}-{cache_key(c)}.npz'
  if path.exists():
    try:
      with np.load(path) as f:  # The zip's CRC-32s catch altered bytes as they are read.
        arrays = dict(f)
      check_partition(arrays)
      logging.info('Federated data from cache %s', path)
      return arrays
    except Exception as e:  # zipfile, NumPy and the checks raise many kinds.
      logging.warning('The partition cache %s is unreadable (%s: %s); building it again', path,
                      type(e).__name__, e)
  else:
    logging.info('Building the federated partition (cache miss: %s)', path)
  arrays = _build_mnist_partition(c)
  try:
    check_partition(arrays)
  except ValueError as e:
    raise mnist.DataError(f'the MNIST partition of config.data is unusable ({e}): lower '
                          'data.num_clients or data.examples_per_label') from None
  try:
    cache_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_atomically(path, buffer.getvalue())  # A killed run never leaves half a cache.
  except OSError as e:  # The run can go on without its cache.
    logging.warning('Could not cache the partition in %s (%s); the next run builds it again',
                    path, e.strerror)
  return arrays


def _pixel_moments(x: np.ndarray, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
  """Per-pixel mean and std over the pool, in chunks (no float copy of the whole pool)."""
  total = np.zeros(x.shape[1])
  squares = np.zeros(x.shape[1])
  for start in range(0, len(x), chunk):
    part = x[start:start + chunk].astype(np.float64)
    total += part.sum(0)
    squares += np.square(part).sum(0)
  mean = total / len(x)
  return mean, np.sqrt(np.maximum(squares / len(x) - np.square(mean), 0.0))


def model_dims(c: ml_collections.ConfigDict) -> tuple[int, int]:
  """(classes, input features) of config.data's examples, known without loading them."""
  if c.name == 'synthetic':
    return c.num_classes, c.dim
  return 10, 28 * 28


def load_federated(c: ml_collections.ConfigDict) -> FederatedData:
  """The federated dataset of config.data: MNIST (pixels flattened to 784) or synthetic."""
  if c.name == 'synthetic':
    from fedprox_jax import synthetic  # pylint: disable=g-import-not-at-top
    return synthetic.load_synthetic(c)
  arrays = _load_or_build(c)
  flat = lambda name: arrays[name].reshape(len(arrays[name]), int(np.prod(arrays[name].shape[1:])))
  if c.normalization == 'global':  # (x/255 - 0.1307) / 0.3081, in pixel units.
    mean, scale = MNIST_MEAN * 255.0, MNIST_STD * 255.0
  else:  # 'per_pixel', as the paper's code: z-score every pixel over the pool (+0.001 on std).
    mean, std = _pixel_moments(np.concatenate([flat('train_x'), flat('local_test_x')]))
    mean, scale = mean.astype(np.float32), (std + 0.001).astype(np.float32)
  return FederatedData(
      train_x=flat('train_x'), train_y=arrays['train_y'].astype(np.int32),
      train_sizes=arrays['train_sizes'], local_test_x=flat('local_test_x'),
      local_test_y=arrays['local_test_y'].astype(np.int32),
      local_test_sizes=arrays['local_test_sizes'], test_x=flat('test_x'),
      test_y=arrays['test_y'].astype(np.int32), num_classes=10, feature_mean=mean,
      feature_scale=scale)
