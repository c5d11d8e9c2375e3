"""What a task's data take in memory (DataPlan): known exactly once they are loaded (loaded_data),
and before, for a task that declares its plan (Task.plan: the synthetic and MNIST partitions),
from config.data alone, without generating or reading an example; other tasks' data are counted
once loaded.
"""
import dataclasses

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


DATA_FIX = 'use fewer or smaller clients (config.data)'
NO_DATA = DataPlan(0, 0, 0, 0, 0, 0, 0, 'the data', DATA_FIX)


def loaded_data(data, clients_per_round: int, fix: str = DATA_FIX) -> DataPlan:
  """The plan of loaded data (a FederatedData); `fix` says how to make them smaller."""
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
                  fix=fix,
                  train_sizes=sizes)
