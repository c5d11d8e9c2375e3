"""Every client's persistent algorithm state (SCAFFOLD's c_i), for every run of a program.

Where it lives is chosen automatically (`home`). Within DEVICE_BUDGET, a copy on each device of
the rounds (one process), read and written by the round program itself: the store goes in
donated, the cohort's rows are gathered before the lanes and scattered back after them, and a
round dispatches nothing else for it (five small dispatches a round, next to a round of a few
milliseconds, would cost a sixth of it). On CPU devices, which share the machine's memory, that
budget is for all the copies together. Past it, the store lives on the first device, or past
DEVICE_BUDGET alone in host memory, the cohort's rows gathered before a round and scattered back
after it. A state that does not fit host_budget() (a quarter of the machine's memory) either is
refused before any compute, with its size. The whole run's memory is estimated and checked by
engine/memory_estimate.py, which counts these states too (once per copy).
"""
import jax
import numpy as np

from fedprox_jax.algorithms.base import Algorithm
from fedprox_jax.engine import machine

DEVICE_BUDGET = 1 << 30  # Bytes on the device, and at most an eighth of its memory.
HOST_FRACTION = 0.25  # Of the machine's memory.


def bytes_needed(algorithm: Algorithm, params_shape, num_runs: int, num_clients: int) -> int:
  """Bytes of client state for `num_runs` runs of `num_clients` clients (0: the algorithm keeps
  none); `params_shape` is one run's parameters (arrays or shapes)."""
  if algorithm.init_client_state is None:
    return 0
  one = jax.eval_shape(algorithm.init_client_state, params_shape)
  per_client = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(one))
  return per_client * num_clients * num_runs


def host_budget() -> int:
  return int(HOST_FRACTION * machine.machine_memory())


def device_budget(device) -> int:
  stats = device.memory_stats() if device.platform != 'cpu' else None
  limit = (stats or {}).get('bytes_limit')
  return min(DEVICE_BUDGET, limit // 8) if limit else DEVICE_BUDGET


def home(needed: int, budget: int, num_devices: int, cpu: bool, one_process: bool) -> str:
  """Where a store of `needed` bytes lives: 'devices' (a copy on each of the rounds'
  `num_devices` devices, within `budget` each, or together on CPU devices; in one process),
  'device' (the first device, within `budget`) or 'host'."""
  copies = num_devices if cpu else 1
  if one_process and needed * copies <= budget:
    return 'devices'
  return 'device' if needed <= budget else 'host'


def keepers(algorithm: Algorithm, stages) -> str:
  """Who keeps a state for every client: 'scaffold', 'error feedback', both, or '' (no one)."""
  names = [algorithm.name] if algorithm.init_client_state else []
  return ' and '.join(names + [s.name.replace('_', ' ') for s in stages if s.init_client_state])


def check_fits(keeper: str, needed: int, num_runs: int) -> None:
  """Refuses client states of `needed` bytes past host_budget(); `keeper`: whose they are."""
  machine.check_fits(
      needed,
      host_budget(), f'{keeper} keeps a state for every client: {{needed}} for '
      f'{num_runs} run(s), more than a quarter of this machine\'s memory ({{budget}}): use fewer '
      'clients, a smaller model, or fewer runs per chunk (sweep.max_runs_per_chunk)',
      sizes=machine.gib_text)


# The cohort's rows of the store [R, N, ...] (clients [R, K]), and the store with them replaced.
_rows = jax.vmap(lambda store, clients: jax.tree.map(lambda a: a[clients], store))
_with_rows = jax.vmap(
    lambda store, clients, new: jax.tree.map(lambda a, b: a.at[clients].set(b), store, new))


class ClientStates:
  """The [R, N, ...] client states of R runs, on the device or on the host."""

  def __init__(self, algorithm: Algorithm, params, num_clients: int, replicated, keeper: str = ''):
    """`params`: the runs' initial parameters [R, ...]; `replicated`: the rounds' sharding;
    `keeper`: whose states they are, for the error (default: the algorithm's)."""
    num_runs = jax.tree.leaves(params)[0].shape[0]
    one_run = jax.tree.map(lambda a: a[0], params)
    needed = bytes_needed(algorithm, one_run, num_runs, num_clients)
    check_fits(keeper or algorithm.name, needed, num_runs)
    self._replicated = replicated
    self._device = jax.local_devices()[0]
    where = home(needed, device_budget(self._device), jax.device_count(),
                 self._device.platform == 'cpu',
                 jax.process_count() == 1)
    self.on_device = where != 'host'
    self.in_round = where == 'devices'  # The round program reads and writes it (around()).
    # Every client of run r starts from init_client_state of run r's initial model; zeros (most
    # algorithms') are made lazily, so pages no client has used yet take no memory.
    first = jax.tree.map(np.asarray, jax.vmap(algorithm.init_client_state)(params))
    every = lambda a: (a.shape[0], num_clients, *a.shape[1:])
    initial = jax.tree.map(
        lambda a: np.zeros(every(a), a.dtype)
        if not a.any() else np.ascontiguousarray(np.broadcast_to(a[:, None], every(a))), first)
    self.set(initial)
    self._gather = jax.jit(_rows)
    self._scatter = jax.jit(_with_rows, donate_argnums=0)

  def around(self, train):
    """train(server, hp, cohort, states, *rest) -> (server, states, stats), the cohort's states
    [R, K, ...] in and out, as a function of the whole store and the cohort's client ids [R, K]
    instead: (server, hp, cohort, store, clients, *rest) -> (server, store, stats), the store
    with the cohort's rows written back (for a program that donates it; in_round)."""

    def with_store(server, hp, cohort, store, clients, *rest):
      server, states, stats = train(server, hp, cohort, _rows(store, clients), *rest)
      return server, _with_rows(store, clients, states), stats

    return with_store

  def store_shape(self):
    """Shapes of the store, placed as it is (for compiling a program that takes it)."""
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                        self._store)

  def run(self, round_fn, clients, *args):
    """Calls a program made with around() on the store (donated), and keeps the store it returns:
    the program's other outputs."""
    server, self._store, stats = round_fn(*args[:3], self._store, clients, *args[3:])
    return server, stats

  def cohort_shape(self, clients_per_round: int):
    """Shapes of a cohort's states [R, K, ...], placed for the round program."""
    return jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(
            (a.shape[0], clients_per_round, *a.shape[2:]), a.dtype, sharding=self._replicated),
        self._store)

  def set(self, states) -> None:
    """Replaces every client's state with host arrays [R, N, ...] (a fresh start, a restore)."""
    if self.on_device:
      self._store = jax.device_put(states, self._replicated if self.in_round else self._device)
    else:
      self._store = jax.tree.map(np.array, states)

  def get(self):
    """Every client's state as host arrays [R, N, ...] (for a checkpoint)."""
    return jax.tree.map(np.asarray, self._store)

  def gather(self, clients: jax.Array):
    """The cohort's states [R, K, ...], placed for the round program."""
    if self.on_device:
      out = self._gather(self._store, jax.device_put(clients, self._device))
    else:
      rows = np.asarray(clients)
      out = jax.tree.map(lambda a: np.stack([a[r, rows[r]] for r in range(len(rows))]), self._store)
    return jax.device_put(out, self._replicated)

  def scatter(self, clients: jax.Array, new) -> None:
    """Writes the cohort's states after the round back."""
    if self.on_device:
      new = jax.device_put(new, self._device)
      self._store = self._scatter(self._store, jax.device_put(clients, self._device), new)
    else:
      rows, new = np.asarray(clients), jax.tree.map(np.asarray, new)
      for r in range(len(rows)):
        jax.tree.map(lambda a, b: a[r].__setitem__(rows[r], b[r]), self._store, new)
