"""What a run needs of the machine, known before anything large is built, and the refusals of runs
that cannot have it.

Memory. The estimate adds up what a run holds at its peak, from its config: JAX and its compiler
(BASE_BYTES); the data while they are loaded or generated, and their host copy; their copies on
the devices (the CPU's devices share the machine's memory: D devices hold D copies of replicated
data); the round program's shuffle tables ([J + 1, E, 48] uint32, three of them, on every device),
its lanes' models and batches, the server states; the clients' states; the evaluation's chunk. It
is made twice: by validation before the data are loaded (the synthetic and MNIST partitions' sizes
follow from config.data without generating or reading an example; other tasks' data are counted
once loaded), and by the Simulation once the data are there, before anything reaches a device;
the compiled programs' own working memory then replaces the formulas'. A run over the machine's
memory (or an accelerator's) is refused in one line with the estimate and the memory, naming the
largest need, its fields and the fix. Measured peaks of whole runs were 0.7 to 1.15 times the
estimate (tests/resources_test.py holds it to them).

Counts. The device counts local steps, lane loads and rows in int32: a run whose counts could pass
2^31 - 1 is refused (check_rows, check_steps, check_gathered_rows); totals over rounds are summed
on the host, in Python ints.

A batch larger than every client is clamped to the largest client (batch_size): every client's
epoch is then one full batch, as it was, without padding to a size that no client has.
"""
from collections.abc import Callable
import contextlib
import dataclasses
import functools
import importlib.metadata
import importlib.util
import os
import re
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedprox_jax import algorithms
from fedprox_jax import tasks
from fedprox_jax.core import shuffle
from fedprox_jax.engine import evaluation
from fedprox_jax.errors import ConfigError
from fedprox_jax.tasks import models

INT32_MAX = 2**31 - 1
# CPU devices a process may split the CPU into (compute.cpu_devices), or its cores if more. Each
# runs its lanes on threads of its own and, with replicated client data, holds a copy of the data
# (the devices share the machine's memory); a device more than the cores buys no speed, and 256
# covers the cores of the largest common two-socket machines.
MAX_CPU_DEVICES = max(256, os.cpu_count() or 1)
# JAX, the libraries and the compiler's working memory: the measured peak of a tiny run (0.45 to
# 0.53 GB) rounded up.
BASE_BYTES = 512 << 20
# A lane's step holds its model about four times (parameters, anchor, gradient, update).
LANE_MODEL_COPIES = 4

# --- The machine.


def machine_memory() -> int:
  """Bytes of memory this process can have: the machine's, or its container's limit if lower."""
  total = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  for path in ('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'):
    try:
      with open(path) as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit():
      total = min(total, int(text))
  return total


def size_text(n: float) -> str:
  """Bytes for a message, in MiB, GiB or TiB."""
  if n >= 2**40:
    return f'{n / 2**40:,.1f} TiB'
  if n >= 2**30:
    return f'{n / 2**30:.1f} GiB'
  return f'{n / 2**20:.1f} MiB'


def gib_text(n: float) -> str:
  return f'{n / 2**30:.1f} GiB'


def check_fits(needed: float,
               budget: float,
               message: str,
               sizes: Callable[[float], str] = size_text) -> None:
  """Refuses (ConfigError) `needed` bytes over `budget`; `message` is the line, with {needed} and
  {budget} filled in as `sizes` writes them."""
  if needed > budget:
    raise ConfigError(message.format(needed=sizes(needed), budget=sizes(budget)))


class Devices(NamedTuple):
  """The devices a process runs on, as far as memory goes."""
  count: int  # In this process.
  cpu: bool  # The CPU's devices, which share the machine's memory.
  memory: int  # Bytes of each device (the machine's for CPU devices).
  platform: str
  everywhere: int = 0  # In all processes of the run (the lanes are shared out over them); 0: count.


def _started() -> bool:
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    return False  # Cannot tell: the config's devices, rather than start JAX too early.


def _accelerator_expected() -> bool:
  """Whether JAX will run on an accelerator, known without starting it (which would fix the CPU's
  device count before compute.cpu_devices is applied)."""
  platforms = (jax.config.jax_platforms or '').split(',')[0].strip()
  if platforms:
    return platforms != 'cpu'
  plugins = importlib.metadata.entry_points(group='jax_plugins')
  return bool(plugins) or any(
      importlib.util.find_spec(name) is not None for name in ('jax_plugins', 'libtpu'))


def devices_now() -> Devices:
  """The process's devices (JAX starts, if it had not)."""
  local = jax.local_devices()
  cpu = local[0].platform == 'cpu'
  limit = None
  if not cpu:
    limit = (local[0].memory_stats() or {}).get('bytes_limit')
  return Devices(len(local), cpu, int(limit or machine_memory()), local[0].platform,
                 jax.device_count())


def devices_planned(c: ml_collections.ConfigDict) -> Devices | None:
  """The devices a run of `c` will have, known before JAX starts; None when they will be
  accelerators (their memory is known once JAX starts: the Simulation checks it then)."""
  if _started():
    return devices_now()
  if _accelerator_expected():
    return None
  return Devices(c.compute.cpu_devices or os.cpu_count() or 1, True, machine_memory(), 'cpu')


# --- The data.


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


# --- The model.


def _intermediate_bytes(jaxpr, times: int = 1) -> int:
  """Bytes of every value a jaxpr makes, loops' bodies counted once per iteration."""
  from jax.extend import core as jex_core  # pylint: disable=g-import-not-at-top
  total = 0
  for eqn in jaxpr.eqns:
    for var in eqn.outvars:
      aval = var.aval
      if hasattr(aval, 'shape'):
        total += int(np.prod(aval.shape)) * aval.dtype.itemsize * times
    for sub in jex_core.jaxprs_in_params(eqn.params):
      total += _intermediate_bytes(sub, times * int(eqn.params.get('length', 1)))
  return total


def _nbytes(tree) -> int:
  return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree))


class ModelCost(NamedTuple):
  param_bytes: int  # One model.
  example_bytes: int  # Values one example's forward pass makes (a step keeps about as much).
  upload_bytes: int  # What a client uploads.
  client_state_bytes: int  # What the algorithm keeps for a client (0: nothing).
  server_bytes: int  # A run's server state.


@functools.lru_cache(maxsize=64)
def _model_cost(model: str, options: tuple, num_classes: int, input_dim: int, algorithm: str,
                optimizer: str, hp_names: tuple) -> ModelCost:
  """From shapes alone (everything traced inside eval_shape and make_jaxpr): nothing runs, so
  JAX's devices can still be configured after this."""
  from fedprox_jax.algorithms import server_optimizers  # pylint: disable=g-import-not-at-top
  from fedprox_jax.algorithms.base import ClientResult  # pylint: disable=g-import-not-at-top
  cls = models.MODELS[model]
  module = cls(num_classes=num_classes,
               **{
                   k: v for k, v in options if k in cls.__dataclass_fields__
               })
  dtype = getattr(cls, 'input_dtype', jnp.float32)
  params = jax.eval_shape(lambda k: module.init(k, jnp.zeros((1, input_dim), dtype))['params'],
                          jax.ShapeDtypeStruct((2,), jnp.uint32))
  forward = [
      _intermediate_bytes(
          jax.make_jaxpr(lambda p, x: module.apply({'params': p}, x))(params,
                                                                      jax.ShapeDtypeStruct(
                                                                          (b, input_dim),
                                                                          dtype)).jaxpr)
      for b in (1, 2)
  ]
  alg = algorithms.get(algorithm)

  def states(p, hp, steps):
    client_state = alg.init_client_state(p) if alg.init_client_state is not None else None
    state = alg.init_state(p, hp)
    result = ClientResult(p, steps, hp['learning_rate'], hp['weight_decay'], hp['mu'])
    upload = alg.upload(result, state, client_state, hp)[0]
    return client_state, state, upload, server_optimizers.make(optimizer, hp).init(p)

  hp = {name: jax.ShapeDtypeStruct((), dtype) for name, dtype in hp_names}
  client_state, state, upload, server = jax.eval_shape(states, params, hp,
                                                       jax.ShapeDtypeStruct((), jnp.int32))
  return ModelCost(param_bytes=_nbytes(params),
                   example_bytes=max(forward[1] - forward[0], 0),
                   upload_bytes=_nbytes(upload),
                   client_state_bytes=_nbytes(client_state) if client_state is not None else 0,
                   server_bytes=_nbytes(params) + _nbytes(server) + _nbytes(state))


def model_cost(c: ml_collections.ConfigDict) -> ModelCost:
  from fedprox_jax.engine import run_settings  # pylint: disable=g-import-not-at-top
  num_classes, input_dim = tasks.model_dims(c.data)
  options = tuple(sorted(models.options(c.model).items()))
  hp = run_settings.from_config(c).hp
  hp_names = tuple(sorted((k, np.asarray(v).dtype.name) for k, v in hp.items()))
  return _model_cost(c.model.name, options, num_classes, input_dim, c.algorithm.name,
                     c.server.optimizer, hp_names)


# --- The estimate.


class Term(NamedTuple):
  bytes: float
  place: str  # 'load': while loading; 'host'; 'each': on every device; 'first': on the first.
  what: str
  fix: str
  program: str = ''  # 'round' or 'eval': a compiled program's working memory (refine()).


def batch_size(requested: int, largest: int) -> int:
  """The batch the lanes hold: client.batch_size, or the largest client's training examples when
  every client has fewer (each epoch is one full batch either way)."""
  return max(1, min(requested, largest)) if largest else requested


def num_lanes(requested: int, num_jobs: int, devices: Devices) -> int:
  """placement.choose_num_lanes for devices that JAX has not started."""
  from fedprox_jax.engine import placement  # pylint: disable=g-import-not-at-top
  return placement.choose_num_lanes(
      requested, num_jobs, [types.SimpleNamespace(platform=devices.platform)] * devices.count)


def _client_data_mode(c: ml_collections.ConfigDict, data: DataPlan, devices: Devices,
                      num_runs: int) -> str:
  """cohort_rows.choose for devices that JAX has not started."""
  from fedprox_jax.engine import cohort_rows  # pylint: disable=g-import-not-at-top
  if c.compute.client_data != 'auto':
    return c.compute.client_data
  small = num_runs * data.cohort_rows <= cohort_rows.AUTO_SHARE * data.train_rows
  return 'per_round' if devices.cpu and devices.count > 1 and small else 'replicated'


def estimate(c: ml_collections.ConfigDict,
             data: DataPlan,
             devices: Devices,
             num_runs: int,
             lanes: int,
             batch: int,
             mode: str | None = None,
             num_clients: int | None = None) -> list[Term]:
  """The memory that R = num_runs runs of `c` hold, term by term (bytes, where, what, fix)."""
  r, e = num_runs, c.client.local_epochs
  jobs = r * c.clients_per_round + 1  # And the empty job.
  cost = model_cost(c)
  mode = mode or _client_data_mode(c, data, devices, r)
  per_device = -(-lanes // max(devices.everywhere or devices.count, 1))  # Lanes on each device.
  num_clients = c.data.get('num_clients', 0) if num_clients is None else num_clients
  lanes_fix = 'lower compute.num_lanes (0 chooses)'
  terms = [
      Term(BASE_BYTES, 'host', 'JAX, its compiler and the libraries', 'use a larger machine'),
      Term(data.load_bytes, 'load', f'the data ({data.described}) while loaded', data.fix),
      Term(data.host_bytes, 'host', f'the data ({data.described})', data.fix),
      Term(data.eval_rows * data.row_bytes + 4 * data.train_rows + data.other_bytes, 'first',
           f'the evaluation\'s copy of the data ({data.described})', data.fix),
      Term(2 * r * cost.server_bytes, 'each', f'the server states of {r} run(s)',
           'use fewer runs per chunk (sweep.max_runs_per_chunk)'),
      Term(3 * jobs * e * shuffle.SWAP_OR_NOT_ROUNDS * 4, 'each',
           f'the shuffle tables of {_count(jobs - 1, "client job")} x client.local_epochs = {e:,}',
           'lower client.local_epochs or clients_per_round', 'round'),
      Term(per_device * jobs * 16, 'each', f'the job lists of compute.num_lanes = {lanes:,} lanes',
           lanes_fix, 'round'),
      Term(
          per_device * (LANE_MODEL_COPIES * cost.param_bytes + 2 * r * cost.upload_bytes +
                        2 * jobs * cost.client_state_bytes), 'each',
          f'the models of compute.num_lanes = {lanes:,} lanes', lanes_fix, 'round'),
      Term(per_device * batch * (data.row_bytes + 2 * cost.example_bytes), 'each',
           f'{lanes:,} lanes\' batches of client.batch_size = {batch:,} examples',
           'lower client.batch_size or compute.num_lanes', 'round'),
  ]
  if mode == 'replicated':
    terms.append(
        Term(data.train_rows * data.row_bytes + 8 * num_clients + data.other_bytes, 'each',
             f'the clients\' data ({data.described})',
             ('lower compute.cpu_devices, or set compute.client_data=per_round'
              if devices.cpu and devices.count > 1 else data.fix)))
  else:
    terms += [
        Term(data.train_rows * data.row_bytes + 8 * num_clients, 'first',
             f'the clients\' data ({data.described})', data.fix),
        Term(2 * r * data.cohort_rows * data.row_bytes + data.other_bytes, 'each',
             'the cohort\'s rows gathered each round', 'lower clients_per_round'),
    ]
  chunk = min(evaluation.chunk_size(c), max(data.train_rows, 1))
  terms.append(
      Term(r * chunk * (data.row_bytes + cost.example_bytes), 'first',
           f'the evaluation\'s chunks of {chunk:,} examples', 'lower eval.chunk_size (0 chooses)',
           'eval'))
  if c.eval.dissimilarity:  # A gradient sum per client, and a chunk of per-example gradients.
    terms.append(
        Term((3 * num_clients + min(chunk, 1024)) * cost.param_bytes, 'first',
             f'the dissimilarity\'s gradients of {num_clients:,} clients',
             'set eval.dissimilarity=False', 'eval'))
  if cost.client_state_bytes:
    terms.append(
        Term(r * num_clients * cost.client_state_bytes, 'first',
             f'{c.algorithm.name}\'s state of each of {num_clients:,} clients',
             'use fewer clients, or fewer runs per chunk (sweep.max_runs_per_chunk)'))
  if r > 1:  # A sweep's chunk: fewer runs side by side need less of all that the runs hold.
    chunks = 'sweep.max_runs_per_chunk'
    terms = [
        t._replace(fix=f'{t.fix}, or fewer runs per chunk ({chunks})')
        if t.place != 'load' and chunks not in t.fix else t for t in terms
    ]
  return terms


def refine(terms: list[Term], program: str, working_bytes: float | None) -> list[Term]:
  """The terms with a compiled program's formulas replaced by its measured working memory."""
  if working_bytes is None:
    return terms
  mine = [t for t in terms if t.program == program]
  if not mine:
    return terms
  largest = max(mine, key=lambda t: t.bytes)
  name = 'the rounds\'' if program == 'round' else 'the evaluation\'s'
  place = 'each' if program == 'round' else 'first'
  return [t for t in terms if t.program != program] + [
      Term(working_bytes, place, f'{name} working memory (mostly {largest.what})', largest.fix,
           program)
  ]


def peak(terms: list[Term], devices: Devices) -> tuple[float, float, list[tuple[float, Term]]]:
  """(The host's peak, each device's, and [(bytes, term)] of what makes the host's peak). On CPU
  devices everything is in the host's memory, a device's terms once per device; loading comes
  before the devices' share, with the base."""
  placed = [
      (t.bytes * (devices.count if t.place == 'each' and devices.cpu else 1), t) for t in terms
  ]
  total = lambda places: sum(b for b, t in placed if t.place in places)
  on_device = ('each', 'first')
  running = total(('host',) + (on_device if devices.cpu else ()))
  loading = total(('load',)) + BASE_BYTES
  device = 0.0 if devices.cpu else total(on_device)
  if loading > running:
    return loading, device, [(b, t) for b, t in placed if t.place == 'load']
  return running, device, [(b, t) for b, t in placed if t.place != 'load']


def check_memory(terms: list[Term], devices: Devices) -> float:
  """Refuses a run whose estimate passes the host's or a device's memory; returns the host's."""
  host, device, placed = peak(terms, devices)
  budget = machine_memory()
  if host > budget:
    largest, term = max(placed, key=lambda p: p[0])
    times = (f' ({size_text(term.bytes)} on each of {devices.count} CPU devices)'
             if term.place == 'each' and devices.cpu and devices.count > 1 else '')
    check_fits(
        host, budget, 'the run needs about {needed} of memory, more than this machine\'s '
        f'{{budget}}; the most, {size_text(largest)}, is {term.what}{times}: {term.fix}')
  if not devices.cpu and device > devices.memory:
    largest, term = max(((t.bytes, t) for t in terms if t.place in ('each', 'first')),
                        key=lambda p: p[0])
    check_fits(
        device, devices.memory, f'the run needs about {{needed}} on each {devices.platform} '
        f'device, more than its {{budget}}; the most, {size_text(largest)}, is {term.what}: '
        f'{term.fix}')
  return host


def check_config(c: ml_collections.ConfigDict, num_runs: int = 1) -> None:
  """Validation's checks, before the data are loaded and before JAX starts: the int32 counts and
  the memory, as far as the data's plan (synthetic and MNIST: exact) and the devices allow."""
  data = planned_data(c) or NO_DATA
  batch = batch_size(c.client.batch_size, data.largest)
  check_rows(data, batch)
  devices = devices_planned(c)
  # Accelerators: their lanes are chosen from their count, known once JAX starts; one here.
  lanes = num_lanes(c.compute.num_lanes, num_runs * c.clients_per_round, devices or
                    Devices(1, False, 0, 'accelerator'))
  if devices is None:  # Only the host's part here; the devices' once JAX has started.
    terms = estimate(c, data, Devices(1, False, 0, 'accelerator'), num_runs, lanes, batch)
    check_memory([t for t in terms if t.place in ('load', 'host')],
                 Devices(1, False, 2**62, 'accelerator'))
  else:
    check_memory(estimate(c, data, devices, num_runs, lanes, batch), devices)
  if data.train_sizes is not None:
    check_steps(c, data.train_sizes, num_runs, lanes, batch)


# --- Counts in int32.


def check_rows(data: DataPlan, batch: int) -> None:
  """Rows are indexed in int32 on the device, and a client's batch reads positions up to its
  examples + batch - 1."""
  if data.train_rows > INT32_MAX or data.largest + batch - 1 > INT32_MAX:
    raise ConfigError(f'config.data gives {data.train_rows:,} training examples '
                      f'({data.described}), more than 2^31 - 1, the most this simulator indexes: '
                      f'{data.fix}')


def check_steps(c: ml_collections.ConfigDict, train_sizes: np.ndarray, num_runs: int, lanes: int,
                batch: int) -> None:
  """Refuses local steps that the device's int32 counts would overflow: a client's steps
  (local_epochs x batches), a lane's load, a round's real steps and its steps over all lanes
  (executed_steps). A round of R cohorts of K clients runs at most R times the K largest clients'
  steps; greedy packing onto L lanes loads the busiest lane with at most total / L + the largest
  job, so the lanes execute at most total + L x the largest job."""
  sizes = np.asarray(train_sizes, np.int64)
  if not len(sizes):
    return
  e = c.client.local_epochs
  steps = e * -(-sizes // batch)  # int64: below 2^31 x 2^31.
  k = min(c.clients_per_round, len(sizes))
  largest = int(steps.max())
  real = num_runs * int(np.sort(steps)[len(steps) - k:].sum())
  if real + lanes * largest <= INT32_MAX:
    return
  job = (f'the largest client, {int(sizes.max()):,} training examples, takes {largest:,} with '
         f'client.local_epochs = {e:,} and client.batch_size = {c.client.batch_size:,}')
  if real <= INT32_MAX and lanes * largest > real:  # Mostly idle lanes' steps.
    raise ConfigError(
        f'config.compute.num_lanes = {lanes:,} lanes would execute up to '
        f'{real + lanes * largest:,} lane steps a round ({job}), more than 2^31 - 1 = '
        f'{INT32_MAX:,}, the most the device counts: lower compute.num_lanes (0 chooses)')
  raise ConfigError(
      f'config.client.local_epochs = {e:,} makes rounds of up to {real + lanes * largest:,} '
      f'local steps ({job}; {_count(num_runs * k, "client job")} on {_count(lanes, "lane")}), '
      f'more than 2^31 - 1 = {INT32_MAX:,}, the most the device counts: lower '
      'client.local_epochs or clients_per_round, or raise client.batch_size')


def _count(n: int, thing: str) -> str:
  return f'{n:,} {thing}{"" if n == 1 else "s"}'


def check_gathered_rows(num_rows: int) -> None:
  """The rows a round gathers (compute.client_data=per_round) are counted in int32."""
  if num_rows > INT32_MAX:
    raise ConfigError(f'a round would gather up to {num_rows:,} rows, more than 2^31 - 1: lower '
                      'clients_per_round or the runs per program, or set '
                      'compute.client_data=replicated')


# --- Running out of memory anyway.


def out_of_memory(e: BaseException, estimate_bytes: float | None = None) -> ConfigError | None:
  """A ConfigError in one line for an allocation that failed (NumPy's MemoryError and its
  _ArrayMemoryError, XLA's RESOURCE_EXHAUSTED), else None: what a command line prints in place of
  the traceback."""
  text = ' '.join(str(e).split())
  if isinstance(e, MemoryError):
    amount = re.search(r'allocate (\S+ \S+) for', text)
  elif isinstance(e, jax.errors.JaxRuntimeError) and 'RESOURCE_EXHAUSTED' in text:
    amount = re.search(r'allocating (\d+) bytes', text)
  else:
    return None
  if amount and amount.group(1).isdigit():
    what = f' allocating {size_text(int(amount.group(1)))}'
  elif amount:
    what = f' allocating {amount.group(1)}'
  else:
    what = f' ({text[:150]})' if text else ''
  needs = (f'the run was estimated to need {size_text(estimate_bytes)} of this machine\'s '
           f'{size_text(machine_memory())}'
           if estimate_bytes else f'this machine has {size_text(machine_memory())}')
  return ConfigError(
      f'ran out of memory{what}: {needs}, which other processes share: free memory, or use fewer '
      'or smaller clients, fewer lanes (compute.num_lanes), a smaller client.batch_size or '
      'eval.chunk_size, or fewer compute.cpu_devices')


@contextlib.contextmanager
def memory_errors(estimate_bytes: Callable[[], float | None] | None = None):
  """Turns a failed allocation inside into out_of_memory's ConfigError, with the estimate that
  `estimate_bytes()` then gives."""
  try:
    yield
  except (MemoryError, jax.errors.JaxRuntimeError) as e:
    error = out_of_memory(e, estimate_bytes() if estimate_bytes else None)
    if error is None:
      raise
    raise error from None
