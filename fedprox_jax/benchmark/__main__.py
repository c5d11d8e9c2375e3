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

_OUT = flags.DEFINE_string('out', 'benchmark.json', 'Where the JSON results go.')
_ROUNDS = flags.DEFINE_integer('rounds', 100, 'Rounds of the full runs.')
_REFERENCE_ROUNDS = flags.DEFINE_integer('reference_rounds', 10, 'Rounds timed side by side.')
_ALGORITHM_ROUNDS = flags.DEFINE_integer('algorithm_rounds', 30,
                                         'Training rounds timed per algorithm.')
_SWEEP = flags.DEFINE_string('sweep', 'configs/sweeps/mnist_figure.py', 'Sweep config file.')
_COHORTS = flags.DEFINE_list('cohorts', [], 'Clients per round at which to time the CNN.')
_COHORT_ROUNDS = flags.DEFINE_integer('cohort_rounds', 5, 'Training rounds timed per cohort size.')
_ONLY_COHORTS = flags.DEFINE_bool('only_cohorts', False, 'Time only the CNN cohorts.')
_LSTM = flags.DEFINE_bool('lstm', True, 'Time the Shakespeare task (reads its texts).')
_ONLY_LSTM = flags.DEFINE_bool('only_lstm', False, 'Time only the Shakespeare task.')
_LSTM_ROUNDS = flags.DEFINE_integer('lstm_rounds', 5, 'Training rounds of the LSTM timed.')
_LSTM_REFERENCE_ROUNDS = flags.DEFINE_integer('lstm_reference_rounds', 3,
                                              'LSTM rounds timed against the reference.')
_PAPER_STEPS = flags.DEFINE_integer('paper_steps', 20, "Steps of the paper's LSTM timed.")
_PROCESSES = flags.DEFINE_bool('processes', True,
                               'Time the default run over 2 processes against 1 (2 devices each).')
_ONLY_PROCESSES = flags.DEFINE_bool('only_processes', False, 'Time only the 2-process run.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Times the default run is measured (cold, cached).')
_SWEEP_REPEATS = flags.DEFINE_integer('sweep_repeats', 1, 'Times the default sweep is measured.')
_POPULATIONS = flags.DEFINE_list(
    'populations', ['1000', '10000', '100000', '1000000'],
    'Devices of configs/synthetic.py:large timed (--only_populations).')
_POPULATION_ROUNDS = flags.DEFINE_integer('population_rounds', 20,
                                          'Rounds timed per population, with and without eval.')
_ONLY_POPULATIONS = flags.DEFINE_bool('only_populations', False,
                                      'Time only the populations (also run by default).')
_CHILD = flags.DEFINE_string('child', None, 'Internal: the measurement this process makes.')
_CACHE = flags.DEFINE_string('compilation_cache', '', 'Internal: the compilation cache to use.')


def _measure(name: str) -> dict:
  from fedprox_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  kind, what = name.split(':')
  base = measure.base_config(_ROUNDS.value, _CACHE.value)
  if kind == 'cnn':
    return measure.cnn_cohort(base, int(what), _COHORT_ROUNDS.value)
  if kind == 'algorithms':
    return measure.algorithms(base, _ALGORITHM_ROUNDS.value)
  if name == 'lstm:task':
    return measure.lstm_task(_CACHE.value, _LSTM_ROUNDS.value, _LSTM_REFERENCE_ROUNDS.value)
  if kind == 'population':
    return measure.population(int(what), _POPULATION_ROUNDS.value, _CACHE.value)
  if name == 'lstm:paper':
    return measure.lstm_paper_cost(_CACHE.value, _PAPER_STEPS.value)
  base, runs = measure.runs_of(kind, base, _SWEEP.value)
  if what == 'full':
    return measure.full_run(base, runs)
  return measure.side_by_side(base, runs, _REFERENCE_ROUNDS.value)


def _child(name: str, cache: str) -> dict:
  proc = subprocess.run([
      sys.executable, '-m', 'fedprox_jax.benchmark', f'--child={name}', f'--rounds={_ROUNDS.value}',
      f'--sweep={_SWEEP.value}', f'--reference_rounds={_REFERENCE_ROUNDS.value}',
      f'--algorithm_rounds={_ALGORITHM_ROUNDS.value}', f'--cohort_rounds={_COHORT_ROUNDS.value}',
      f'--lstm_rounds={_LSTM_ROUNDS.value}',
      f'--lstm_reference_rounds={_LSTM_REFERENCE_ROUNDS.value}',
      f'--paper_steps={_PAPER_STEPS.value}', f'--population_rounds={_POPULATION_ROUNDS.value}',
      f'--compilation_cache={cache}'
  ],
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
  if _CHILD.value:
    tick = time.perf_counter()
    result = _measure(_CHILD.value)
    result['child_s'] = time.perf_counter() - tick
    print(json.dumps(result))
    return
  results = {}
  only = (_ONLY_COHORTS.value or _ONLY_LSTM.value or _ONLY_PROCESSES.value or
          _ONLY_POPULATIONS.value)
  if not only:
    # Each full run twice: with an empty compilation cache, then with the one it filled; that
    # pair `repeats` times, each in a fresh cache, for the spread of the machine's noise.
    for kind, repeats in (('single', _REPEATS.value), ('sweep', _SWEEP_REPEATS.value)):
      for name in (f'{kind}:full', f'{kind}:full:warm'):
        results[name] = {'repeats': []}
      for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
          for name in (f'{kind}:full', f'{kind}:full:warm'):
            results[name]['repeats'].append(_timed_child(f'{kind}:full', cache))
      for name in (f'{kind}:full', f'{kind}:full:warm'):
        results[name].update(_spread(results[name]['repeats']))
  names = [] if only else ['single:compare', 'sweep:compare', 'algorithms:rounds']
  names += [f'cnn:{int(k)}' for k in _COHORTS.value]
  if (_LSTM.value and not only) or _ONLY_LSTM.value:
    names += ['lstm:task', 'lstm:paper']
  if not only or _ONLY_POPULATIONS.value:
    names += [f'population:{int(n)}' for n in _POPULATIONS.value]
  with tempfile.TemporaryDirectory() as cache:
    for name in names:
      results[name] = _timed_child(name, cache)
  if not only:
    _print_table(results)
    _print_algorithms(results['algorithms:rounds'])
  _print_cohorts(results)
  if 'lstm:task' in results:
    _print_lstm(results['lstm:task'], results['lstm:paper'])
  _print_populations(results)
  if (_PROCESSES.value and not only) or _ONLY_PROCESSES.value:
    results['processes'] = _processes()
    _print_processes(results['processes'])
  with open(_OUT.value, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'wrote {_OUT.value}')


def _print_table(results: dict) -> None:
  single, sweep = results['single:full'], results['sweep:full']
  print(f'machine: {os.cpu_count()} CPUs, {single["platform"]}')
  print(f'repeats: default run {len(single["repeats"])}, sweep {len(sweep["repeats"])}; '
        'median (min - max)')
  print(f'{"":32s}{"default run":>24s}{"default sweep":>24s}')
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
      cells = [_cell(r, key, fmt) for r in (single, sweep)]
    print(f'{label:32s}{cells[0]:>24s}{cells[1]:>24s}')
  for kind in ('single', 'sweep'):
    c = results[f'{kind}:compare']
    print(f'{kind}: training round, median of {c["rounds"]}: packed '
          f'{c["packed_round_s_median"]:.4f} s, sequential reference '
          f'{c["sequential_round_s_median"]:.3f} s; speed-up {c["speedup"]:.1f}x (ratio of '
          f'medians), {c["speedup_total"]:.1f}x (ratio of totals); max |difference| '
          f'{c["max_abs_difference"]:.1e}')


def _cell(result: dict, key: str, fmt: str) -> str:
  """A figure's median, with its min and max over the repeats when they differ."""
  if f'{key}_min' not in result or result[f'{key}_min'] == result[f'{key}_max']:
    return fmt.format(result[key])
  return (f'{fmt.format(result[key])} ({fmt.format(result[f"{key}_min"])}-'
          f'{fmt.format(result[f"{key}_max"])})')


def _print_algorithms(a: dict) -> None:
  print(f'algorithms on the default task, training round, median of {a["rounds"]} (interleaved):')
  for label, median in a['round_s_median'].items():
    low, high = a['round_s_min_max'][label]
    print(f'  {label:12s}{median * 1e3:8.2f} ms  (min {low * 1e3:.2f}, max {high * 1e3:.2f})  '
          f'{a["ratio_to_fedprox"][label]:.2f}x FedProx')


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


def _print_populations(results: dict) -> None:
  rows = [r for name, r in results.items() if name.startswith('population:')]
  if not rows:
    return
  print(f'configs/synthetic.py:large by population ({os.cpu_count()} CPUs; medians of '
        f'{_POPULATION_ROUNDS.value} rounds; evaluation of {rows[-1]["eval_clients"]} sampled '
        'devices, or all when fewer):')
  print('columns: data generated and split (s), compile + place (s), training round (ms), '
        'round + evaluation (ms), every device evaluated (s)')
  print(f'{"devices":>10s}{"examples":>13s}{"data GB":>9s}{"client data":>13s}{"data":>8s}'
        f'{"compile":>9s}{"train":>10s}{"train+eval":>12s}{"all eval":>11s}'
        f'{"peak RSS GB":>13s}')
  for r in rows:
    print(f'{r["clients"]:>10,d}{r["examples"]:>13,d}{r["data_gb"]:>9.2f}{r["client_data"]:>13s}'
          f'{r["data_s"]:>8.1f}{r["setup_s"]:>9.1f}{r["train_round_s"] * 1e3:>10.2f}'
          f'{r["round_with_eval_s"] * 1e3:>12.2f}{r["full_eval_s"]:>11.2f}'
          f'{r["peak_rss_mb"] / 1024:>13.2f}')
  first, last = rows[0], rows[-1]
  print(f'  {last["clients"]:,d} against {first["clients"]:,d} devices: training round '
        f'x{last["train_round_s"] / first["train_round_s"]:.2f}, with evaluation '
        f'x{last["round_with_eval_s"] / first["round_with_eval_s"]:.2f}')


def _print_lstm(task: dict, paper: dict) -> None:
  m = task['model']
  print(f'Shakespeare, preset cpu ({task["clients"]} clients, LSTM {m["layers"]} x {m["hidden"]}, '
        f'{task["devices"]} devices x {task["lanes"]} lanes), median of {task["rounds"]} rounds:')
  print(f'  training round {task["round_s_median"]:.3f} s, {task["client_steps_per_s"]:,.0f} '
        f'client steps/s, real work {task["real_work_share"]:.1%}; evaluation on '
        f'{task["evaluation_clients"]} clients {task["evaluation_s_median"]:.3f} s, on every '
        f'client {task["evaluation_every_client_s_median"]:.3f} s')
  c = task['compare']
  print(f'  packed {c["packed_round_s_median"]:.3f} s vs sequential reference '
        f'{c["sequential_round_s_median"]:.3f} s per training round: {c["speedup"]:.1f}x '
        f'(median of {c["rounds"]}); max |difference| {c["max_abs_difference"]:.1e}')
  print(f'  client step {task["step_flops"] / 1e6:.0f} MFLOP: '
        f'{task["step_flops_per_s_per_device"] / 1e9:.1f} GFLOP/s per device, '
        f'{task["share_of_dot"]:.0%} of a plain jnp.dot of the gate product '
        f'[10, {2 * m["hidden"]}] x [{2 * m["hidden"]}, {4 * m["hidden"]}] '
        f'({task["dot_flops_per_s"] / 1e9:.1f} GFLOP/s)')
  print(
      f"Shakespeare, the paper's config on {paper['device']}: {paper['clients']} clients, "
      f'{paper["train_windows"]:,} training windows; client step (2 x 256, batch 10) '
      f'{paper["step_flops"] / 1e9:.2f} GFLOP in {paper["step_s"] * 1e3:.1f} ms '
      f'({paper["step_flops_per_s"] / 1e9:.0f} GFLOP/s); {paper["expected_steps_per_round"]:,.0f} '
      f'client steps per round expected: '
      f'{paper["expected_steps_per_round"] * paper["step_s"]:,.0f} s per round on one device')


def _round_times(workdir: str) -> tuple[float, float]:
  """Median training round and median round with evaluation (s) of a run's records."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  train = [r['time/round_s'] for r in records if 'time/round_s' in r]
  elapsed = np.diff([r['time/elapsed_s'] for r in records])
  return float(np.median(train)), float(np.median(elapsed))


def _processes() -> dict:
  """The default run in one process with 2 CPU devices, then over 2 processes of 1 device each
  (the same lanes; `python -m fedprox_jax.launch`), alternately, twice each."""
  out = {'one_process': [], 'two_processes': []}
  run = [
      '--config=mnist_fedprox', f'--config.num_rounds={_ROUNDS.value}',
      '--config.compute.compilation_cache_dir='
  ]
  for _ in range(2):
    for name, command in (('one_process', [
        sys.executable, '-m', 'fedprox_jax.run', *run, '--config.compute.cpu_devices=2'
    ]), ('two_processes', [
        sys.executable, '-m', 'fedprox_jax.launch', '--processes=2', '--', *run,
        '--config.compute.cpu_devices=1'
    ])):
      with tempfile.TemporaryDirectory() as workdir:
        tick = time.perf_counter()
        proc = subprocess.run([*command, f'--workdir={workdir}/run'],
                              capture_output=True,
                              text=True,
                              check=False)
        if proc.returncode:
          raise RuntimeError(f'{name} failed:\n{proc.stderr[-3000:]}')
        out[name].append((*_round_times(f'{workdir}/run'), time.perf_counter() - tick))
  return {
      name:
          dict(
              zip(('train_round_s', 'round_s', 'process_wall_s'),
                  np.median(np.array(v), axis=0).tolist())) for name, v in out.items()
  }


def _print_processes(p: dict) -> None:
  print('default run, 2 CPU devices in 1 process vs 1 device in each of 2 processes (medians of '
        '2 runs each):')
  for name, r in p.items():
    print(
        f'  {name.replace("_", " "):14s} training round {r["train_round_s"] * 1e3:6.2f} ms, '
        f'with evaluation {r["round_s"] * 1e3:6.2f} ms, whole process {r["process_wall_s"]:.1f} s')


if __name__ == '__main__':
  app.run(main)
