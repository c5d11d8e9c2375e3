"""Where the clients' training data live for the rounds (compute.client_data).

'replicated': every device holds every client's rows, and a round reads them where they are. On
accelerators, each with its own memory, that is free; the CPU's devices share one memory, so D CPU
devices hold D copies. 'per_round': the data stay once in each process, on its first device, and
before each round the cohort's rows are gathered there and handed to the lanes (a few thousand
rows for a cohort of small clients, against millions held). The lanes then read the same values in
the same order: the two give identical results. 'auto' takes 'per_round' on CPU with several
devices in the process when a round's rows are at most 1% of all the rows (for cohorts of 10
clients of similar sizes, populations from about 10^4), 'replicated' otherwise.
"""
import jax
import jax.numpy as jnp
import numpy as np

from fedprox_jax.core.cohort import Cohort
from fedprox_jax.core.packing import ClientData
from fedprox_jax.tasks.federated_data import most_rows

MODES = ('auto', 'replicated', 'per_round')
AUTO_SHARE = 0.01  # 'auto' gathers per round when a round's rows are at most this share.


def rows_per_round(sizes: np.ndarray, clients_per_round: int, num_runs: int) -> int:
  """The most training rows a round's cohorts can hold: R times the K largest clients'."""
  return most_rows(sizes, clients_per_round) * num_runs


def choose(mode: str, devices, sizes: np.ndarray, clients_per_round: int, num_runs: int) -> str:
  if mode != 'auto':
    return mode
  many_cpus = devices[0].platform == 'cpu' and len(jax.local_devices()) > 1
  small = rows_per_round(sizes, clients_per_round, num_runs) <= AUTO_SHARE * np.sum(sizes)
  return 'per_round' if many_cpus and small else 'replicated'


def make_gather(num_rows: int):
  """gather(clients [R, K], data) -> (cohort's data, slots [R, K]): the cohort's rows client by
  client (padded with row 0 to `num_rows`), and each client's slot in them, which stands for the
  client in the round program (its offsets and sizes are the slots')."""

  def gather(clients: jax.Array, data: ClientData) -> tuple[ClientData, jax.Array]:
    flat = clients.reshape(-1)
    sizes = data.sizes[flat]
    ends = jnp.cumsum(sizes)
    starts = ends - sizes
    row = jnp.arange(num_rows, dtype=ends.dtype)
    slot = jnp.minimum(jnp.searchsorted(ends, row, side='right'), flat.shape[0] - 1)
    source = jnp.where(row < ends[-1], data.offsets[flat][slot] + row - starts[slot], 0)
    slots = jnp.arange(flat.shape[0], dtype=jnp.int32).reshape(clients.shape)
    return ClientData(data.x[source], data.y[source], starts.astype(jnp.int32), sizes), slots

  return gather


def for_round(cohort: Cohort, slots: jax.Array) -> Cohort:
  """The cohort as the round program sees it with gathered rows: slots in place of clients (keys,
  work and weights were drawn from the clients themselves)."""
  return cohort._replace(clients=slots)
