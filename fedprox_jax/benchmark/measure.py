"""The benchmark's measurements of the default task (MNIST) and of the synthetic populations, each
made in its own process (so its peak memory is its own); measure_lstm.py has the Shakespeare
task's."""
import importlib.util
import resource
import sys
import time

import jax
import ml_collections
import numpy as np

from fedprox_jax import algorithms as algorithm_registry
from fedprox_jax import config_fields
from fedprox_jax import tasks
from fedprox_jax.engine import devices
from fedprox_jax.engine import reference
from fedprox_jax.experiment import grid
from fedprox_jax.experiment import rounds
from fedprox_jax.experiment import settings
from fedprox_jax.experiment.writers import RunWriter
from fedprox_jax.tasks import models

# The server optimizers timed with FedAvg's local training: (label, optimizer).
SERVER_OPTIMIZERS = (('fedavgm', 'momentum'), ('fedadam', 'adam'), ('fedyogi', 'yogi'),
                     ('fedadagrad', 'adagrad'))
# Algorithms that contrast the model's representations run on the default task with the first
# model that has one, timed against FedAvg on it: the CNN, on 100 clients (1000 clients' previous
# models, 6.2 GiB, pass the memory check of a 24 GiB machine's), one local epoch (its rounds are
# seconds long on a CPU).
REPRESENTATION_CHANGES = {'data.num_clients': 100, 'client.local_epochs': 1}
REPRESENTATION_ROUNDS = 10


def algorithm_rows() -> tuple[list, list]:
  """(label, config changes) of what is timed against FedProx on the default model (every
  registered algorithm, at mu = 0 as their presets, then the server optimizers) and of what is
  timed against FedAvg on a model with a representation (the algorithms that need one)."""
  default, represented = [('fedprox', {})], [('fedavg', {'algorithm.mu': 0.0})]
  for name, algorithm in algorithm_registry.ALGORITHMS.items():
    if name != 'fedprox':
      rows = represented if algorithm.needs_representation else default
      rows.append((name, {'algorithm.name': name, 'algorithm.mu': 0.0}))
  represented[0][1]['algorithm.name'] = 'fedavg'
  default += [(label, {
      'server.optimizer': opt,
      'algorithm.mu': 0.0
  }) for label, opt in SERVER_OPTIMIZERS]
  model = {'model.name': models.with_representation()[0], **REPRESENTATION_CHANGES}
  return default, ([(label, {
      **model,
      **changes
  }) for label, changes in represented] if len(represented) > 1 else [])


# Client-level DP (docs/privacy.md) timed against the same algorithm without it, both with the
# uniform weights that DP takes: (label, config changes), the first of each pair the reference.
_UNIFORM = {'algorithm.weighting': 'uniform'}
_DP = {**_UNIFORM, 'privacy.clip_norm': 1.0, 'privacy.noise_multiplier': 1.0}
PRIVACY_ROWS = (
    ('fedprox', _UNIFORM),
    ('dp_fedprox', _DP),
    ('dp_adaptive', {
        **_DP, 'privacy.noise_multiplier': 0.8,
        'privacy.target_quantile': 0.5
    }),
    ('scaffold', {
        **_UNIFORM, 'algorithm.name': 'scaffold',
        'algorithm.mu': 0.0
    }),
    ('dp_scaffold', {
        **_DP, 'algorithm.name': 'scaffold',
        'algorithm.mu': 0.0
    }),
)
# Compressed uploads (docs/compression.md) timed against the same round uncompressed: (label,
# config changes), the first the reference.
COMPRESSION_ROWS = (
    ('fedprox', {}),
    ('8_bits', {
        'compression.bits': 8
    }),
    ('1_bit', {
        'compression.bits': 1
    }),
    ('top_1%', {
        'compression.topk': 0.01
    }),
    ('top_1%_ef', {
        'compression.topk': 0.01,
        'compression.error_feedback': True
    }),
    ('4_bits_top_10%_ef', {
        'compression.bits': 4,
        'compression.topk': 0.1,
        'compression.error_feedback': True
    }),
)


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_config(num_rounds: int, cache: str) -> ml_collections.ConfigDict:
  from fedprox_jax.configs import mnist_fedprox  # pylint: disable=g-import-not-at-top
  base = mnist_fedprox.get_config()
  base.num_rounds = num_rounds
  base.compute.compilation_cache_dir = cache
  return base


def runs_of(kind: str, base, sweep_file: str):
  """The base config and the run settings of the default run ('single') or sweep ('sweep'), with
  the devices configured for them."""
  if kind == 'sweep':
    spec = importlib.util.spec_from_file_location('sweep_config', sweep_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base, named = grid.prepare(base, module.get_config())
    runs = [settings.for_run(run.config) for run in named]
  else:
    runs = [settings.for_run(base)]
  devices.configure(settings.for_compute(base))
  return base, runs


def full_run(base, runs) -> dict:
  """The default run or sweep, as its CLI runs it, with timings of its parts."""
  start = time.perf_counter()
  data = tasks.load(base.data)
  load_s = time.perf_counter() - start
  tick = time.perf_counter()
  sim = settings.simulation(base, data, runs)  # Compiles the programs, then moves the data in.
  setup_s = time.perf_counter() - tick
  del data
  writers = [RunWriter(None, base) for _ in runs]
  progress = rounds.run_rounds(sim, base, writers, [str(i) for i in range(len(runs))])
  per_round = np.diff([r['time/elapsed_s'] for r in writers[0].records])
  return dict(runs=len(runs),
              rounds=base.num_rounds,
              devices=jax.device_count(),
              platform=jax.devices()[0].platform,
              lanes=sim.num_lanes,
              data_load_s=load_s,
              setup_s=setup_s,
              round_s_median=float(np.median(per_round)),
              train_round_s_median=float(np.median(progress['round_times'])),
              client_steps_per_s=progress['real_steps'] / sum(progress['round_times']),
              real_work_share=progress['real_steps'] / progress['executed_steps'],
              final_test_accuracy=float(np.mean([w.records[-1]['test/accuracy'] for w in writers])),
              tensorflow_imported='tensorflow' in sys.modules,
              peak_rss_mb=peak_rss_mb())


def side_by_side(base, runs, num_rounds: int, data=None, sim=None) -> dict:
  """Packed program vs the sequential reference on the same cohorts, training only."""
  data = data or tasks.load(base.data)
  sim = sim or settings.simulation(base, data, runs)
  ref = reference.make_reference_train_cohort(sim.apply_fn,
                                              learning_rate=base.client.learning_rate,
                                              weight_decay=base.client.weight_decay,
                                              batch_size=base.client.batch_size)
  x = np.asarray(sim.client_data.x.addressable_data(0))
  y, offsets, sizes = data.train_y, data.train_offsets, data.train_sizes
  server = sim.initial_server
  jax.block_until_ready(sim.run_round(server, 1))
  packed, sequential, steps, diffs = [], [], [], []
  for r in range(1, num_rounds + 1):
    tick = time.perf_counter()
    new, stats = jax.block_until_ready(sim.run_round(server, r))
    packed.append(time.perf_counter() - tick)
    cohort = sim.sample(r)
    tick = time.perf_counter()
    want = ref(jax.device_get(server.params), cohort, np.asarray(sim.hp['mu']), x, y, offsets,
               sizes)
    sequential.append(time.perf_counter() - tick)
    steps.append(int(stats['real_steps']))
    diffs.append(
        max(
            float(np.max(np.abs(np.asarray(a) - b)))
            for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(want))))
    server = new
  return dict(rounds=len(packed),
              packed_round_s_median=float(np.median(packed)),
              sequential_round_s_median=float(np.median(sequential)),
              speedup=float(np.median(sequential) / np.median(packed)),
              speedup_total=float(np.sum(sequential) / np.sum(packed)),
              real_steps_per_round=float(np.mean(steps)),
              max_abs_difference=max(diffs))


def _interleaved(base, rows: list, num_rounds: int, reference: str) -> dict:
  """Training rounds of each (label, changes) row, interleaved round by round so that the
  machine's noise falls on all of them alike; medians and ratios to `reference`'s, and every
  round's time (the rows train the same cohorts: one seed)."""
  sims, servers, data = {}, {}, {}
  for label, changes in rows:
    config = ml_collections.ConfigDict(base.to_dict())
    config.update_from_flattened_dict(changes)
    key = config_fields.flatten(config.data.to_dict()).items()
    data_key = tuple(sorted((k, str(v)) for k, v in key))
    if data_key not in data:
      data[data_key] = tasks.load(config.data)
    sims[label] = settings.simulation(config, data[data_key], [settings.for_run(config)])
    servers[label] = jax.block_until_ready(sims[label].run_round(sims[label].initial_server, 1))[0]
  times = {label: [] for label in sims}
  for r in range(2, num_rounds + 2):
    for label, sim in sims.items():
      tick = time.perf_counter()
      servers[label], _ = jax.block_until_ready(sim.run_round(servers[label], r))
      times[label].append(time.perf_counter() - tick)
  medians = {label: float(np.median(t)) for label, t in times.items()}
  return dict(
      rounds=num_rounds,
      reference=reference,
      round_s=times,  # Round by round: rows compare round r with round r (one cohort).
      round_s_median=medians,
      round_s_min_max={
          k: (float(min(t)), float(max(t))) for k, t in times.items()
      },
      ratio={
          k: v / medians[reference] for k, v in medians.items()
      })


def compression_on_the_cnn(base) -> dict:
  """Compressed CNN rounds (1.66M parameters: top-k's search is over the largest tensor's 1.6M)
  against the uncompressed one, FedAvg on the representation rows' setting."""
  cnn = {
      'model.name': 'cnn',
      'algorithm.name': 'fedavg',
      'algorithm.mu': 0.0,
      **REPRESENTATION_CHANGES
  }
  rows = [(label, {
      **cnn,
      **changes
  })
          for label, changes in COMPRESSION_ROWS
          if label in ('fedprox', '8_bits', 'top_1%', 'top_1%_ef')]
  rows[0] = ('fedavg', rows[0][1])
  out = _interleaved(base, rows, REPRESENTATION_ROUNDS, 'fedavg')
  out['changes'] = cnn
  return out


def algorithms(base, num_rounds: int) -> dict:
  """Training rounds of every algorithm on the default task against FedProx's, and of those that
  need a model's representation on the CNN against FedAvg's there."""
  devices.configure(settings.for_compute(base))
  default, represented = algorithm_rows()
  out = {'default': _interleaved(base, default, num_rounds, 'fedprox')}
  out['privacy'] = _interleaved(base, list(PRIVACY_ROWS), num_rounds, 'fedprox')
  out['compression'] = _interleaved(base, list(COMPRESSION_ROWS), num_rounds, 'fedprox')
  out['compression_cnn'] = compression_on_the_cnn(base)
  if represented:
    out['representation'] = _interleaved(base, represented, min(num_rounds, REPRESENTATION_ROUNDS),
                                         'fedavg')
    out['representation']['changes'] = {
        'model.name': represented[0][1]['model.name'],
        **REPRESENTATION_CHANGES
    }
  return out


def cnn_cohort(base, clients_per_round: int, num_rounds: int) -> dict:
  """Training rounds of the CNN with `clients_per_round` clients, and one evaluation."""
  base.model.name = 'cnn'
  base.clients_per_round = clients_per_round
  devices.configure(settings.for_compute(base))
  data = tasks.load(base.data)
  tick = time.perf_counter()
  sim = settings.simulation(base, data, [settings.for_run(base)])
  setup_s = time.perf_counter() - tick
  server, times, real, executed = sim.initial_server, [], 0, 0
  for r in range(1, num_rounds + 1):
    tick = time.perf_counter()
    server, stats = jax.block_until_ready(sim.run_round(server, r))
    times.append(time.perf_counter() - tick)
    real, executed = real + int(stats['real_steps']), executed + int(stats['executed_steps'])
  tick = time.perf_counter()
  accuracy = float(sim.evaluate(server.params)['test/accuracy'][0])
  return dict(clients_per_round=clients_per_round,
              rounds=len(times),
              device=jax.devices()[0].device_kind,
              devices=jax.device_count(),
              lanes=sim.num_lanes,
              setup_s=setup_s,
              round_s_median=float(np.median(times)),
              client_steps_per_s=real / sum(times),
              real_work_share=real / executed,
              real_steps_per_round=real / len(times),
              evaluation_s=time.perf_counter() - tick,
              test_accuracy=accuracy,
              peak_rss_mb=peak_rss_mb())


def population(num_clients: int, num_rounds: int, cache: str) -> dict:
  """configs/synthetic.py:large at `num_clients` devices: setup (data generated and split, then
  programs compiled and data placed), training rounds, rounds with the preset's sampled
  evaluation, one evaluation of every device, and the process's peak memory."""
  from fedprox_jax.configs import synthetic  # pylint: disable=g-import-not-at-top
  c = synthetic.get_config('large')
  c.data.num_clients = num_clients
  c.compute.compilation_cache_dir = cache
  devices.configure(settings.for_compute(c))
  tick = time.perf_counter()
  data = tasks.load(c.data)
  data_s = time.perf_counter() - tick
  data_bytes = sum(
      a.nbytes for a in (data.train_x, data.train_y, data.local_test_x, data.local_test_y))
  examples = len(data.train_y) + len(data.local_test_y)
  tick = time.perf_counter()
  sim = settings.simulation(c, data, [settings.for_run(c)])
  setup_s = time.perf_counter() - tick
  del data
  server = sim.initial_server

  def timed(step) -> float:
    tick = time.perf_counter()
    jax.block_until_ready(step())
    return time.perf_counter() - tick

  def train(r):
    nonlocal server
    server, _ = sim.run_round(server, r)
    return server

  sim.evaluate(server.params, 1)  # Compiled ahead; this first call warms the sampled program.
  train(1)
  train_s = [timed(lambda r=r: train(r)) for r in range(2, num_rounds + 2)]
  with_eval_s = [
      timed(lambda r=r: (train(r), sim.evaluate(server.params, r)))
      for r in range(num_rounds + 2, 2 * num_rounds + 2)
  ]
  full_s = timed(lambda: sim.evaluate(server.params, 0))
  return dict(clients=num_clients,
              examples=examples,
              data_gb=data_bytes / 1e9,
              client_data=sim.client_data_mode,
              eval_clients=min(c.eval.clients, num_clients),
              data_s=data_s,
              setup_s=setup_s,
              train_round_s=float(np.median(train_s)),
              round_with_eval_s=float(np.median(with_eval_s)),
              full_eval_s=full_s,
              peak_rss_mb=peak_rss_mb())
