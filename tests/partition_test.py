import numpy as np

from fedprox_jax.tasks import federated_data
from fedprox_jax.tasks import partition


def _labels(seed=0):
  # MNIST-like class counts, in shuffled order.
  counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
  return np.random.default_rng(seed).permutation(np.repeat(np.arange(10), counts))


def _partition(labels, seed=0):
  return partition.power_law_partition(labels,
                                       num_clients=1000,
                                       labels_per_client=2,
                                       examples_per_label=5,
                                       sigma=2.0,
                                       seed=seed)


def test_every_client_holds_exactly_its_two_labels():
  labels = _labels()
  clients = _partition(labels)
  assert len(clients) == 1000
  for u, idx in enumerate(clients):
    assert set(labels[idx]) == {u % 10, (u + 1) % 10}
    assert np.sum(labels[idx] == u % 10) >= 5 and np.sum(labels[idx] == (u + 1) % 10) >= 5


def test_counts_add_up_without_reuse():
  labels = _labels()
  clients = _partition(labels)
  everything = np.concatenate(clients)
  assert len(np.unique(everything)) == len(everything)  # No example given twice.
  # Rounding down the power-law shares leaves fewer than one example per (client, slot) unused.
  assert len(labels) - 2000 < len(everything) <= len(labels)
  sizes = np.array([len(c) for c in clients])
  assert sizes.min() >= 10 and sizes.std() > sizes.mean()  # A power law, not equal shares.


def test_deterministic_for_a_seed_and_different_across_seeds():
  labels = _labels()
  a, b, c = _partition(labels, 0), _partition(labels, 0), _partition(labels, 1)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(len(x) == len(y) for x, y in zip(a, c))


def test_local_split_is_ninety_ten_disjoint_and_grouped_by_client():
  sizes = np.array([10, 1, 7, 250, 3])
  train, test, train_sizes = federated_data.local_splits(sizes, train_fraction=0.9, seed=0)
  ends = np.cumsum(sizes)
  for c, n in enumerate(sizes):  # A loop over clients: each keeps its own rows, 90/10.
    mine = set(range(ends[c] - n, ends[c]))
    before = train_sizes[:c].sum()
    got_train = train[before:before + train_sizes[c]]
    got_test = test[(sizes - train_sizes)[:c].sum():][:n - train_sizes[c]]
    assert train_sizes[c] == int(0.9 * n)
    assert set(got_train) | set(got_test) == mine and not set(got_train) & set(got_test)
  assert len(train) + len(test) == sizes.sum()


def test_local_split_shuffles_each_client_uniformly():
  """Over seeds, each of a client's 4 rows lands in its training part 3 times in 4."""
  counts = np.zeros(8)
  for seed in range(2000):
    train, _, _ = federated_data.local_splits(np.array([4, 4]), train_fraction=0.75, seed=seed)
    counts += np.bincount(train, minlength=8)
  assert np.all(np.abs(counts / 2000 - 0.75) < 0.04), counts / 2000


def test_statistics():
  stats = federated_data.statistics(np.array([10, 20, 30]))
  assert stats == dict(clients=3, total=60, mean=20.0, std=np.std([10, 20, 30]), min=10, max=30)
