"""Speed and memory of the default run and the default sweep, with a sequential reference.

    python -m fedprox_jax.benchmark [--out=benchmark.json] [--rounds=100]
    python -m fedprox_jax.benchmark --cohorts=10,100,1000 --only_cohorts   # on an accelerator

Each measurement runs in its own process so that its peak memory is its own; the full runs run
twice, with an empty compilation cache and then with the one the first filled. Printed: data load
(cached), compile, steady-state seconds per round (median, training + evaluation), client steps
per second, the share of executed client steps that are real work, peak RSS and whole-process wall
time; then, in one process on the same data and cohorts, the median training time per round of
the packed program and of a plain Python loop over clients and batches around one jitted SGD step.

With --cohorts, it also times the CNN at each cohort size (clients per round), each in its own
process: training seconds per round (median), client steps per second, the share of real work,
one evaluation of all 69k examples, and the device's name.
"""
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

_OUT = flags.DEFINE_string('out', 'benchmark.json', 'Where the JSON results go.')
_ROUNDS = flags.DEFINE_integer('rounds', 100, 'Rounds of the full runs.')
_REFERENCE_ROUNDS = flags.DEFINE_integer('reference_rounds', 10, 'Rounds timed side by side.')
_SWEEP = flags.DEFINE_string('sweep', 'configs/sweeps/mnist_figure.py', 'Sweep config file.')
_COHORTS = flags.DEFINE_list('cohorts', [], 'Clients per round at which to time the CNN.')
_COHORT_ROUNDS = flags.DEFINE_integer('cohort_rounds', 5, 'Training rounds timed per cohort size.')
_ONLY_COHORTS = flags.DEFINE_bool('only_cohorts', False, 'Time only the CNN cohorts.')
_CHILD = flags.DEFINE_string('child', None, 'Internal: the measurement this process makes.')
_CACHE = flags.DEFINE_string('compilation_cache', '', 'Internal: the compilation cache to use.')


def _configs():
  from configs import mnist_fedprox  # pylint: disable=g-import-not-at-top
  base = mnist_fedprox.get_config()
  base.num_rounds = _ROUNDS.value
  base.compute.compilation_cache_dir = _CACHE.value
  spec = importlib.util.spec_from_file_location('sweep_config', _SWEEP.value)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return base, module.get_config()


def _runs(kind: str):
  """The base config and the runs of the default run ('single') or sweep ('sweep'), with the
  devices configured for them."""
  from fedprox_jax import devices, sweeps  # pylint: disable=g-import-not-at-top
  from fedprox_jax.simulation import RunSpec  # pylint: disable=g-import-not-at-top
  base, sweep = _configs()
  if kind == 'sweep':
    base, named = sweeps.prepare(base, sweep)
    runs = [RunSpec.from_config(c) for _, c in named]
  else:
    runs = [RunSpec.from_config(base)]
  devices.configure(base)
  return base, runs


def _full_run(kind: str) -> dict:
  """The default run or sweep, as its CLI runs it, with timings of its parts."""
  start = time.perf_counter()
  from fedprox_jax import datasets, train  # pylint: disable=g-import-not-at-top
  from fedprox_jax.simulation import Simulation  # pylint: disable=g-import-not-at-top
  from fedprox_jax.writers import RunWriter  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  base, runs = _runs(kind)
  tick = time.perf_counter()
  data = datasets.load_federated(base.data)
  load_s = time.perf_counter() - tick
  tick = time.perf_counter()
  sim = Simulation(base, data, runs)  # Compiles both programs, then moves the data in.
  setup_s = time.perf_counter() - tick
  del data
  writers = [RunWriter(None, base) for _ in runs]
  totals = train.run_rounds(sim, writers, [str(i) for i in range(len(runs))])
  per_round = np.diff([r['time/elapsed_s'] for r in writers[0].records])
  return dict(
      runs=len(runs), rounds=base.num_rounds, devices=jax.device_count(),
      platform=jax.devices()[0].platform, lanes=sim.num_lanes, data_load_s=load_s,
      setup_s=setup_s, round_s_median=float(np.median(per_round)),
      train_round_s_median=float(np.median(totals['round_times'])),
      client_steps_per_s=totals['real_steps'] / sum(r['time/round_s'] for r in
                                                    writers[0].records[1:]),
      real_work_share=totals['real_steps'] / totals['executed_steps'],
      final_test_accuracy=float(np.mean([w.records[-1]['test/accuracy'] for w in writers])),
      process_s_to_here=time.perf_counter() - start,
      tensorflow_imported='tensorflow' in sys.modules,
      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _side_by_side(kind: str) -> dict:
  """Packed program vs the sequential reference on the same cohorts, training only."""
  from fedprox_jax import client, datasets, reference  # pylint: disable=g-import-not-at-top
  from fedprox_jax.simulation import Simulation  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  base, runs = _runs(kind)
  data = datasets.load_federated(base.data)
  sim = Simulation(base, data, runs)
  tx = client.make_optimizer(base.client.learning_rate, base.client.weight_decay)
  ref = reference.make_reference_train_cohort(sim.apply_fn, tx, batch_size=base.client.batch_size)
  x = np.asarray(sim.client_data.x.addressable_data(0))
  y, offsets, sizes = data.train_y, data.train_offsets, data.train_sizes
  params = sim.initial_params
  jax.block_until_ready(sim.run_round(params, 1))
  packed, sequential, steps, diffs = [], [], [], []
  for r in range(1, _REFERENCE_ROUNDS.value + 1):
    tick = time.perf_counter()
    new, stats = jax.block_until_ready(sim.run_round(params, r))
    packed.append(time.perf_counter() - tick)
    cohort = sim.sample(r)
    tick = time.perf_counter()
    want = ref(jax.device_get(params), cohort, np.asarray(sim.mu), x, y, offsets, sizes)
    sequential.append(time.perf_counter() - tick)
    steps.append(int(stats['real_steps']))
    diffs.append(max(float(np.max(np.abs(np.asarray(a) - b)))
                     for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(want))))
    params = new
  return dict(rounds=len(packed), packed_round_s_median=float(np.median(packed)),
              sequential_round_s_median=float(np.median(sequential)),
              speedup=float(np.median(sequential) / np.median(packed)),
              speedup_total=float(np.sum(sequential) / np.sum(packed)),
              real_steps_per_round=float(np.mean(steps)), max_abs_difference=max(diffs))


def _cnn_cohort(clients_per_round: int) -> dict:
  """Training rounds of the CNN with `clients_per_round` clients, and one evaluation."""
  from fedprox_jax import datasets, devices  # pylint: disable=g-import-not-at-top
  from fedprox_jax.simulation import RunSpec, Simulation  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  base, _ = _configs()
  base.model.name = 'cnn'
  base.clients_per_round = clients_per_round
  devices.configure(base)
  data = datasets.load_federated(base.data)
  tick = time.perf_counter()
  sim = Simulation(base, data, [RunSpec.from_config(base)])
  setup_s = time.perf_counter() - tick
  params, times, real, executed = sim.initial_params, [], 0, 0
  for r in range(1, _COHORT_ROUNDS.value + 1):
    tick = time.perf_counter()
    params, stats = jax.block_until_ready(sim.run_round(params, r))
    times.append(time.perf_counter() - tick)
    real, executed = real + int(stats['real_steps']), executed + int(stats['executed_steps'])
  tick = time.perf_counter()
  accuracy = float(sim.evaluate(params)['test/accuracy'][0])
  return dict(clients_per_round=clients_per_round, rounds=len(times),
              device=jax.devices()[0].device_kind, devices=jax.device_count(),
              lanes=sim.num_lanes, setup_s=setup_s, round_s_median=float(np.median(times)),
              client_steps_per_s=real / sum(times), real_work_share=real / executed,
              real_steps_per_round=real / len(times), evaluation_s=time.perf_counter() - tick,
              test_accuracy=accuracy, peak_rss_mb=resource.getrusage(
                  resource.RUSAGE_SELF).ru_maxrss / 1024)


def _print_cohorts(results: dict) -> None:
  rows = [r for name, r in results.items() if name.startswith('cnn:')]
  if not rows:
    return
  print(f'CNN on {rows[0]["device"]} ({rows[0]["devices"]} device(s)), median of '
        f'{rows[0]["rounds"]} training rounds:')
  print(f'{"clients/round":>14s}{"lanes":>7s}{"s/round":>10s}{"client steps/s":>16s}'
        f'{"real work":>11s}{"eval (s)":>10s}')
  for r in rows:
    print(f'{r["clients_per_round"]:>14d}{r["lanes"]:>7d}{r["round_s_median"]:>10.4f}'
          f'{r["client_steps_per_s"]:>16,.0f}{r["real_work_share"]:>11.1%}'
          f'{r["evaluation_s"]:>10.3f}')


def _child(name: str, cache: str) -> dict:
  proc = subprocess.run([sys.executable, '-m', 'fedprox_jax.benchmark', f'--child={name}',
                         f'--rounds={_ROUNDS.value}', f'--sweep={_SWEEP.value}',
                         f'--reference_rounds={_REFERENCE_ROUNDS.value}',
                         f'--cohort_rounds={_COHORT_ROUNDS.value}',
                         f'--compilation_cache={cache}'],
                        capture_output=True, text=True, env=os.environ, check=False)
  if proc.returncode:
    raise RuntimeError(f'{name} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  if _CHILD.value:
    tick = time.perf_counter()
    kind, what = _CHILD.value.split(':')
    if kind == 'cnn':
      result = _cnn_cohort(int(what))
    else:
      result = (_full_run if what == 'full' else _side_by_side)(kind)
    result['child_s'] = time.perf_counter() - tick
    print(json.dumps(result))
    return
  results = {}
  # Each full run twice: with an empty compilation cache, then with the one it filled.
  names = [] if _ONLY_COHORTS.value else ['single:full', 'single:full:warm', 'sweep:full',
                                          'sweep:full:warm', 'single:compare', 'sweep:compare']
  names += [f'cnn:{int(k)}' for k in _COHORTS.value]
  with tempfile.TemporaryDirectory() as cache:
    for name in names:
      tick = time.perf_counter()
      results[name] = _child(name.removesuffix(':warm'), cache)
      results[name]['process_wall_s'] = time.perf_counter() - tick
  if not _ONLY_COHORTS.value:
    _print_table(results)
  _print_cohorts(results)
  with open(_OUT.value, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {_OUT.value}')


def _print_table(results: dict) -> None:
  single, sweep = results['single:full'], results['sweep:full']
  print(f'machine: {os.cpu_count()} CPUs, {single["platform"]}')
  print(f'{"":32s}{"default run":>14s}{"default sweep":>16s}')
  rows = [('runs', 'runs', '{:.0f}'), ('devices x lanes', None, None),
          ('data load, cached (s)', 'data_load_s', '{:.2f}'),
          ('compile + data to device (s)', 'setup_s', '{:.2f}'),
          ('median round, train+eval (s)', 'round_s_median', '{:.4f}'),
          ('median round, train only (s)', 'train_round_s_median', '{:.4f}'),
          ('client steps / s', 'client_steps_per_s', '{:,.0f}'),
          ('real work share', 'real_work_share', '{:.1%}'),
          ('peak RSS (MB)', 'peak_rss_mb', '{:.0f}'),
          ('whole process (s)', 'process_wall_s', '{:.1f}'),
          ('  compiled programs cached:', None, None),
          ('  compile + data to device (s)', 'setup_s', '{:.2f}'),
          ('  peak RSS (MB)', 'peak_rss_mb', '{:.0f}'),
          ('  whole process (s)', 'process_wall_s', '{:.1f}'),
          ('TensorFlow imported', 'tensorflow_imported', '{}'),
          ('final test accuracy (mean)', 'final_test_accuracy', '{:.4f}')]
  for label, key, fmt in rows:
    if label.startswith('  compiled'):
      single, sweep = results['single:full:warm'], results['sweep:full:warm']
      print(label)
      continue
    if key is None:
      cells = [f'{r["devices"]} x {r["lanes"]}' for r in (single, sweep)]
    else:
      cells = [fmt.format(r[key]) for r in (single, sweep)]
    print(f'{label:32s}{cells[0]:>14s}{cells[1]:>16s}')
  for kind in ('single', 'sweep'):
    c = results[f'{kind}:compare']
    print(f'{kind}: training round, median of {c["rounds"]}: packed {c["packed_round_s_median"]:.4f}'
          f' s, sequential reference {c["sequential_round_s_median"]:.3f} s; speed-up '
          f'{c["speedup"]:.1f}x (ratio of medians), {c["speedup_total"]:.1f}x (ratio of totals); '
          f'max |difference| {c["max_abs_difference"]:.1e}')


if __name__ == '__main__':
  app.run(main)
