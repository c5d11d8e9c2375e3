"""The federated dataset: every client's examples in one flat array, ordered client by client."""
import dataclasses

import numpy as np


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
  # Sequence tasks: the examples are windows of `window` ids of `text` (every client's text, once),
  # x holds each window's start [n, 1] and y its next id; the model gathers a batch's windows.
  text: np.ndarray | None = None
  window: int = 0

  @property
  def num_clients(self) -> int:
    return len(self.train_sizes)

  @property
  def input_dim(self) -> int:
    """Features of an example as the model sees them (a window's length for sequences)."""
    return self.window or self.train_x.shape[1]

  @property
  def train_offsets(self) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(self.train_sizes)[:-1]]).astype(np.int32)

  def statistics(self) -> dict[str, float]:
    return statistics(self.train_sizes + self.local_test_sizes)


ARRAYS = ('train_x', 'train_y', 'train_sizes', 'local_test_x', 'local_test_y', 'local_test_sizes',
          'test_x', 'test_y')


def local_splits(sizes: np.ndarray, train_fraction: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The one train/test split of every task: each client's examples shuffled, the first
  train_fraction (rounded down) for local training, the rest for local test.

  `sizes` counts the examples of each client, stored client after client. Returns (train rows,
  test rows, training examples of each client): rows index that storage, grouped client by
  client. One sort of random keys shuffles every client at once (no Python loop over clients).
  """
  sizes = np.asarray(sizes, np.int64)
  client = np.repeat(np.arange(len(sizes)), sizes)
  keys = np.random.default_rng([seed, 1]).random(len(client))
  order = np.lexsort((keys, client))  # Rows of client 0 in random order, then client 1...
  rank = np.arange(len(client)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
  train_sizes = (train_fraction * sizes).astype(np.int64)
  is_train = rank < np.repeat(train_sizes, sizes)
  return order[is_train], order[~is_train], train_sizes.astype(np.int32)


def check_partition(arrays: dict[str, np.ndarray], num_classes: int) -> None:
  """Raises ValueError unless the arrays form a partition in which every client has local
  training and test data, every label one of num_classes."""
  if set(arrays) != set(ARRAYS):
    raise ValueError(f'arrays {sorted(arrays)} instead of {sorted(ARRAYS)}')
  for split in ('train', 'local_test'):
    x, y, sizes = (arrays[f'{split}_{k}'] for k in ('x', 'y', 'sizes'))
    if len(x) != len(y) or sizes.sum() != len(y):
      raise ValueError(f'{split}: {len(x)} features, {len(y)} labels, {sizes.sum()} by sizes')
    if not len(sizes) or sizes.min() < 1:
      raise ValueError(f'client {int(np.argmin(sizes))} has no {split.replace("_", " ")} data')
  if len(arrays['test_x']) != len(arrays['test_y']):
    raise ValueError('the central test set has not as many labels as features')
  for name in ('train_y', 'local_test_y', 'test_y'):
    labels = arrays[name]
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
      raise ValueError(f'{name} holds labels outside 0..{num_classes - 1}')


def most_rows(sizes: np.ndarray, k: int) -> int:
  """The most rows that k of these clients hold together (the k largest): what a program that
  reads any k clients' rows is shaped for."""
  return int(np.sort(np.asarray(sizes, np.int64))[::-1][:k].sum())


def statistics(sizes: np.ndarray) -> dict[str, float]:
  return dict(clients=int(len(sizes)),
              total=int(sizes.sum()),
              mean=float(sizes.mean()),
              std=float(sizes.std()),
              min=int(sizes.min()),
              max=int(sizes.max()))
