"""Where a simulation's arrays live: lanes sharded over all devices (of all processes), everything
a round reads replicated on each (so rounds move no data), evaluation on the process's first
device."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax.core.packing import ClientData
from fedprox_jax.tasks.federated_data import FederatedData


class Layout(NamedTuple):
  mesh: jax.sharding.Mesh | None  # One axis, 'lanes'; None on a single device.
  replicated: jax.sharding.Sharding  # What a round reads and writes.
  eval_device: jax.sharding.Sharding  # Evaluation and its data.
  num_lanes: int


def choose_num_lanes(requested: int, num_jobs: int, devices) -> int:
  """Lanes per round, a multiple of the device count. On CPU a vmapped lane costs about as much as
  running its steps in sequence, so one lane per device; accelerators take many lanes at once."""
  num_devices = len(devices)
  if requested:
    lanes = requested
  elif devices[0].platform == 'cpu':
    lanes = num_devices
  else:
    lanes = min(num_jobs, 256 * num_devices)
  return -(-lanes // num_devices) * num_devices


def make_layout(requested_lanes: int, num_jobs: int) -> Layout:
  devices = jax.devices()
  mesh = jax.sharding.Mesh(np.array(devices), ('lanes',))
  return Layout(mesh=mesh if len(devices) > 1 else None,
                replicated=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
                eval_device=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]),
                num_lanes=choose_num_lanes(requested_lanes, num_jobs, devices))


def host_client_data(data: FederatedData) -> ClientData:
  return ClientData(data.train_x, data.train_y, data.train_offsets, data.train_sizes)


def eval_sets(data: FederatedData) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The datasets evaluated each time: the clients' training data, their local test data and the
  central test set (those that are not empty)."""
  sets = {'train': (data.train_x, data.train_y)}
  for name in ('local_test', 'test'):
    x, y = getattr(data, f'{name}_x'), getattr(data, f'{name}_y')
    if len(x):
      sets[name] = (x, y)
  return sets


def train_client_of_rows(data: FederatedData) -> np.ndarray:
  """Which client each training row belongs to (rows are grouped by client)."""
  return np.repeat(np.arange(data.num_clients, dtype=np.int32), data.train_sizes)


def local_test_client_of_rows(data: FederatedData) -> np.ndarray:
  """Which client each local test row belongs to (rows are grouped by client)."""
  return np.repeat(np.arange(data.num_clients, dtype=np.int32), data.local_test_sizes)


def client_of_rows(data: FederatedData) -> dict[str, np.ndarray]:
  """The client of each row of the datasets made of clients' rows: what evaluation sums by (the
  dissimilarity's gradients, the spread of the clients' local test accuracies)."""
  return {'train': train_client_of_rows(data), 'local_test': local_test_client_of_rows(data)}


def client_of_rows_shapes(data: FederatedData, sharding) -> dict[str, jax.ShapeDtypeStruct]:
  """client_of_rows's shapes, without making the arrays."""
  return {
      name: jax.ShapeDtypeStruct((len(getattr(data, f'{name}_y')),), np.int32, sharding=sharding)
      for name in ('train', 'local_test')
  }


def shape_of(tree, sharding):
  """Shapes (with a sharding) of arrays or shapes: what programs are compiled from."""
  dtype = lambda a: a.dtype if hasattr(a, 'dtype') else np.asarray(a).dtype
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), dtype(a), sharding=sharding),
                      tree)


def place_data(data: FederatedData, layout: Layout, replicate: bool = True):
  """(client data, eval sets on the first device, client_of_rows there). The client data
  are on every device (`replicate`), else on the first device alone (engine/cohort_rows.py);
  evaluation reuses the first device's copy of the training data."""
  if replicate:
    client_data = ClientData(*jax.device_put(tuple(host_client_data(data)), layout.replicated))
    sets = {'train': (client_data.x.addressable_data(0), client_data.y.addressable_data(0))}
  else:
    client_data = ClientData(*jax.device_put(tuple(host_client_data(data)), layout.eval_device))
    sets = {'train': (client_data.x, client_data.y)}
  for name, arrays in eval_sets(data).items():
    if name != 'train':
      sets[name] = jax.device_put(arrays, layout.eval_device)
  return client_data, sets, jax.device_put(client_of_rows(data), layout.eval_device)


def local_copy(tree):
  """Replicated arrays as this process's copy (the whole of each: a process reads its own)."""
  return jax.tree.map(
      lambda a: a.addressable_data(0)
      if isinstance(a, jax.Array) and not a.is_fully_addressable else a, tree)


def stack(trees):
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)
