"""Accuracy against epsilon from sweeps of the privacy preset (its sweep config is
fedprox_jax/configs/sweeps/privacy.py): a table of the last round's accuracy per arm and epsilon
(mean and std over seeds), and a figure with one panel per sweep.

    python scripts/privacy_figure.py docs/privacy.png "10^4 devices=/tmp/privacy/1e4" \\
        "10^5 devices=/tmp/privacy/1e5" "MNIST, 1,000 clients=/tmp/privacy/mnist"

Each panel draws DP-FedAvg and DP-FedProx against epsilon (the recorded epsilon), with each
method clipped without noise (dotted) and without DP (dashed) as lines across.
"""
import collections
import csv
import pathlib
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

COLORS = {'fedavg': 'tab:blue', 'fedprox': 'tab:orange'}


def final_accuracy(directory: str) -> tuple[str, dict]:
  """(the accuracy's name, {(arm, target epsilon or None): [accuracy per seed]}) of a sweep's last
  round: the central test set's where the task has one, else the clients' local test data."""
  with open(pathlib.Path(directory) / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  last = max(int(r['round']) for r in rows)
  key = 'test/accuracy' if rows[0].get('test/accuracy') else 'local_test/accuracy'
  out = collections.defaultdict(list)
  for r in rows:
    if int(r['round']) == last:
      target = float(r['target_epsilon']) if r.get('target_epsilon') not in (None, '') else 0.0
      out[(r['arm'], target or None)].append(float(r[key]))
  return key, dict(out)


def table(label: str, key: str, results: dict) -> str:
  lines = [
      f'{label} ({key}, last round, mean +- std over seeds)', '',
      '| method | ' + ' | '.join(_columns(results)) + ' |',
      '|---|' + '---|' * len(_columns(results))
  ]
  for method in ('fedavg', 'fedprox'):
    cells = []
    for arm, target in _column_keys(results, method):
      values = np.asarray(results.get((arm, target), []))
      cells.append(f'{values.mean():.3f} +- {values.std():.3f}' if values.size else '')
    lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _targets(results: dict) -> list[float]:
  return sorted({t for (_, t) in results if t is not None})


def _columns(results: dict) -> list[str]:
  return [f'epsilon {t:g}' for t in _targets(results)] + ['clipped, no noise', 'no DP']


def _column_keys(results: dict, method: str) -> list[tuple]:
  return ([(f'dp_{method}', t) for t in _targets(results)] + [(f'clipped_{method}', None),
                                                              (method, None)])


def main() -> None:
  if len(sys.argv) < 3 or any('=' not in a for a in sys.argv[2:]):
    sys.exit(__doc__)
  out = pathlib.Path(sys.argv[1])
  sweeps = dict(a.split('=', 1) for a in sys.argv[2:])
  fig, axes = plt.subplots(1, len(sweeps), figsize=(4.2 * len(sweeps), 3.4), squeeze=False)
  for ax, (label, directory) in zip(axes[0], sweeps.items()):
    key, results = final_accuracy(directory)
    print(table(label, key, results), end='\n\n')
    targets = _targets(results)
    for method, color in COLORS.items():
      means = [np.mean(results[(f'dp_{method}', t)]) for t in targets]
      stds = [np.std(results[(f'dp_{method}', t)]) for t in targets]
      ax.errorbar(targets, means, yerr=stds, marker='o', color=color, label=f'DP-{method}')
      for arm, style in ((f'clipped_{method}', ':'), (method, '--')):
        if (arm, None) in results:
          ax.axhline(np.mean(results[(arm, None)]), color=color, linestyle=style, linewidth=1)
    ax.set_xscale('log', base=2)
    ax.set_xticks(targets, [f'{t:g}' for t in targets])
    ax.set_xlabel('epsilon')
    ax.set_ylabel(key)
    ax.set_title(label)
    ax.grid(alpha=0.3)
  axes[0][0].legend(title='dotted: clipped, no noise; dashed: no DP', fontsize=8, title_fontsize=7)
  fig.tight_layout()
  fig.savefig(out, dpi=120)
  print(f'Wrote {out}')


if __name__ == '__main__':
  main()
