"""Evaluation on a sample of clients (eval.clients = k > 0): k clients drawn afresh for every
evaluation from (data.seed, round), the same for every run of a program, so a resumed run computes
the same records. Their rows are padded to the k largest clients' so that one compiled program
serves every draw; padding rows weigh 0. The central test set, having no clients, stays whole."""
import jax
import numpy as np

from fedprox_jax.tasks.federated_data import FederatedData
from fedprox_jax.tasks.federated_data import most_rows

_SETS = ('train', 'local_test')  # The datasets made of clients' rows.


class ClientSample:

  def __init__(self, data: FederatedData, k: int, seed: int):
    self.k, self.seed, self.num_clients = k, seed, data.num_clients
    self.sets = {}
    for name in _SETS:
      sizes = getattr(data, f'{name}_sizes')
      offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
      self.sets[name] = (offsets, sizes, most_rows(sizes, k))

  def shapes(self, sharding) -> dict:
    return {
        name: (jax.ShapeDtypeStruct((m,), np.int32, sharding=sharding),
               jax.ShapeDtypeStruct((m,), np.float32,
                                    sharding=sharding)) for name, (_, _, m) in self.sets.items()
    }

  def clients(self, round_index: int) -> np.ndarray:
    """The k clients evaluated at `round_index`, in order."""
    rng = np.random.default_rng([self.seed, round_index, 7])  # 7: apart from other draws.
    return np.sort(rng.choice(self.num_clients, self.k, replace=False))

  def draw(self, round_index: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{dataset: (rows [M], weights [M])} of the clients drawn for `round_index`."""
    clients = self.clients(round_index)
    out = {}
    for name, (offsets, sizes, m) in self.sets.items():
      lengths = sizes[clients].astype(np.int64)
      # Each drawn client's rows, in one pass: its first row, then consecutive ones.
      firsts = np.repeat(offsets[clients] - (np.cumsum(lengths) - lengths), lengths)
      rows = (firsts + np.arange(lengths.sum())).astype(np.int32)
      weights = np.zeros(m, np.float32)
      weights[:len(rows)] = 1.0
      out[name] = (np.concatenate([rows, np.zeros(m - len(rows), np.int32)]), weights)
    return out
