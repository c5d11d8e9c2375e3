"""The benchmark's results as tables and lines on stdout."""
import os

import numpy as np


def print_table(results: dict) -> None:
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
      cells = [cell(r, key, fmt) for r in (single, sweep)]
    print(f'{label:32s}{cells[0]:>24s}{cells[1]:>24s}')
  for kind in ('single', 'sweep'):
    c = results[f'{kind}:compare']
    print(f'{kind}: training round, median of {c["rounds"]}: packed '
          f'{c["packed_round_s_median"]:.4f} s, sequential reference '
          f'{c["sequential_round_s_median"]:.3f} s; speed-up {c["speedup"]:.1f}x (ratio of '
          f'medians), {c["speedup_total"]:.1f}x (ratio of totals); max |difference| '
          f'{c["max_abs_difference"]:.1e}')


def cell(result: dict, key: str, fmt: str) -> str:
  """A figure's median, with its min and max over the repeats when they differ."""
  if f'{key}_min' not in result or result[f'{key}_min'] == result[f'{key}_max']:
    return fmt.format(result[key])
  return (f'{fmt.format(result[key])} ({fmt.format(result[f"{key}_min"])}-'
          f'{fmt.format(result[f"{key}_max"])})')


def print_algorithms(a: dict) -> None:
  for group, title in (('default', 'algorithms on the default task'),
                       ('representation', 'algorithms that contrast representations'),
                       ('privacy',
                        'client-level DP against the same algorithm with uniform weights'),
                       ('compression', 'compressed uploads against the uncompressed round'),
                       ('compression_cnn', 'compressed uploads on the CNN')):
    if group not in a:
      continue
    g = a[group]
    where = ''
    if 'changes' in g:
      where = ' (' + ', '.join(f'{k}={v}' for k, v in g['changes'].items()) + ')'
    print(f'{title}{where}, training round, median of {g["rounds"]} (interleaved):')
    for label, median in g['round_s_median'].items():
      low, high = g['round_s_min_max'][label]
      # DP's rows read against their own algorithm without DP (the row of its name).
      against = label.removeprefix('dp_') if group == 'privacy' else g['reference']
      against = against if against in g['round_s_median'] else g['reference']
      ratio = median / g['round_s_median'][against]
      print(f'  {label:12s}{median * 1e3:8.2f} ms  (min {low * 1e3:.2f}, max {high * 1e3:.2f})  '
            f'{ratio:.2f}x {against}{_paired(g, label, against)}')


def _paired(group: dict, label: str, against: str) -> str:
  """The median and quartiles of the round-by-round ratios: each round's cohort is the same in
  every row, so its ratio is free of the spread between cohorts (rounds of 5 to 35 ms here)."""
  if 'round_s' not in group or label == against:
    return ''
  ratios = np.asarray(group['round_s'][label]) / np.asarray(group['round_s'][against])
  q1, median, q3 = np.percentile(ratios, [25, 50, 75])
  return f'; round by round {median:.2f}x (quartiles {q1:.2f}-{q3:.2f})'


def print_cohorts(results: dict) -> None:
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


def print_populations(results: dict, rounds: int) -> None:
  rows = [r for name, r in results.items() if name.startswith('population:')]
  if not rows:
    return
  print(f'configs/synthetic.py:large by population ({os.cpu_count()} CPUs; medians of '
        f'{rounds} rounds; evaluation of {rows[-1]["eval_clients"]} sampled '
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


def print_lstm(task: dict, paper: dict) -> None:
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


def print_processes(p: dict) -> None:
  print('default run, 2 CPU devices in 1 process vs 1 device in each of 2 processes (medians of '
        '2 runs each):')
  for name, r in p.items():
    print(
        f'  {name.replace("_", " "):14s} training round {r["train_round_s"] * 1e3:6.2f} ms, '
        f'with evaluation {r["round_s"] * 1e3:6.2f} ms, whole process {r["process_wall_s"]:.1f} s')
