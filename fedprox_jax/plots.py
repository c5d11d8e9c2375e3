"""Figures from a sweep's results.csv (the baseline's grid) and from one run's metrics.jsonl."""
import collections
import csv
import json
import pathlib

# Figures made as objects, never through pyplot: files need no display, and the caller's
# matplotlib backend and open figures are left as they are.
from matplotlib.figure import Figure
import numpy as np

LABELS = {
    'train/loss': 'training loss',
    'test/accuracy': 'test accuracy',
    'local_test/accuracy': 'local test accuracy',
    'test/loss': 'test loss',
    'local_test/loss': 'local test loss',
    'train/accuracy': 'training accuracy',
    'train/dissimilarity': 'variance of local gradients',
    'local_test/accuracy_p10': 'clients\' local test accuracy, p10',
    'local_test/accuracy_p50': 'clients\' local test accuracy, median',
    'local_test/accuracy_p90': 'clients\' local test accuracy, p90',
    'local_test/accuracy_std': 'std of clients\' local test accuracy',
    'mu': 'mu'
}


def read_table(path: pathlib.Path) -> list[dict]:
  """results.csv's rows; a table that is not one raises ValueError naming it."""
  with open(path, newline='') as f:
    rows = list(csv.DictReader(f))
  needed = {'run', 'arm', 'stragglers', 'round'}
  if not rows or any(not needed <= row.keys() or None in row.values() for row in rows):
    raise ValueError(f'{path} is not a whole results table (runs, arms, stragglers and rounds '
                     'on every row): rerun the sweep to write it again')
  return rows


def series_of(row: dict) -> str:
  """The line a row belongs to: its arm and arm-grid values (older tables: its arm)."""
  return row.get('series') or row['arm']


def read_records(path: pathlib.Path) -> list[dict]:
  """A run's metrics.jsonl; a line that is not a record raises ValueError naming it."""
  records = []
  for number, line in enumerate(path.read_text().splitlines(), 1):
    try:
      records.append(json.loads(line))
    except ValueError:
      raise ValueError(f'{path} line {number} is not a metrics record (a run stopped while '
                       'writing it? rerun it to resume)') from None
  if not records:
    raise ValueError(f'{path} is empty')
  return records


def x_scale(x: str) -> tuple[float, str]:
  """The divisor and axis label of an x metric: bytes in MB, the round as it is."""
  if x == 'round':
    return 1.0, 'round'
  if 'bytes' in x:
    return 1e6, f'{x.replace("_bytes", "")} (MB)'
  return 1.0, LABELS.get(x, x)


def curves(rows: list[dict], metric: str, x: str = 'round'):
  """{(series, stragglers): (x, mean, std, runs)} of `metric` over the seeds of each setting, per
  round; x is the round, or another metric's mean over the seeds at that round (scaled: x_scale).
  """
  series = collections.defaultdict(lambda: collections.defaultdict(list))
  at = collections.defaultdict(lambda: collections.defaultdict(list))
  scale = x_scale(x)[0]
  for row in rows:
    if row.get(metric, '') != '':
      key = (series_of(row), float(row['stragglers']))
      series[key][int(row['round'])].append(float(row[metric]))
      at[key][int(row['round'])].append(float(row[x]) / scale)
  out = {}
  for key, by_round in series.items():
    rounds = np.array(sorted(by_round))
    values = [by_round[r] for r in rounds]
    xs = np.array([np.mean(at[key][r]) for r in rounds])
    out[key] = (xs, np.array([np.mean(v) for v in values]), np.array([np.std(v) for v in values]),
                len(values[0]))
  return out


def _band(ax, curve, label: str) -> None:
  rounds, mean, std, _ = curve
  line, = ax.plot(rounds, mean, label=label)
  ax.fill_between(rounds, mean - std, mean + std, color=line.get_color(), alpha=0.2)


def _decorate(axes, i: int, j: int, title: str, metric: str, x: str = 'round') -> None:
  """Titles on the top row, x labels on the bottom one, y labels on the left column."""
  ax = axes[i, j]
  if i == 0:
    ax.set_title(title)
  if i == axes.shape[0] - 1:
    ax.set_xlabel(x_scale(x)[1])
  if j == 0:
    ax.set_ylabel(LABELS.get(metric, metric))
  ax.grid(alpha=0.3)


def final_table(rows: list[dict], metric: str = 'test/accuracy', last: int = 10) -> str:
  """Markdown: per (stragglers, arm), mean +- std over seeds of the run's mean of `metric` over
  its last `last` rounds (rounds > final - last)."""
  by_run = collections.defaultdict(list)
  for row in rows:
    if row.get(metric, '') != '':
      by_run[(series_of(row), float(row['stragglers']), row['run'])].append(
          (int(row['round']), float(row[metric])))
  cells = collections.defaultdict(list)
  for (arm, fraction, _), values in by_run.items():
    final = max(r for r, _ in values)
    cells[(fraction, arm)].append(np.mean([v for r, v in values if r > final - last]))
  arms = list(dict.fromkeys(series_of(r) for r in rows))
  lines = [f'| stragglers | {" | ".join(arms)} |', '|---' * (len(arms) + 1) + '|']
  for fraction in sorted({f for f, _ in cells}):
    values = [cells.get((fraction, arm), []) for arm in arms]
    lines.append(f'| {fraction:.0%} | ' +
                 ' | '.join(f'{np.mean(v):.3f} +- {np.std(v):.3f}' if v else '-' for v in values) +
                 ' |')
  return '\n'.join(lines)


def plot_sweep(sweep_dir: str,
               metrics=('train/loss', 'test/accuracy'),
               out_name: str = 'figure',
               dpi: int = 120,
               x: str = 'round') -> list[pathlib.Path]:
  """Columns = straggler fractions, rows = metrics, a line per arm: mean over seeds, +-1 std,
  against the round or another metric `x` (comm/upload_bytes_total: what the uploads cost)."""
  sweep_dir = pathlib.Path(sweep_dir)
  rows = read_table(sweep_dir / 'results.csv')
  metrics = [m for m in metrics if any(r.get(m, '') != '' for r in rows)]
  if not metrics:
    raise ValueError(f'{sweep_dir / "results.csv"} has none of the metrics to plot')
  fractions = sorted({float(r['stragglers']) for r in rows})
  arms = list(dict.fromkeys(series_of(r) for r in rows))
  fig = Figure(figsize=(4.2 * len(fractions), 3.2 * len(metrics)))
  axes = fig.subplots(len(metrics), len(fractions), squeeze=False, sharex=True)
  for i, metric in enumerate(metrics):
    data = curves(rows, metric, x)
    for j, fraction in enumerate(fractions):
      for arm in arms:
        if (arm, fraction) in data:
          runs = data[(arm, fraction)][3]
          _band(axes[i, j], data[(arm, fraction)], f'{arm} ({runs} seeds)' if runs > 1 else arm)
      _decorate(axes, i, j, f'{fraction:.0%} stragglers', metric, x)
  axes[0, 0].legend(fontsize=8)
  fig.suptitle('mean over seeds, band: +-1 std', fontsize=9)
  fig.tight_layout()
  paths = [sweep_dir / f'{out_name}.png', sweep_dir / f'{out_name}.pdf']
  for path in paths:
    fig.savefig(path, dpi=dpi)
  return paths


def _panel(key: str) -> str:
  """Which panel of a run's figure a metric goes to: like goes with like."""
  if key.endswith('loss'):
    return 'loss'
  if key.endswith(('accuracy', '_p10', '_p50', '_p90')):
    return 'accuracy'  # The clients' percentiles are accuracies too.
  return key  # mu, the dissimilarity, the clients' spread: a panel each, on their own scale.


def plot_run(run_dir: str, x: str = 'round') -> pathlib.Path:
  """Every metric of one run's metrics.jsonl against the round (or another metric `x`), losses
  together, accuracies together, mu and the dissimilarity each on its own panel:
  run_dir/metrics.png."""
  run_dir = pathlib.Path(run_dir)
  records = read_records(run_dir / 'metrics.jsonl')
  if x not in records[0]:
    raise ValueError(f'{run_dir / "metrics.jsonl"} has no {x} to plot against (older runs count '
                     'no bytes: plot them against the round)')
  scale, x_label = x_scale(x)
  keys = [k for k in LABELS if k in records[0]]
  panels = list(dict.fromkeys(_panel(k) for k in keys))
  fig = Figure(figsize=(4.6 * len(panels), 3.6))
  axes = fig.subplots(1, len(panels), squeeze=False)
  xs = [r[x] / scale for r in records]
  for key in keys:
    axes[0, panels.index(_panel(key))].plot(xs, [r[key] for r in records], label=LABELS[key])
  for ax, name in zip(axes[0], panels):
    ax.set_xlabel(x_label)
    ax.set_ylabel(LABELS.get(name, name))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(str(run_dir), fontsize=9)
  fig.tight_layout()
  path = run_dir / 'metrics.png'
  fig.savefig(path, dpi=120)
  return path


def plot_datasets(sweep_dirs: dict[str, str],
                  metrics,
                  arms,
                  path: str,
                  log_scale: tuple[str, ...] = ()) -> pathlib.Path:
  """Columns = datasets (one sweep each), rows = metrics, a line per arm: mean over seeds, +-1
  std."""
  tables = {label: read_table(pathlib.Path(d) / 'results.csv') for label, d in sweep_dirs.items()}
  fig = Figure(figsize=(3.6 * len(tables), 2.8 * len(metrics)))
  axes = fig.subplots(len(metrics), len(tables), squeeze=False, sharex=True)
  for j, (label, rows) in enumerate(tables.items()):
    for i, metric in enumerate(metrics):
      data = curves(rows, metric)
      for arm in arms:
        series = [v for (a, _), v in data.items() if a == arm]
        if series:
          _band(axes[i, j], series[0], arm)
      if metric in log_scale:
        axes[i, j].set_yscale('log')
      _decorate(axes, i, j, label, metric)
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path, dpi=80)
  return path
