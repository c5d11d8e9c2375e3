"""Speed and memory of the default run, the default sweep and every algorithm.

    python -m fedprox_jax.benchmark [--out=benchmark.json] [--rounds=100]
    python -m fedprox_jax.benchmark --cohorts=10,100,1000 --only_cohorts   # on an accelerator

Each measurement runs in its own process so that its peak memory is its own; the full runs run
twice, with an empty compilation cache and then with the one the first filled. Printed: data load
(cached), compile, steady-state seconds per round (median, training + evaluation), client steps
per second, the share of executed client steps that are real work, peak RSS and whole-process wall
time; then, in one process on the same data and cohorts, the median training time per round of
the packed program and of a plain Python loop over clients and batches around one jitted SGD step;
then every algorithm's training round on the default task, interleaved round by round in one
process, as medians and ratios to FedProx's.

Then the Shakespeare task (--lstm, or --only_lstm): its CPU preset's rounds, the packed program
against the reference, the client step's FLOP/s against a plain jnp.dot, and the paper config's
cost; and the default run over 2 processes against 1 (--processes, or --only_processes); and
configs/synthetic.py:large at 10^3 to 10^6 devices (--populations, or --only_populations): setup,
training rounds with and without evaluation, one full evaluation and peak memory, each in its own
process.

With --cohorts, it also times the CNN at each cohort size (clients per round), each in its own
process: training seconds per round (median), client steps per second, the share of real work,
one evaluation of all 69k examples, and the device's name.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from fedprox_jax.benchmark import report
from fedprox_jax.benchmark import settings
from fedprox_jax.benchmark import two_processes
from fedprox_jax.engine import devices

flags.adopt_module_key_flags(settings)  # --help lists them as this command's.


def _measure(name: str) -> dict:
  from fedprox_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  from fedprox_jax.benchmark import measure_lstm  # pylint: disable=g-import-not-at-top
  kind, what = name.split(':')
  base = measure.base_config(settings.ROUNDS.value, settings.CACHE.value)
  if kind == 'cnn':
    return measure.cnn_cohort(base, int(what), settings.COHORT_ROUNDS.value)
  if kind == 'algorithms':
    return measure.algorithms(base, settings.ALGORITHM_ROUNDS.value)
  if name == 'lstm:task':
    return measure_lstm.lstm_task(settings.CACHE.value, settings.LSTM_ROUNDS.value,
                                  settings.LSTM_REFERENCE_ROUNDS.value)
  if kind == 'population':
    return measure.population(int(what), settings.POPULATION_ROUNDS.value, settings.CACHE.value)
  if name == 'lstm:paper':
    return measure_lstm.lstm_paper_cost(settings.CACHE.value, settings.PAPER_STEPS.value)
  base, runs = measure.runs_of(kind, base, settings.SWEEP.value)
  if what == 'full':
    return measure.full_run(base, runs)
  return measure.side_by_side(base, runs, settings.REFERENCE_ROUNDS.value)


def _child(name: str, cache: str) -> dict:
  """The measurement `name`, made by a child process (its peak memory its own) with every flag
  of this benchmark as this process has it (settings.child_flags)."""
  proc = subprocess.run(
      [sys.executable, '-m', 'fedprox_jax.benchmark', *settings.child_flags(name, cache)],
      capture_output=True,
      text=True,
      env=os.environ,
      check=False)
  if proc.returncode:
    raise RuntimeError(f'{name} failed:\n{proc.stderr[-3000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _timed_child(name: str, cache: str) -> dict:
  tick = time.perf_counter()
  result = _child(name, cache)
  result['process_wall_s'] = time.perf_counter() - tick
  return result


def _spread(repeats: list[dict]) -> dict:
  """The median of every number over the repeats, and its min and max as KEY_min, KEY_max."""
  out = dict(repeats[0])
  for key, value in repeats[0].items():
    values = sorted(r[key] for r in repeats)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and values[0] != values[-1]:
      out[key], out[f'{key}_min'], out[f'{key}_max'] = float(
          np.median(values)), values[0], values[-1]
  return out


def main(argv):
  del argv
  devices.own_process()  # The benchmark's processes are its own: its configs' CPU devices apply.
  if settings.CHILD.value:
    tick = time.perf_counter()
    result = _measure(settings.CHILD.value)
    result['child_s'] = time.perf_counter() - tick
    print(json.dumps(result))
    return
  results = {}
  only = (settings.ONLY_COHORTS.value or settings.ONLY_LSTM.value or
          settings.ONLY_PROCESSES.value or settings.ONLY_POPULATIONS.value or
          settings.ONLY_ALGORITHMS.value)
  if not only:
    # Each full run twice: with an empty compilation cache, then with the one it filled; that
    # pair `repeats` times, each in a fresh cache, for the spread of the machine's noise.
    full_runs = (('single', settings.REPEATS.value), ('sweep', settings.SWEEP_REPEATS.value))
    for kind, repeats in full_runs:
      for name in (f'{kind}:full', f'{kind}:full:warm'):
        results[name] = {'repeats': []}
      for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
          for name in (f'{kind}:full', f'{kind}:full:warm'):
            results[name]['repeats'].append(_timed_child(f'{kind}:full', cache))
      for name in (f'{kind}:full', f'{kind}:full:warm'):
        results[name].update(_spread(results[name]['repeats']))
  names = [] if only else ['single:compare', 'sweep:compare']
  if not only or settings.ONLY_ALGORITHMS.value:
    names.append('algorithms:rounds')
  names += [f'cnn:{int(k)}' for k in settings.COHORTS.value]
  if (settings.LSTM.value and not only) or settings.ONLY_LSTM.value:
    names += ['lstm:task', 'lstm:paper']
  if not only or settings.ONLY_POPULATIONS.value:
    names += [f'population:{int(n)}' for n in settings.POPULATIONS.value]
  with tempfile.TemporaryDirectory() as cache:
    for name in names:
      results[name] = _timed_child(name, cache)
  if not only:
    report.print_table(results)
  if 'algorithms:rounds' in results:
    report.print_algorithms(results['algorithms:rounds'])
  report.print_cohorts(results)
  if 'lstm:task' in results:
    report.print_lstm(results['lstm:task'], results['lstm:paper'])
  report.print_populations(results, settings.POPULATION_ROUNDS.value)
  if (settings.PROCESSES.value and not only) or settings.ONLY_PROCESSES.value:
    results['processes'] = two_processes.measure(settings.ROUNDS.value)
    report.print_processes(results['processes'])
  with open(settings.OUT.value, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {settings.OUT.value}')


if __name__ == '__main__':
  app.run(main)
