"""What a task's data take in memory (DataPlan): known exactly once they are loaded, and before,
for the synthetic and MNIST partitions, from config.data alone (without generating or reading an
example); other tasks' data are counted once loaded.
"""
import dataclasses
import functools

import ml_collections
import numpy as np


@dataclasses.dataclass(frozen=True)
class DataPlan:
  """What a task's data take: known exactly once loaded, computed or bounded before."""
  train_rows: int  # Clients' training examples, all of them.
  eval_rows: int  # Local test and central test examples.
  row_bytes: int  # An example's features and label as held.
  other_bytes: int  # Held once besides the rows (a sequence task's text).
  largest: int  # The most training examples of a client.
  cohort_rows: int  # The most training examples that clients_per_round clients hold.
  load_bytes: int  # The host's peak while loading (or generating) them, the data included.
  described: str  # What they are, for a message.
  fix: str  # How to make them smaller.
  train_sizes: np.ndarray | None = None  # Every client's training examples, when known.

  @property
  def host_bytes(self) -> int:
    return (self.train_rows + self.eval_rows) * self.row_bytes + self.other_bytes


_DATA_FIX = 'use fewer or smaller clients (config.data)'
NO_DATA = DataPlan(0, 0, 0, 0, 0, 0, 0, 'the data', _DATA_FIX)


def loaded_data(data, clients_per_round: int) -> DataPlan:
  """The plan of loaded data (a FederatedData)."""
  from fedprox_jax.tasks.federated_data import most_rows  # pylint: disable=g-import-not-at-top
  row_bytes = (data.train_x.dtype.itemsize * int(np.prod(data.train_x.shape[1:])) +
               data.train_y.dtype.itemsize)
  sizes = np.asarray(data.train_sizes, np.int64)
  text = 0 if data.text is None else data.text.nbytes
  rows = len(data.train_y) + len(data.local_test_y) + len(data.test_y)
  return DataPlan(train_rows=len(data.train_y),
                  eval_rows=len(data.local_test_y) + len(data.test_y),
                  row_bytes=row_bytes,
                  other_bytes=text,
                  largest=int(sizes.max()) if len(sizes) else 0,
                  cohort_rows=most_rows(sizes, clients_per_round),
                  load_bytes=rows * row_bytes + text,
                  described=f'{rows:,} examples of {data.input_dim} features',
                  fix=_DATA_FIX,
                  train_sizes=sizes)


def _synthetic_plan(c: ml_collections.ConfigDict) -> DataPlan:
  from fedprox_jax.tasks import synthetic  # pylint: disable=g-import-not-at-top
  d = c.data
  sizes = synthetic.planned_sizes(d, c.clients_per_round)
  row = 4 * d.dim + 4  # float32 features, int32 label.
  # Generation holds every example (row bytes), a block of CHUNK devices' float64 draws, gathers
  # and sums (about 32 bytes a feature), then the split copies the training rows and keeps their
  # indices (int64). Measured: 170 B an example at dim 20 (3.4 GB for synthetic:large), 1.1 to
  # 2 kB at dim 60 with the paper's sizes (4.5 GB for 10^4 devices): within 30% of this.
  load = sizes.examples * (1.9 * row + 8) + sizes.largest_chunk * 32 * d.dim
  about = '' if sizes.exact else 'about '
  return DataPlan(train_rows=sizes.train_examples,
                  eval_rows=sizes.examples - sizes.train_examples,
                  row_bytes=row,
                  other_bytes=0,
                  largest=sizes.largest_train,
                  cohort_rows=sizes.cohort_train,
                  load_bytes=int(load),
                  described=(f'data.num_clients = {d.num_clients:,} devices, {about}'
                             f'{sizes.examples:,} examples of {d.dim} features'),
                  fix=('use fewer devices (data.num_clients) or smaller ones (data.max_examples, '
                       'data.size_log_mean)'),
                  train_sizes=sizes.train_sizes)


@functools.lru_cache(maxsize=16)
def _mnist_sizes(pool: str, num_clients: int, labels_per_client: int, examples_per_label: int,
                 sigma: float, seed: int) -> np.ndarray:
  """The partition's sizes: they depend on the pool's class counts alone, not on the images."""
  from fedprox_jax.tasks import mnist_files  # pylint: disable=g-import-not-at-top
  from fedprox_jax.tasks import partition  # pylint: disable=g-import-not-at-top
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


def _mnist_plan(c: ml_collections.ConfigDict) -> DataPlan:
  """MNIST's 784 uint8 pixels an example, for the partition's own sizes."""
  from fedprox_jax.tasks import mnist_files  # pylint: disable=g-import-not-at-top
  d = c.data
  sizes = _mnist_sizes(d.pool, d.num_clients, d.labels_per_client, d.examples_per_label,
                       d.lognormal_sigma, d.seed)
  train = (d.train_fraction * sizes).astype(np.int64)
  test = 0 if d.pool == 'all' else sum(mnist_files.CLASS_COUNTS['test'])
  row = 28 * 28 + 4
  k = min(c.clients_per_round, len(train))
  return DataPlan(
      train_rows=int(train.sum()),
      eval_rows=int(sizes.sum() - train.sum()) + test,
      row_bytes=row,
      other_bytes=0,
      largest=int(train.max()),
      cohort_rows=int(np.sort(train)[len(train) - k:].sum()),
      load_bytes=3 * (int(sizes.sum()) + test) * row,  # Images, partition, copies.
      described=f'{int(sizes.sum()) + test:,} MNIST images',
      fix=_DATA_FIX,
      train_sizes=train)


def planned_data(c: ml_collections.ConfigDict) -> DataPlan | None:
  """The data's plan before they are loaded; None for a task whose size is known once loaded."""
  plan = {'synthetic': _synthetic_plan, 'mnist': _mnist_plan}.get(c.data.name)
  return plan(c) if plan else None
