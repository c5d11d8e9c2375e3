"""The paper's federated MNIST: 2 labels per client, power-law sizes, local 90/10 splits.

The partition is cached as a `.npz` keyed by a hash of the fields that shape it, so a second run
neither prepares TFDS again nor imports TensorFlow. A cache that cannot be read is rebuilt.
"""

import functools

import ml_collections
import numpy as np

from fedprox_jax import config_fields
from fedprox_jax.config_fields import require
from fedprox_jax.tasks import cache
from fedprox_jax.tasks import data_plan
from fedprox_jax.tasks import mnist_files
from fedprox_jax.tasks import partition
from fedprox_jax.tasks.data_plan import DataPlan
from fedprox_jax.tasks.federated_data import FederatedData
from fedprox_jax.tasks.federated_data import check_partition
from fedprox_jax.tasks.federated_data import local_splits
from fedprox_jax.tasks.task import Task

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
# Fields of config.data that change the partition; the others only change how it is read.
_PARTITION_FIELDS = ('name', 'pool', 'num_clients', 'labels_per_client', 'examples_per_label',
                     'lognormal_sigma', 'train_fraction', 'seed')
_CACHE_VERSION = 3  # 2: the cache holds the SHA-256 of its arrays; 3: local splits by one sort.


def validate(c: ml_collections.ConfigDict) -> None:
  d = c.data
  config_fields.one_of(c, 'data.pool', ('train', 'all'))
  config_fields.one_of(c, 'data.normalization', ('global', 'per_pixel'))
  require(d.num_clients >= 10 and d.num_clients % 10 == 0, 'data.num_clients',
          f'= {d.num_clients} must be a positive multiple of the 10 MNIST classes')
  require(1 <= d.labels_per_client <= 10, 'data.labels_per_client',
          f'= {d.labels_per_client} must be in 1..10')
  require(d.examples_per_label >= 1, 'data.examples_per_label',
          f'= {d.examples_per_label} must be >= 1 (every client needs data)')
  require(d.lognormal_sigma >= 0, 'data.lognormal_sigma', 'must be >= 0')
  require(0 < d.train_fraction < 1, 'data.train_fraction',
          f'= {d.train_fraction} must be in (0, 1)')
  # Every client first takes examples_per_label examples of each of its labels; each digit is
  # held by labels_per_client * num_clients / 10 clients, and the pool must have enough of it.
  counts = mnist_files.CLASS_COUNTS['train']
  if d.pool == 'all':
    counts = tuple(a + b for a, b in zip(counts, mnist_files.CLASS_COUNTS['test']))
  per_client = d.examples_per_label * d.labels_per_client
  most = 10 * (min(counts) // per_client)
  require(
      d.num_clients <= most, 'data.num_clients',
      f'= {d.num_clients} is more than the {d.pool!r} pool can give '
      f'{d.examples_per_label} examples of each of {d.labels_per_client} labels '
      f'(digit {counts.index(min(counts))} has {min(counts)} examples): use at most {most}')
  # Every client must keep at least one local training example (and one test example, which
  # train_fraction < 1 guarantees).
  require(
      int(d.train_fraction * per_client) >= 1, 'data.train_fraction',
      f'= {d.train_fraction} leaves clients of {per_client} examples no training data')


def cache_key(data_config: ml_collections.ConfigDict) -> str:
  return cache.key(data_config, _PARTITION_FIELDS, _CACHE_VERSION)


def _build_partition(c: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  raw = mnist_files.load_mnist(c.tfds_data_dir, c.manual_dir)
  images, labels = raw['train_images'], raw['train_labels']
  test_images, test_labels = raw['test_images'], raw['test_labels']
  if c.pool == 'all':  # The paper's code pools all 70k images; there is no separate test set.
    images = np.concatenate([images, test_images])
    labels = np.concatenate([labels, test_labels])
    test_images, test_labels = test_images[:0], test_labels[:0]
  clients = partition.power_law_partition(labels,
                                          num_clients=c.num_clients,
                                          labels_per_client=c.labels_per_client,
                                          examples_per_label=c.examples_per_label,
                                          sigma=c.lognormal_sigma,
                                          seed=c.seed)
  sizes = np.array([len(i) for i in clients])
  train_rows, test_rows, train_sizes = local_splits(sizes, c.train_fraction, c.seed)
  pool_index = np.concatenate(clients)  # Each client's examples, client after client.
  train_idx, test_idx = pool_index[train_rows], pool_index[test_rows]
  return dict(train_x=images[train_idx],
              train_y=labels[train_idx],
              train_sizes=train_sizes,
              local_test_x=images[test_idx],
              local_test_y=labels[test_idx],
              local_test_sizes=(sizes - train_sizes).astype(np.int32),
              test_x=test_images,
              test_y=test_labels)


def _load_or_build(c: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  return cache.load_or_build(c,
                             cache_key(c),
                             lambda: _build_partition(c),
                             lambda arrays: check_partition(arrays, 10),
                             fix='lower data.num_clients or data.examples_per_label')


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


def load(c: ml_collections.ConfigDict) -> FederatedData:
  """config.data's federated MNIST, pixels flattened to 784 raw uint8 features."""
  arrays = _load_or_build(c)
  flat = lambda name: arrays[name].reshape(len(arrays[name]), int(np.prod(arrays[name].shape[1:])))
  if c.normalization == 'global':  # (x/255 - 0.1307) / 0.3081, in pixel units.
    mean, scale = MNIST_MEAN * 255.0, MNIST_STD * 255.0
  else:  # 'per_pixel', as the paper's code: z-score every pixel over the pool (+0.001 on std).
    mean, std = _pixel_moments(np.concatenate([flat('train_x'), flat('local_test_x')]))
    mean, scale = mean.astype(np.float32), (std + 0.001).astype(np.float32)
  return FederatedData(train_x=flat('train_x'),
                       train_y=arrays['train_y'].astype(np.int32),
                       train_sizes=arrays['train_sizes'],
                       local_test_x=flat('local_test_x'),
                       local_test_y=arrays['local_test_y'].astype(np.int32),
                       local_test_sizes=arrays['local_test_sizes'],
                       test_x=flat('test_x'),
                       test_y=arrays['test_y'].astype(np.int32),
                       num_classes=10,
                       feature_mean=mean,
                       feature_scale=scale)


@functools.lru_cache(maxsize=16)
def _mnist_sizes(pool: str, num_clients: int, labels_per_client: int, examples_per_label: int,
                 sigma: float, seed: int) -> np.ndarray:
  """The partition's sizes: they depend on the pool's class counts alone, not on the images."""
  counts = np.asarray(mnist_files.CLASS_COUNTS['train'])
  if pool == 'all':
    counts = counts + np.asarray(mnist_files.CLASS_COUNTS['test'])
  clients = partition.power_law_partition(np.repeat(np.arange(10), counts),
                                          num_clients=num_clients,
                                          labels_per_client=labels_per_client,
                                          examples_per_label=examples_per_label,
                                          sigma=sigma,
                                          seed=seed)
  return np.array([len(i) for i in clients], np.int64)


def plan(d: ml_collections.ConfigDict, clients_per_round: int) -> DataPlan:
  """MNIST's 784 uint8 pixels an example, for the partition's own sizes (no image read)."""
  sizes = _mnist_sizes(d.pool, d.num_clients, d.labels_per_client, d.examples_per_label,
                       d.lognormal_sigma, d.seed)
  train = (d.train_fraction * sizes).astype(np.int64)
  test = 0 if d.pool == 'all' else sum(mnist_files.CLASS_COUNTS['test'])
  row = 28 * 28 + 4
  k = min(clients_per_round, len(train))
  return DataPlan(
      train_rows=int(train.sum()),
      eval_rows=int(sizes.sum() - train.sum()) + test,
      row_bytes=row,
      other_bytes=0,
      largest=int(train.max()),
      cohort_rows=int(np.sort(train)[len(train) - k:].sum()),
      load_bytes=3 * (int(sizes.sum()) + test) * row,  # Images, partition, copies.
      described=f'{int(sizes.sum()) + test:,} MNIST images',
      fix=data_plan.DATA_FIX,
      train_sizes=train)


TASK = Task(name='mnist',
            validate=validate,
            load=load,
            model_dims=lambda c: (10, 28 * 28),
            plan=plan)
