"""The FedProx paper's MNIST partition: 2 labels per client, power-law sizes.

A port of the paper's generator (also used by the Flower baseline): sort the pool by label, give
each client a few examples of each of its two labels, then share the rest of every class out by
lognormal proportions drawn per (label, group of clients, label slot). All randomness comes from one
NumPy generator seeded with `seed`, so a partition is a pure function of its arguments.
"""
import numpy as np


def power_law_partition(labels: np.ndarray, *, num_clients: int, labels_per_client: int,
                        examples_per_label: int, sigma: float, seed: int) -> list[np.ndarray]:
  """Indices into `labels` for each client, as in the paper's generator."""
  num_classes = int(labels.max()) + 1
  if num_clients % num_classes:
    raise ValueError(f'num_clients={num_clients} must be a multiple of the {num_classes} classes')
  rng = np.random.default_rng(seed)
  by_label = np.argsort(labels, kind='stable')
  class_counts = np.bincount(labels, minlength=num_classes)
  class_start = np.concatenate([[0], np.cumsum(class_counts)[:-1]])
  used = np.zeros(num_classes, dtype=np.int64)
  clients: list[list[np.ndarray]] = [[] for _ in range(num_clients)]

  def take(client: int, label: int, count: int) -> None:
    start = class_start[label] + used[label]
    count = min(count, class_counts[label] - used[label])
    clients[client].append(by_label[start:start + count])
    used[label] += count

  for u in range(num_clients):
    for slot in range(labels_per_client):
      take(u, (u + slot) % num_classes, examples_per_label)
  # One lognormal draw per (label, group of num_classes clients, slot); exactly one client of each
  # group holds a given label in a given slot, so each label's proportions cover its clients once.
  groups = num_clients // num_classes
  props = rng.lognormal(0.0, sigma, size=(num_classes, groups, labels_per_client))
  remaining = class_counts - used
  props = remaining[:, None, None] * props / props.sum(axis=(1, 2), keepdims=True)
  for u in range(num_clients):
    for slot in range(labels_per_client):
      label = (u + slot) % num_classes
      take(u, label, int(props[label, u // num_classes, slot]))
  return [np.concatenate(parts) for parts in clients]
