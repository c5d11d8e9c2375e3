"""The memory a run holds at its peak, estimated from its settings and checked against the machine.

The estimate adds up, term by term (Term: bytes, where, what, the fix): JAX and its compiler
(BASE_BYTES); the data while they are loaded or generated, and their host copy; their copies on
the devices (the CPU's devices share the machine's memory: D devices hold D copies of replicated
data); the round program's shuffle tables ([J + 1, E, 48] uint32, three of them, on every device),
its lanes' models and batches, the server states; the clients' states; the evaluation's chunk. It
is made twice: by validation before the data are loaded (experiment/preflight.py, from the
data's plan), and by the Simulation once the data are there, before anything reaches a device;
the compiled programs' own working memory then replaces the formulas' (refine). A run over the
machine's memory (or an accelerator's) is refused in one line with the estimate and the memory,
naming the largest need, its fields and the fix (check_memory). Measured peaks of whole runs were
0.7 to 1.15 times the estimate (tests/resources_test.py holds it to them).
"""
from typing import NamedTuple

from fedprox_jax import aggregation
from fedprox_jax import algorithms
from fedprox_jax.core import shuffle
from fedprox_jax.engine import client_states
from fedprox_jax.engine import evaluation
from fedprox_jax.engine import machine
from fedprox_jax.engine import model_cost
from fedprox_jax.engine.machine import Devices
from fedprox_jax.engine.program_settings import ProgramSettings
from fedprox_jax.tasks.data_plan import DataPlan

# JAX, the libraries and the compiler's working memory: the measured peak of a tiny run (0.45 to
# 0.53 GB) rounded up.
BASE_BYTES = 512 << 20
# A lane's step holds its model about four times (parameters, anchor, gradient, update).
LANE_MODEL_COPIES = 4


class Term(NamedTuple):
  bytes: float
  place: str  # 'load': while loading; 'host'; 'each': on every device; 'first': on the first.
  what: str
  fix: str
  program: str = ''  # 'round' or 'eval': a compiled program's working memory (refine()).


def _client_data_mode(program: ProgramSettings, data: DataPlan, devices: Devices,
                      num_runs: int) -> str:
  """cohort_rows.choose for devices that JAX has not started."""
  from fedprox_jax.engine import cohort_rows  # pylint: disable=g-import-not-at-top
  if program.client_data != 'auto':
    return program.client_data
  small = num_runs * data.cohort_rows <= cohort_rows.AUTO_SHARE * data.train_rows
  return 'per_round' if devices.cpu and devices.count > 1 and small else 'replicated'


def estimate(program: ProgramSettings,
             cost: model_cost.ModelCost,
             data: DataPlan,
             devices: Devices,
             num_runs: int,
             lanes: int,
             batch: int,
             mode: str | None = None,
             num_clients: int = 0) -> list[Term]:
  """The memory that R = num_runs runs of `program` hold, term by term (bytes, where, what, fix),
  with `cost` its model's (engine/model_cost.py) and `num_clients` the population."""
  p, r, e = program, num_runs, program.local_epochs
  n = p.name
  jobs = r * p.clients_per_round + 1  # And the empty job.
  mode = mode or _client_data_mode(p, data, devices, r)
  per_device = -(-lanes // max(devices.everywhere or devices.count, 1))  # Lanes on each device.
  lanes_fix = f'lower {n("num_lanes")} (0 chooses)'
  client_jobs = machine.count_text(jobs - 1, 'client job')
  runs_fix = f'use fewer runs per chunk ({n("runs_per_chunk")})'
  terms = [
      Term(BASE_BYTES, 'host', 'JAX, its compiler and the libraries', 'use a larger machine'),
      Term(data.load_bytes, 'load', f'the data ({data.described}) while loaded', data.fix),
      Term(data.host_bytes, 'host', f'the data ({data.described})', data.fix),
      # And the client of each training and local test row (int32; counted for the central test
      # rows too, which have none: the plan does not tell them apart).
      Term((data.eval_rows + data.train_rows) * 4 + data.eval_rows * data.row_bytes +
           data.other_bytes, 'first', f'the evaluation\'s copy of the data ({data.described})',
           data.fix),
      Term(2 * r * cost.server_bytes, 'each', f'the server states of {r} run(s)', runs_fix),
      Term(3 * jobs * e * shuffle.SWAP_OR_NOT_ROUNDS * 4, 'each',
           f'the shuffle tables of {client_jobs} x {n("local_epochs")} = {e:,}',
           f'lower {n("local_epochs")} or {n("clients_per_round")}', 'round'),
      Term(per_device * jobs * 16, 'each', f'the job lists of {n("num_lanes")} = {lanes:,} lanes',
           lanes_fix, 'round'),
      Term(
          per_device * (LANE_MODEL_COPIES * cost.param_bytes + 2 * r * cost.upload_bytes +
                        2 * jobs * cost.client_state_bytes), 'each',
          f'the models of {n("num_lanes")} = {lanes:,} lanes', lanes_fix, 'round'),
      Term(per_device * batch * (data.row_bytes + 2 * cost.example_bytes), 'each',
           f'{lanes:,} lanes\' batches of {n("batch_size")} = {batch:,} examples',
           f'lower {n("batch_size")} or {n("num_lanes")}', 'round'),
  ]
  if mode == 'replicated':
    terms.append(
        Term(data.train_rows * data.row_bytes + 8 * num_clients + data.other_bytes, 'each',
             f'the clients\' data ({data.described})',
             (f'lower {n("cpu_devices")}, or set {n("client_data")}=per_round'
              if devices.cpu and devices.count > 1 else data.fix)))
  else:
    terms += [
        Term(data.train_rows * data.row_bytes + 8 * num_clients, 'first',
             f'the clients\' data ({data.described})', data.fix),
        Term(2 * r * data.cohort_rows * data.row_bytes + data.other_bytes, 'each',
             'the cohort\'s rows gathered each round', f'lower {n("clients_per_round")}'),
    ]
  chunk = min(evaluation.chunk_size(p), max(data.train_rows, 1))
  terms.append(
      Term(r * chunk * (data.row_bytes + cost.eval_example_bytes), 'first',
           f'the evaluation\'s chunks of {chunk:,} examples',
           f'lower {n("eval_chunk")} (0 chooses)', 'eval'))
  # The spread of the clients' local test accuracies: per run, every client's sum of correct
  # predictions, its accuracy, and their masked and sorted copies ([clients, R] float32 each).
  terms.append(
      Term(4 * 4 * r * num_clients, 'first',
           f'the local test accuracies of {num_clients:,} clients', data.fix, 'eval'))
  if p.eval_dissimilarity:  # A gradient sum per client, and a chunk of per-example gradients.
    terms.append(
        Term((3 * num_clients + min(chunk, 1024)) * cost.param_bytes, 'first',
             f'the dissimilarity\'s gradients of {num_clients:,} clients',
             f'set {n("eval_dissimilarity")}=False', 'eval'))
  if cost.client_state_bytes:
    needed = r * num_clients * cost.client_state_bytes
    budget = (client_states.DEVICE_BUDGET
              if devices.cpu else min(client_states.DEVICE_BUDGET, devices.memory // 8))
    where = client_states.home(needed, budget, devices.everywhere or devices.count, devices.cpu,
                               devices.everywhere in (0, devices.count))
    terms.append(
        Term(needed, 'each' if where == 'devices' else 'first',
             f'{_keeper(p)}\'s state of each of {num_clients:,} clients',
             f'use fewer clients, or fewer runs per chunk ({n("runs_per_chunk")})'))
  if r > 1:  # A sweep's chunk: fewer runs side by side need less of all that the runs hold.
    chunks = n('runs_per_chunk')
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
  budget = machine.machine_memory()
  if host > budget:
    largest, term = max(placed, key=lambda p: p[0])
    times = (f' ({machine.size_text(term.bytes)} on each of {devices.count} CPU devices)'
             if term.place == 'each' and devices.cpu and devices.count > 1 else '')
    machine.check_fits(
        host, budget, 'the run needs about {needed} of memory, more than this machine\'s '
        f'{{budget}}; the most, {machine.size_text(largest)}, is {term.what}{times}: {term.fix}')
  if not devices.cpu and device > devices.memory:
    largest, term = max(((t.bytes, t) for t in terms if t.place in ('each', 'first')),
                        key=lambda p: p[0])
    machine.check_fits(
        device, devices.memory, f'the run needs about {{needed}} on each {devices.platform} '
        f'device, more than its {{budget}}; the most, {machine.size_text(largest)}, is '
        f'{term.what}: {term.fix}')
  return host


def _keeper(p: ProgramSettings) -> str:
  """Whose per-client state it is: the algorithm's, error feedback's, or both."""
  return client_states.keepers(algorithms.get(p.algorithm), aggregation.chain(p.aggregation))
