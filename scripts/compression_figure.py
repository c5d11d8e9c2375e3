"""Accuracy against the bytes uploaded, from sweeps of the compression preset (its sweep config is
fedprox_jax/configs/sweeps/compression.py): a table per sweep (each setting's upload per client,
its accuracy over the last 10 rounds, and the uploaded MB at which it first reaches each target
accuracy) and a figure with one panel per method, accuracy against cumulative uploaded MB.

    python scripts/compression_figure.py docs/compression.png "MNIST=/tmp/compression" \\
        "CNN=/tmp/compression_cnn"

Each curve is the mean over the seeds, at each evaluated round, of the accuracy (drawn as a moving
mean over SMOOTH evaluated rounds where a run evaluates every round: single-client rounds make it
jump) and of the cumulative upload
(comm/upload_bytes_total). "MB to 0.80" is that mean upload at the first round
whose mean accuracy reaches 0.80 ("-": never within the run); "MB to 0.60" likewise (FedAvg
dropping 90% stragglers stays below 0.80).
"""
import collections
import csv
import pathlib
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

TARGETS = (0.60, 0.80)
LAST = 10  # Rounds the accuracy is averaged over, at the end.
SMOOTH = 5
COLORS = {
    'none': 'black',
    'bits8': 'tab:blue',
    'bits4': 'tab:cyan',
    'bits2': 'tab:green',
    'bits1': 'tab:olive',
    'topk0.1': 'tab:red',
    'topk0.01': 'tab:purple'
}


def _label(series: str) -> tuple[str, str, str]:
  """(legend label, color, line style) of a series: 'fedprox_topk_ef-topk0.1' is top 10% + EF."""
  setting = series.split('-', 1)[1] if '-' in series else 'none'
  names = {'none': 'uncompressed', 'topk0.1': 'top 10%', 'topk0.01': 'top 1%'}
  label = names.get(setting,
                    setting.replace('bits', '') + (' bit' if setting == 'bits1' else ' bits'))
  feedback = '_topk_ef' in series
  return label + (' + EF' if feedback else ''), COLORS.get(setting,
                                                           'grey'), '--' if feedback else '-'


def _smooth(values: np.ndarray) -> np.ndarray:
  """A moving mean over SMOOTH evaluations; as they are where there are few (every 10th round)."""
  if len(values) <= 4 * SMOOTH:
    return values
  kernel = np.ones(SMOOTH) / SMOOTH
  padded = np.concatenate([np.full(SMOOTH - 1, values[0]), values])
  return np.convolve(padded, kernel, mode='valid')


def curves(directory: str) -> tuple[str, dict]:
  """(the accuracy's name, {series: (rounds, MB, accuracy [seeds, rounds], bytes per client)})."""
  with open(pathlib.Path(directory) / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  key = 'test/accuracy' if rows[0].get('test/accuracy') else 'local_test/accuracy'
  by = collections.defaultdict(lambda: collections.defaultdict(dict))
  per_client = {}
  for r in rows:
    series = r.get('series') or r['arm']
    by[series][r['run']][int(r['round'])] = (float(r[key]), float(r['comm/upload_bytes_total']))
    if int(r['round']) > 0 and int(r['round/active_clients']):
      per_client[series] = int(r['comm/upload_bytes']) // int(r['round/active_clients'])
  out = {}
  for series, runs in by.items():
    rounds = sorted(set.intersection(*(set(v) for v in runs.values())))
    acc = np.array([[runs[run][t][0] for t in rounds] for run in runs])
    mb = np.array([[runs[run][t][1] for t in rounds] for run in runs]).mean(0) / 1e6
    out[series] = (np.array(rounds), mb, acc, per_client.get(series, 0))
  return key, out


def table(label: str, key: str, results: dict) -> str:
  lines = [
      f'{label} ({key}: mean over the last {LAST} rounds, mean +- std over seeds)', '',
      '| setting | bytes a client uploads | accuracy | ' +
      ' | '.join(f'MB to {t:.2f}' for t in TARGETS) + ' |', '|---|---|---|' + '---|' * len(TARGETS)
  ]
  for series, (rounds, mb, acc, per_client) in results.items():
    tail = acc[:, rounds > rounds[-1] - LAST].mean(1)
    cells = []
    for target in TARGETS:
      reached = np.flatnonzero(acc.mean(0) >= target)
      cells.append(f'{mb[reached[0]]:.2f}' if reached.size else '-')
    lines.append(f'| {series} | {per_client:,} | {tail.mean():.3f} +- {tail.std():.3f} | ' +
                 ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main() -> None:
  if len(sys.argv) < 3 or any('=' not in a for a in sys.argv[2:]):
    sys.exit(__doc__)
  out = pathlib.Path(sys.argv[1])
  panels = []
  for label, directory in (a.split('=', 1) for a in sys.argv[2:]):
    key, results = curves(directory)
    print(table(label, key, results), end='\n\n')
    methods = sorted({s.split('_quantized')[0].split('_topk')[0] for s in results})
    panels += [(f'{label}: {m}', key, {
        s: v for s, v in results.items() if s.split('_quantized')[0].split('_topk')[0] == m
    }) for m in methods]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
  for ax, (title, key, results) in zip(axes[0], panels):
    for series, (_, mb, acc, _) in results.items():
      label, color, style = _label(series)
      ax.plot(mb[1:], _smooth(acc.mean(0))[1:], style, color=color, label=label, lw=1.2)
    for target in TARGETS:
      ax.axhline(target, color='grey', lw=0.5)
    ax.set_xscale('log')
    ax.set_xlabel('uploaded MB, cumulative (log)')
    ax.set_ylabel(key)
    ax.set_ylim(0.3, 0.9)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out, dpi=110)
  print(out)


if __name__ == '__main__':
  main()
